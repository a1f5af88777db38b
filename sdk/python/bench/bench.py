"""The Python package's benchmark, against the real collector on a real ClickHouse.

Starts growth-collector itself (a database of its own, a spool in a temp dir),
tracks realistic events in this process (HMAC key set; `expense_logged` with a
user id, three properties and a `seq` number) and counts what ClickHouse stored
(`uniqExact(seq)`). Prints a Markdown table with the load average beside it.

    scripts/clickhouse start                       # or any ClickHouse
    cargo build --release -p growth-collector
    .venv/bin/python sdk/python/bench/bench.py --collector target/release/growth-collector \\
        --clickhouse-url http://127.0.0.1:8123
    # shorter: --scenarios latency,burst --latency-calls 5000 --burst 20000

Scenarios (comma list in --scenarios):
  latency    `track` p50/p99/p99.9 on the caller's thread at --latency-rate calls/s,
             collector up, down (nothing listens) and hung (a listening socket that
             never answers); dropped must stay 0 (the byte budget holds the events)
  burst      --burst events as fast as one thread can track, with 1 and with 4
             exports in flight: tracked in, acknowledged after, dropped, stored
  sustained  --rate events/s for --sustain-secs: achieved rate, dropped, stored,
             background CPU per event (process CPU minus the caller thread's)
  restart    --restart-rate events/s while the collector is SIGKILLed for
             --restart-secs and started again: lost must be 0
  allocations  memory per `track` (CPython has no count of transient allocations,
             so what it can tell): blocks and bytes held per event while queued
             (collector down), and what is left per event once a tracker on the
             running collector has shut down (a leak would show here)
"""

import argparse
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from growth_sdk import Tracker, UndeliveredError  # noqa: E402

KEY = "bench-hash-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Collector:
    """growth-collector on free ports; kill() is a SIGKILL, start() starts it again."""

    def __init__(self, binary: str, clickhouse_url: str, database: str):
        self.spool = tempfile.mkdtemp(prefix="growth-py-bench-spool-")
        grpc, http, self.admin = free_port(), free_port(), free_port()
        self.endpoints = {"grpc": f"http://127.0.0.1:{grpc}", "http": f"http://127.0.0.1:{http}"}
        self.command = [
            binary,
            "--clickhouse-url", clickhouse_url,
            "--clickhouse-database", database,
            "--otlp-grpc-addr", f"127.0.0.1:{grpc}",
            "--otlp-http-addr", f"127.0.0.1:{http}",
            "--admin-addr", f"127.0.0.1:{self.admin}",
            "--spool-dir", self.spool,
        ]
        self.process = None
        self.start()

    def start(self):
        env = dict(os.environ, GROWTH_USER_HASH_KEY=KEY, RUST_LOG="warn")
        self.process = subprocess.Popen(
            self.command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("the collector did not become ready")
            time.sleep(0.1)

    def kill(self):
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def close(self):
        self.kill()
        shutil.rmtree(self.spool, ignore_errors=True)


class Hung:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        for conn in self.held:
            conn.close()
        self.sock.close()


class Bench:
    def __init__(self, args):
        self.args = args
        self.database = f"py_sdk_bench_{os.getpid()}"
        self.collector = Collector(args.collector, args.clickhouse_url, self.database)
        self.endpoint = self.collector.endpoints["grpc" if args.protocol == "grpc" else "http"]
        self.users = [f"user-{i:05}@example.com" for i in range(10_000)]
        self.rows = []

    def tracker(self, app, endpoint=None, **kwargs):
        return Tracker(
            app,
            endpoint=endpoint or self.endpoint,
            protocol=self.args.protocol,
            user_hash_key=KEY,
            env={},
            shutdown_timeout=kwargs.pop("shutdown_timeout", 120.0),
            **kwargs,
        )

    def track(self, tracker, seq):
        tracker.track(
            "expense_logged",
            self.users[seq % len(self.users)],
            {"seq": seq, "amount": 12.5, "category": "groceries"},
            source="form",
        )

    def paced(self, count, rate, each):
        """Calls each(seq) `count` times at `rate` a second (in 10 ms slices)."""
        started = time.monotonic()
        per_slice = max(int(rate / 100), 1)
        seq = 0
        while seq < count:
            for _ in range(min(per_slice, count - seq)):
                each(seq)
                seq += 1
            ahead = started + seq / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        return time.monotonic() - started

    def stored(self, app):
        query = (
            f"SELECT uniqExact(properties['seq']), count() FROM {self.database}.events "
            "WHERE app = {app:String} FORMAT TSV"
        )
        url = self.args.clickhouse_url.rstrip("/") + "/?" + urllib.parse.urlencode({"query": query, "param_app": app})
        with urllib.request.urlopen(url, timeout=30) as answer:
            distinct, rows = answer.read().decode().split()
        return int(distinct), int(rows)

    def stored_eventually(self, app, expected):
        deadline = time.monotonic() + 60
        while True:
            counts = self.stored(app)
            if counts[0] >= expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.25)

    @staticmethod
    def finish(tracker, timeout=None):
        try:
            return tracker.shutdown(timeout)
        except UndeliveredError as error:
            return error.report

    def add(self, scenario, result):
        self.rows.append((scenario, result))
        print(f"  {scenario}: {result}  (load {load_average()})", file=sys.stderr, flush=True)

    # --- scenarios --------------------------------------------------------------------

    def latency(self):
        hung = Hung()
        states = [
            ("up", self.endpoint),
            ("down", f"http://127.0.0.1:{free_port()}"),
            ("hung", hung.endpoint),
        ]
        for state, endpoint in states:
            tracker = self.tracker(f"py-bench-latency-{state}", endpoint)
            nanos = []

            def each(seq):
                user = self.users[seq % len(self.users)]
                attributes = {"seq": seq, "amount": 12.5, "category": "groceries"}
                started = time.perf_counter_ns()
                tracker.track("expense_logged", user, attributes, source="form")
                nanos.append(time.perf_counter_ns() - started)

            self.paced(self.args.latency_calls, self.args.latency_rate, each)
            dropped = tracker.report().dropped
            self.finish(tracker, 60.0 if state == "up" else 1.0)
            nanos.sort()
            pick = lambda p: nanos[min(int((len(nanos) - 1) * p), len(nanos) - 1)] / 1000  # noqa: E731
            self.add(
                f"Python `track` latency, collector {state} ({self.args.latency_calls} calls at "
                f"{self.args.latency_rate}/s, HMAC key set)",
                f"p50 {pick(0.5):.1f} µs, p99 {pick(0.99):.1f} µs, p99.9 {pick(0.999):.1f} µs, "
                f"max {nanos[-1] / 1e6:.1f} ms; dropped {dropped}",
            )
        hung.close()

    def allocations(self):
        count = self.args.allocation_calls
        for state, endpoint in (("down", f"http://127.0.0.1:{free_port()}"), ("up", self.endpoint)):
            tracker = self.tracker(f"py-bench-alloc-{state}", endpoint)
            self.track(tracker, 0)  # first-call set-up outside the measurement
            gc.collect()
            gc.disable()
            try:
                blocks_before = sys.getallocatedblocks()
                tracemalloc.start()
                for seq in range(1, count + 1):
                    self.track(tracker, seq)
                held_bytes, peak_bytes = tracemalloc.get_traced_memory()
                blocks_held = sys.getallocatedblocks() - blocks_before
                if state == "down":
                    self.finish(tracker, 1.0)
                    tracemalloc.stop()
                    self.add(
                        f"Python memory per `track`, collector down ({count} events held in the queue)",
                        f"{blocks_held / count:.1f} allocated blocks and {held_bytes / count:.0f} bytes "
                        f"held per queued event (tracemalloc peak {peak_bytes / count:.0f} bytes per event)",
                    )
                else:
                    report = self.finish(tracker, 60.0)
                    gc.collect()
                    left_bytes, _ = tracemalloc.get_traced_memory()
                    tracemalloc.stop()
                    left_blocks = sys.getallocatedblocks() - blocks_before
                    self.add(
                        f"Python memory per `track`, collector up ({count} events, then shutdown)",
                        f"while tracking {blocks_held / count:.1f} blocks / {held_bytes / count:.0f} bytes "
                        f"held per event; after shutdown {left_blocks / count:.2f} blocks / "
                        f"{left_bytes / count:.1f} bytes per event left; delivered {report.delivered}",
                    )
            finally:
                gc.enable()

    def burst(self):
        for exports in (1, 4):
            app = f"py-bench-burst-{exports}"
            tracker = self.tracker(app, max_concurrent_exports=exports)
            cpu_before, caller_before = time.process_time(), time.thread_time()
            started = time.monotonic()
            for seq in range(self.args.burst):
                self.track(tracker, seq)
            tracked_in = time.monotonic() - started
            report = self.finish(tracker)
            acked_in = time.monotonic() - started
            background = (time.process_time() - cpu_before) - (time.thread_time() - caller_before)
            distinct, _ = self.stored_eventually(app, self.args.burst)
            self.add(
                f"Python burst of {self.args.burst} events, {exports} export(s) in flight",
                f"tracked in {tracked_in:.1f} s, all acknowledged after {acked_in:.1f} s "
                f"({self.args.burst / acked_in:,.0f} events/s end to end); delivered {report.delivered}, "
                f"dropped {report.dropped}, failed {report.failed}; stored {distinct}; "
                f"background CPU {1e6 * background / self.args.burst:.0f} µs per event",
            )

    def sustained(self):
        app = "py-bench-sustained"
        tracker = self.tracker(app)
        count = int(self.args.rate * self.args.sustain_secs)
        cpu_before, caller_before = time.process_time(), time.thread_time()
        took = self.paced(count, self.args.rate, lambda seq: self.track(tracker, seq))
        flushed_after = time.monotonic()
        try:
            tracker.flush(120.0)
        except UndeliveredError:
            pass
        lag = time.monotonic() - flushed_after
        background = (time.process_time() - cpu_before) - (time.thread_time() - caller_before)
        report = self.finish(tracker)
        distinct, _ = self.stored_eventually(app, count)
        self.add(
            f"Python sustained {self.args.rate:,} events/s for {self.args.sustain_secs} s",
            f"achieved {count / took:,.0f} events/s tracked; delivered {report.delivered}, dropped {report.dropped}, "
            f"failed {report.failed}; last acknowledged {lag:.1f} s after the last track; stored {distinct}; "
            f"background CPU {background:.1f} s = {1e6 * background / count:.0f} µs per event",
        )

    def restart(self):
        app = "py-bench-restart"
        tracker = self.tracker(app)
        total = self.args.restart_secs + 10
        count = int(self.args.restart_rate * total)
        state = {"killed": False, "restarted": False}
        started = time.monotonic()

        def each(seq):
            self.track(tracker, seq)
            at = time.monotonic() - started
            if not state["killed"] and at >= 5:
                self.collector.kill()
                state["killed"] = True
            if state["killed"] and not state["restarted"] and at >= 5 + self.args.restart_secs:
                self.collector.start()
                state["restarted"] = True

        self.paced(count, self.args.restart_rate, each)
        report = self.finish(tracker)
        distinct, rows = self.stored_eventually(app, count)
        self.add(
            f"Python: collector SIGKILLed for {self.args.restart_secs} s under {self.args.restart_rate} events/s "
            f"({count} events)",
            f"delivered {report.delivered}, lost {report.tracked - report.delivered} (dropped {report.dropped}, "
            f"failed {report.failed}), {report.retries} retries; stored {distinct} distinct ({rows} rows: "
            f"{rows - distinct} sent twice)",
        )

    def run(self):
        print(f"load average before: {load_average()}", file=sys.stderr)
        try:
            for scenario in self.args.scenarios.split(","):
                getattr(self, scenario.strip())()
        finally:
            self.collector.close()
        print(f"\nload average {load_average()} (1, 5, 15 min); {self.args.protocol}; Python {sys.version.split()[0]}\n")
        print(f"| scenario ({self.args.protocol}) | result |")
        print("|---|---|")
        for scenario, result in self.rows:
            print(f"| {scenario} | {result} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collector", required=True, help="the growth-collector binary (release build)")
    parser.add_argument("--clickhouse-url", default="http://127.0.0.1:8123")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--scenarios", default="latency,allocations,burst,sustained,restart")
    parser.add_argument("--allocation-calls", type=int, default=20_000)
    parser.add_argument("--latency-calls", type=int, default=20_000)
    parser.add_argument("--latency-rate", type=int, default=2_000)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=2_000, help="events/s of the sustained run")
    parser.add_argument("--sustain-secs", type=int, default=30)
    parser.add_argument("--restart-secs", type=int, default=30)
    parser.add_argument("--restart-rate", type=int, default=200)
    Bench(parser.parse_args()).run()


if __name__ == "__main__":
    main()
