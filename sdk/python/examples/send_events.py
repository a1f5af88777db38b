"""Sends growth events with growth_sdk and prints the delivery report as JSON.

    PYTHONPATH=sdk/python python sdk/python/examples/send_events.py \
        --app demo --rate 200 --seconds 10          # OTEL_* / GROWTH_* variables apply

`--finance` sends one of each finance event instead (users alice, bob, carol).
Every steady event carries a `seq` property (0, 1, 2, ...). Exit status 0 when
everything tracked was delivered. Used by tests/tests/python_sdk.rs and the
Python benchmark (`--latency` prints track() percentiles too).
"""

import argparse
import json
import sys
import time

from growth_sdk import Tracker, UndeliveredError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app", required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second (0: as fast as possible)")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0, help="events to send (instead of --seconds)")
    parser.add_argument("--finance", action="store_true")
    parser.add_argument("--shutdown-timeout", type=float, default=60.0)
    parser.add_argument("--latency", action="store_true")
    args = parser.parse_args()

    tracker = Tracker(args.app, shutdown_timeout=args.shutdown_timeout)
    latencies = []
    started = time.monotonic()
    if args.finance:
        tracker.expense_logged("alice", 12.5, "groceries", source="messenger")
        tracker.expense_edited("alice", "exp-1")
        tracker.report_requested("bob", "monthly")
        tracker.install_pwa("carol")
        tracker.challenge_started("carol", "no-coffee-week")
        tracker.identify("visitor-7", "dave")
    else:
        users = [f"user-{i:05}@example.com" for i in range(1000)]
        seq = 0
        while True:
            if args.count and seq >= args.count:
                break
            if not args.count and time.monotonic() - started >= args.seconds:
                break
            t0 = time.perf_counter_ns()
            tracker.track("expense_logged", users[seq % len(users)], {"seq": seq, "amount": 12.5, "category": "groceries"}, source="form")
            if args.latency:
                latencies.append(time.perf_counter_ns() - t0)
            seq += 1
            if args.rate:
                ahead = started + seq / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    tracked_in = time.monotonic() - started
    try:
        report = tracker.shutdown()
        ok = True
    except UndeliveredError as error:
        report, ok = error.report, False
    out = dict(vars(report))
    out["tracked_seconds"] = round(tracked_in, 3)
    out["total_seconds"] = round(time.monotonic() - started, 3)
    if latencies:
        latencies.sort()
        pick = lambda p: latencies[min(int(len(latencies) * p), len(latencies) - 1)]
        out["track_ns"] = {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999)}
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
