#!/usr/bin/env python3
"""Where ClickHouse's CPU goes when growth events are stored, per million events.

Run by hand (never in CI) through `scripts/bench-clickhouse-cost`, which starts an
embedded ClickHouse of its own and passes its URL and server pid. Prints Markdown.

The data: 1,024,000 finance-app events shaped like `scripts/bench-ingest`'s
(expense_logged 55 % with amount/category/currency, four other events, 100,000 users,
5 % anonymous, a unique `bench.seq` property, times in the last ten minutes), made by
ClickHouse itself and sent as six Native inserts of 170,667 rows (`--inserts` to change),
as the collector's one-insert-a-second batches arrive, with the collector's insert
settings.

For each schema variant (a fresh database with the migrations, then the variant's
statements): merges stopped, the inserts (CPU-s of the server process around each
insert: the insert into `events` and every view it feeds); then `OPTIMIZE TABLE events
FINAL` (merging the parts of `events` into one, whatever the merge settings would
choose); then merges started one view table at a time until its parts stop changing.
The server's idle CPU is subtracted.
A view's cost is the difference between all views and all but that one.
"""

import argparse
import glob
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROWS = 1_024_000
INSERTS = 6
COLUMNS = "app, event, event_time, user_hash, source, properties, numbers, received_at"
INSERT_SETTINGS = {
    "insert_deduplicate": "1",
    "deduplicate_blocks_in_dependent_materialized_views": "1",
    "optimize_on_insert": "0",
}
VIEWS = [
    "event_counts_mv",
    "user_quarter_hours_mv",
    "first_seen_changes_mv",
    "first_seen_latest_mv",
    "layer_changes_activity_mv",
    "layer_changes_first_seen_mv",
]

GENERATE = """
INSERT INTO bench_src.src
WITH
    cityHash64(number, 1) % 100 AS e,
    multiIf(e < 55, 'expense_logged', e < 70, 'expense_edited', e < 85, 'report_requested',
            e < 95, 'challenge_started', 'pwa_installed') AS ev,
    cityHash64(number, 2) % 100000 AS uid,
    (50 + cityHash64(number, 3) % 50000) / 100.0 AS amount,
    leftPad(toString(number), 10, '0') AS seqtxt,
    cityHash64(number, 4) AS r
SELECT
    'finbrain', ev,
    toDateTime64(now64(3) - toIntervalMillisecond(cityHash64(number, 5) % 600000), 3, 'UTC'),
    if(ev = 'pwa_installed', '',
       lower(hex(SHA256(concat('key', 'tg-', toString(184000000 + uid * 7919 % 90000000)))))),
    ['messenger', 'messenger', 'form', 'pwa'][1 + r % 4],
    multiIf(
        ev IN ('expense_logged', 'expense_edited'),
            map('amount', toString(amount),
                'category', ['groceries', 'transport', 'eating_out', 'rent', 'utilities',
                             'health', 'entertainment', 'other'][1 + intDiv(r, 4) % 8],
                'currency', ['EUR', 'EUR', 'USD', 'GBP'][1 + intDiv(r, 32) % 4], 'bench.seq', seqtxt),
        ev = 'report_requested',
            map('report_type', ['monthly', 'weekly', 'by_category'][1 + intDiv(r, 4) % 3], 'bench.seq', seqtxt),
        ev = 'challenge_started',
            map('challenge', ['no_takeaway_week', 'save_100', 'coffee_at_home'][1 + intDiv(r, 4) % 3], 'bench.seq', seqtxt),
        map('platform', ['android', 'ios', 'desktop'][1 + intDiv(r, 4) % 3], 'bench.seq', seqtxt)),
    if(ev IN ('expense_logged', 'expense_edited'), map('amount', amount), map()),
    now64(3) + toIntervalMillisecond(intDiv(number, 200)),
    number
FROM numbers({rows})
"""


class Server:
    def __init__(self, url, pid):
        self.url = url.rstrip("/")
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def query(self, sql, database=None, settings=None, data=None):
        params = dict(settings or {})
        if database:
            params["database"] = database
        if data is not None:
            params["query"] = sql
            body = data
        else:
            body = sql.encode()
        request = urllib.request.Request(
            self.url + "/?" + urllib.parse.urlencode(params), data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"ClickHouse refused {sql[:120]!r}: {e.read().decode()[:1000]}")

    def text(self, sql, **kw):
        return self.query(sql + " FORMAT TSV", **kw).decode().strip()

    def cpu(self):
        """utime + stime of the server process, seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def merged_rows(self):
        return int(self.text("SELECT sum(value) FROM system.events WHERE event = 'MergedRows'") or 0)


def statements(sql):
    """A migration file's statements: each ends with `;` at the end of a line."""
    out, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current))
            current = []
    out.append("\n".join(current))
    code = [s.strip().rstrip(";") for s in out]
    return [s for s in code if any(l.strip() and not l.strip().startswith("--") for l in s.splitlines())]


def make_batches(server, keys_type):
    server.query("CREATE DATABASE IF NOT EXISTS bench_src")
    server.query("DROP TABLE IF EXISTS bench_src.src SYNC")
    server.query(
        """CREATE TABLE bench_src.src (app LowCardinality(String), event LowCardinality(String),
        event_time DateTime64(3, 'UTC'), user_hash String, source LowCardinality(String),
        properties Map(String, String), numbers Map(String, Float64),
        received_at DateTime64(3, 'UTC'), seq UInt64) ENGINE = MergeTree ORDER BY seq"""
    )
    server.query(GENERATE.format(rows=ROWS))
    per = -(-ROWS // INSERTS)
    batches = {}
    for keys in keys_type:
        batches[keys] = [
            server.query(
                f"""SELECT app, event, event_time, user_hash, source,
                CAST(properties, 'Map({keys}, String)') AS properties,
                CAST(numbers, 'Map({keys}, Float64)') AS numbers, received_at
                FROM bench_src.src WHERE seq >= {i * per} AND seq < {(i + 1) * per}
                ORDER BY seq FORMAT Native"""
            )
            for i in range(INSERTS)
        ]
    server.query("DROP DATABASE bench_src SYNC")
    return batches


def settle(server, database, table=None, limit=120):
    """Waits until no merge runs in `database` and its active parts stop changing."""
    where = f"database = '{database}'" + (f" AND table = '{table}'" if table else "")
    start, quiet, last = time.time(), 0, None
    while quiet < 4 and time.time() - start < limit:
        time.sleep(0.5)
        merges = server.text(f"SELECT count() FROM system.merges WHERE {where}")
        parts = server.text(f"SELECT count() FROM system.parts WHERE active AND {where}")
        quiet = quiet + 1 if merges == "0" and parts == last else 0
        last = parts


def run_variant(server, name, migrations, extra, batches, idle):
    db = "bench_cost"
    server.query(f"DROP DATABASE IF EXISTS {db} SYNC")
    server.query(f"CREATE DATABASE {db}")
    for path in migrations:
        for s in statements(open(path).read()):
            server.query(s, database=db)
    for s in extra:
        server.query(s, database=db)
    tables = server.text(
        f"SELECT name FROM system.tables WHERE database = '{db}' AND engine LIKE '%MergeTree' ORDER BY name"
    ).split()
    server.query("SYSTEM STOP MERGES")
    insert = 0.0
    for i, body in enumerate(batches):
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=f"bench-clickhouse-cost:{i}")
        before, t0 = server.cpu(), time.time()
        server.query(f"INSERT INTO events ({COLUMNS}) FORMAT Native", database=db, settings=settings, data=body)
        insert += server.cpu() - before - idle * (time.time() - t0)
    rows_written = dict(
        line.split("\t")
        for line in server.text(
            f"SELECT table, sum(rows) FROM system.parts WHERE database = '{db}' AND active GROUP BY table"
        ).splitlines()
    )
    # `events` first, all its parts into one, whatever the merge settings would choose.
    merged, before, t0 = server.merged_rows(), server.cpu(), time.time()
    server.query(f"SYSTEM START MERGES {db}.events")
    server.query("OPTIMIZE TABLE events FINAL", database=db)
    settle(server, db, "events")
    optimize = (server.cpu() - before - idle * (time.time() - t0), server.merged_rows() - merged)
    merges = {}
    for table in (t for t in tables if t != "events"):
        merged, before, t0 = server.merged_rows(), server.cpu(), time.time()
        server.query(f"SYSTEM START MERGES {db}.{table}")
        settle(server, db, table)
        merges[table] = (server.cpu() - before - idle * (time.time() - t0), server.merged_rows() - merged)
    server.query("SYSTEM START MERGES")
    size = server.text(f"SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND table = 'events' AND active")
    server.query(f"DROP DATABASE {db} SYNC")
    return {
        "name": name,
        "insert": insert,
        "rows_written": rows_written,
        "merges": merges,
        "optimize": optimize,
        "events_bytes": int(size or 0),
    }


def main():
    global INSERTS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clickhouse-url", required=True)
    ap.add_argument("--clickhouse-pid", type=int, required=True)
    ap.add_argument("--migrations", default=os.path.join(os.path.dirname(__file__), "..", "schema", "migrations"))
    ap.add_argument("--before", type=int, default=13, help="last migration of the 'before' schema (default 13)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every variant, report the lowest (default 1)")
    ap.add_argument("--no-views-breakdown", action="store_true", help="only before / after / after without views")
    ap.add_argument("--inserts", type=int, default=INSERTS, help=f"inserts the events are split into (default {INSERTS})")
    a = ap.parse_args()
    INSERTS = a.inserts

    server = Server(a.clickhouse_url, a.clickhouse_pid)
    files = sorted(glob.glob(os.path.join(a.migrations, "[0-9][0-9][0-9][0-9]_*.sql")))
    number = lambda p: int(re.match(r"(\d+)_", os.path.basename(p)).group(1))
    before = [p for p in files if number(p) <= a.before]
    print(f"generating {ROWS} events in {INSERTS} Native batches…", file=sys.stderr)
    batches = make_batches(server, ["LowCardinality(String)", "String"])
    before_cpu, t0 = server.cpu(), time.time()
    time.sleep(3)
    idle = (server.cpu() - before_cpu) / (time.time() - t0)

    variants = [
        (f"before (migrations ≤ {a.before:04}, LowCardinality map keys)", before, [], "LowCardinality(String)"),
        ("after (all migrations)", files, [], "String"),
        ("after, no views", files, [f"DROP VIEW {v}" for v in VIEWS], "String"),
    ]
    if not a.no_views_breakdown:
        variants += [(f"after, without {v}", files, [f"DROP VIEW {v}"], "String") for v in VIEWS]
    results = []
    for name, migrations, extra, keys in variants:
        best = None
        for _ in range(a.rounds):
            print(f"{name}…", file=sys.stderr)
            r = run_variant(server, name, migrations, extra, batches[keys], idle)
            best = r if best is None or r["insert"] < best["insert"] else best
        results.append(best)

    m = ROWS / 1e6
    print(f"\nServer idle CPU subtracted: {idle:.3f} CPU-s a second. CPU-s per million events ({ROWS} in {INSERTS} inserts).\n")
    print(f"| schema | inserts (events + views) | `events`: its {INSERTS} parts merged (per M rows merged) | the views' tables: their merges | `events` on disk (MiB) |")
    print("|---|---:|---|---:|---:|")
    for r in results:
        merges = ", ".join(
            f"{t} {c / m:.2f}" for t, (c, rows) in r["merges"].items() if rows > 0
        ) or "none"
        cpu, rows = r["optimize"]
        per_merged = f"{cpu / (rows / 1e6):.2f}" if rows else "–"
        print(f"| {r['name']} | {r['insert'] / m:.2f} | {per_merged} | {merges} | {r['events_bytes'] / 2**20:.1f} |")
    after = results[1]["insert"]
    print("\nWhat each view adds to an insert (after − after without it; a view's cost includes the views fed from its table):\n")
    print("| view | CPU-s per M events | rows it wrote per M events |")
    print("|---|---:|---:|")
    targets = {
        "event_counts_mv": "event_counts",
        "user_quarter_hours_mv": "user_quarter_hours",
        "first_seen_changes_mv": "first_seen_changes",
        "first_seen_latest_mv": "first_seen_latest",
        "layer_changes_activity_mv": "layer_changes",
        "layer_changes_first_seen_mv": "layer_changes",
    }
    for r in results[2:]:
        if r["name"] == "after, no views":
            print(f"| `events` alone | {r['insert'] / m:.2f} | {int(r['rows_written'].get('events', 0)) / m:,.0f} |")
            continue
        view = r["name"].rsplit(" ", 1)[1]
        written = int(results[1]["rows_written"].get(targets[view], 0))
        print(f"| {view} | {(after - r['insert']) / m:.2f} | {written / m:,.0f} |")


if __name__ == "__main__":
    main()
