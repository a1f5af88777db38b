#!/usr/bin/env python3
"""Run a real ClickHouse server in this process, from the chDB wheel.

Started by `scripts/clickhouse start`; not meant to be run by hand (but it can be:
`python scripts/clickhouse_server.py --data-dir DIR --http-port 8123 --tcp-port 9000`).

Why it looks like this (measured with chdb-core 26.9.0):
- chDB embeds clickhouse-local, which can open the server's HTTP and native TCP
  listeners with `SYSTEM START LISTEN HTTP|TCP`. That works only on the one-shot
  module-level `chdb._chdb.query(sql, format, path=DATA_DIR)`; the ports come from
  `config.xml` in the current working directory.
- The listeners live exactly as long as that one query call runs, and a second
  `_chdb.query` call on the same path in the same process fails ("EventNotifier is
  initialized twice"). So START LISTEN and an endless query go into a single
  multi-statement call.
- That call blocks in C++ (with the GIL released), so it runs in a worker thread; the
  main thread waits for SIGTERM/SIGINT and then ends the endless query with
  `KILL QUERY` over our own HTTP port, which makes the call return and the process
  exit cleanly. Data written by clients is on disk already; kill -9 loses nothing
  that was acknowledged.
- With `path=`, errors are not returned in the result object, chDB prints them to
  stderr (our log). If the call returns without us asking, the server failed
  (e.g. the data directory is locked by another instance): exit non-zero.
- The output format of that call becomes the HTTP interface's default format (with
  "Null" every query without FORMAT answered nothing, with "CSV" it answered CSV), so
  it is TabSeparated, the default of a real server.
- There are no users or passwords: listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# How long to wait for the endless query to end after KILL QUERY before giving up.
STOP_GRACE_SECONDS = 10.0

CONFIG_XML = """<clickhouse>
    <!-- Written by scripts/clickhouse_server.py at every start; edits are lost. -->
    <!-- No users or passwords exist in this server: never listen beyond loopback. -->
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
</clickhouse>
"""


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} clickhouse_server[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path, help="ClickHouse data directory")
    parser.add_argument("--http-port", required=True, type=int, help="HTTP interface port")
    parser.add_argument("--tcp-port", required=True, type=int, help="native protocol port")
    return parser.parse_args()


def http_post(port: int, sql: str, timeout: float) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=sql.encode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode(errors="replace")


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as response:
            return response.read().strip() == b"Ok."
    except (OSError, urllib.error.URLError):
        return False


def main() -> int:
    args = parse_args()
    data_dir = args.data_dir.resolve()
    run_dir = data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.xml").write_text(
        CONFIG_XML.format(http_port=args.http_port, tcp_port=args.tcp_port)
    )
    os.chdir(run_dir)

    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}, stopping")
        stop_requested.set()

    # Install before the server starts, so an early SIGTERM still ends it cleanly.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    import chdb
    from chdb import _chdb

    # The marker lets KILL QUERY find exactly our endless query in system.processes.
    marker = f"growth-keepalive-{os.getpid()}-{secrets.token_hex(4)}"
    server_sql = (
        "SYSTEM START LISTEN HTTP; "
        "SYSTEM START LISTEN TCP; "
        f"SELECT sleepEachRow(1) /* {marker} */ FROM system.numbers "
        "SETTINGS max_block_size = 1, max_execution_time = 0 FORMAT Null"
    )
    server_ended = threading.Event()

    def serve() -> None:
        try:
            _chdb.query(server_sql, "TabSeparated", path=str(data_dir))
        except Exception as error:  # chDB raises only for misuse; report whatever it is
            log(f"chdb query raised {type(error).__name__}: {error}")
        finally:
            server_ended.set()

    log(
        f"chdb {chdb.__version__}: starting ClickHouse on http://127.0.0.1:{args.http_port} "
        f"(tcp {args.tcp_port}), data {data_dir}"
    )
    threading.Thread(target=serve, name="clickhouse", daemon=True).start()

    announced_ready = False
    while not stop_requested.is_set():
        if server_ended.is_set():
            log(
                "ClickHouse stopped on its own; see the error above "
                "(port in use? data dir locked by another instance?)"
            )
            return 1
        if not announced_ready and is_ready(args.http_port):
            log(f"ready: http://127.0.0.1:{args.http_port}")
            announced_ready = True
        stop_requested.wait(0.2 if not announced_ready else 1.0)

    if server_ended.is_set():
        return 0
    kill_sql = (
        f"KILL QUERY WHERE query LIKE '%{marker}%' AND query NOT LIKE '%KILL QUERY%' "
        "SYNC FORMAT Null"
    )
    try:
        http_post(args.http_port, kill_sql, timeout=STOP_GRACE_SECONDS)
    except (OSError, urllib.error.URLError) as error:
        # Listeners never came up (or are gone): nothing can end the query politely.
        log(f"KILL QUERY failed ({error}); exiting without a clean shutdown")
        sys.stderr.flush()
        os._exit(1)
    if not server_ended.wait(STOP_GRACE_SECONDS):
        log("ClickHouse did not stop after KILL QUERY; exiting hard")
        sys.stderr.flush()
        os._exit(1)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
