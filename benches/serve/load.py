"""`remdb serve` under load, through ADBC Flight SQL (run by `scripts/dev.sh bench-serve`).

Two figures of the execution model (docs/BENCHMARKS.md):

* fairness: the latency of a point query of one tenant, idle and while another tenant's
  long statements run (a costly filter over a scan, a CREATE INDEX, an UPDATE of every
  row), each on its own connection;
* bounded writes: the peak RSS of the server while an `INSERT ... SELECT` of
  `--rows` rows (about 500 bytes each) runs under `--memory-limit-mib 64`.

Usage: python benches/serve/load.py [--remdb target/release/remdb] [--rows 2000000]
       [--big 200000] [--queries 200]
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(remdb, *args, input=None):
    proc = subprocess.run([remdb, *args], input=input, capture_output=True, text=True,
                          env=dict(os.environ, REMDB_LOG="warn"), check=True)
    return proc.stdout


def serve(remdb, path, *flags):
    proc = subprocess.Popen([remdb, "serve", "--path", path, "--listen", "127.0.0.1:0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, REMDB_LOG="warn"))
    line = proc.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, f"grpc://{match.group(1)}"


def connect(uri, token):
    return flightsql.connect(
        uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def point_latencies(uri, token, n):
    out = []
    with connect(uri, token) as conn, conn.cursor() as cur:
        for _ in range(n):
            started = time.perf_counter()
            cur.execute("SELECT name FROM entities WHERE id = 'only'")
            assert cur.fetchall() == [("Only One",)]
            out.append((time.perf_counter() - started) * 1e3)
    return out


def quantiles(ms):
    ms = sorted(ms)
    return statistics.median(ms), ms[int(len(ms) * 0.95) - 1], ms[-1]


def fairness(remdb, big, queries):
    path = os.path.join(tempfile.mkdtemp(prefix="remdb-serve-"), "db")
    run(remdb, "sql", "--path", path, "--tenant", "big", "--create", "-c",
        "INSERT INTO entities (id, type, name, properties) SELECT 'e' || CAST(value AS TEXT), "
        "'person', 'person number ' || CAST(value AS TEXT), "
        "'{\"n\": ' || CAST(value AS TEXT) || '}' FROM generate_series(1, " + str(big) + ")")
    run(remdb, "sql", "--path", path, "--tenant", "small", "--create", "-c",
        "INSERT INTO entities (id, type, name) VALUES ('only', 'person', 'Only One')")
    big_token = run(remdb, "token", "create", "--path", path, "big", "--label", "bench").strip()
    small_token = run(remdb, "token", "create", "--path", path, "small", "--label", "bench").strip()
    proc, uri = serve(remdb, path, "--query-timeout", "30")
    try:
        point_latencies(uri, small_token, 20)  # warm
        rows = [("idle", point_latencies(uri, small_token, queries))]
        heavy = {
            "a costly filter over a scan (x2)":
                ["SELECT id FROM entities WHERE "
                 "levenshtein(repeat(name, 20), repeat(id, 20)) < 0 LIMIT 5"] * 2,
            "CREATE INDEX": ["CREATE INDEX idx_n ON entities (properties->>'n')"],
            "UPDATE of every row": ["UPDATE entities SET name = name || '.'"],
        }
        for label, statements in heavy.items():
            done = threading.Event()

            def work(sql):
                with connect(uri, big_token) as conn, conn.cursor() as cur:
                    while not done.is_set():
                        cur.execute(sql)
                        try:
                            cur.fetchall()
                        except Exception:
                            pass
                        if sql.startswith("CREATE INDEX"):
                            cur.execute("DROP INDEX idx_n")

            threads = [threading.Thread(target=work, args=(s,)) for s in statements]
            for t in threads:
                t.start()
            time.sleep(0.5)
            rows.append((f"while {label} runs", point_latencies(uri, small_token, queries)))
            done.set()
            for t in threads:
                t.join()
        print("| other tenant's load | p50 ms | p95 ms | max ms |")
        print("|---|---|---|---|")
        for label, ms in rows:
            p50, p95, top = quantiles(ms)
            print(f"| {label} | {p50:.2f} | {p95:.2f} | {top:.2f} |")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def bounded_insert(remdb, rows):
    path = os.path.join(tempfile.mkdtemp(prefix="remdb-serve-"), "db")
    run(remdb, "tenant", "create", "--path", path, "acme")
    token = run(remdb, "token", "create", "--path", path, "acme", "--label", "bench").strip()
    proc, uri = serve(remdb, path, "--query-timeout", "3600", "--memory-limit-mib", "64")
    try:
        before = rss_kib(proc.pid)
        peak = [before]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        with connect(uri, token) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO entities (id, type, name, properties) SELECT "
                "'e' || CAST(value AS TEXT), 'person', 'person number ' || CAST(value AS TEXT), "
                "'{\"text\": \"' || repeat('x', 440) || '\"}' FROM generate_series(1, "
                + str(rows) + ")")
            cur.execute("SELECT count(*) FROM entities")
            (count,), = cur.fetchall()
        took = time.perf_counter() - started
        stop.set()
        sampler.join()
        assert count == rows, count
        print(f"| {rows:,} | {took:.1f} | {before / 1024:.0f} | {peak[0] / 1024:.0f} |")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--remdb", default=os.path.join(ROOT, "target", "release", "remdb"))
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--big", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    fairness(args.remdb, args.big, args.queries)
    print()
    print("| rows inserted | seconds | RSS before MiB | peak RSS MiB |")
    print("|---|---|---|---|")
    bounded_insert(args.remdb, args.rows)


if __name__ == "__main__":
    main()
