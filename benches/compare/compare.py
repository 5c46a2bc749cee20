"""remdb side by side with SQLite, DuckDB, LanceDB, usearch and hnswlib, in one run.

Every system gets the same rows and queries: the Arrow IPC files that
`cargo bench --bench remdb -- export DIR` writes (W-ENT entities, W-VEC vectors with the
W-HYB metadata of the same rows, held-out queries). remdb is driven through its front
door for clients: `remdb serve` (release build) over Arrow Flight SQL, with the ADBC
driver, the way a Python application would use it. Every remdb figure therefore includes
a loopback gRPC round trip (two for a statement: GetFlightInfo, then DoGet); the library
figures of the same queries come from the bench binary (`went`, `wvec`, `whyb`).

Run it with `scripts/dev.sh compare` (it installs the pinned packages, builds remdb,
exports the data, then calls this script). Prints Markdown tables on standard output;
`--json FILE` also writes the figures, `--plots DIR` draws them (plots.py).
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

# Quiet Lance's own logging.
os.environ.setdefault("LANCE_LOG", "error")

import duckdb  # noqa: E402
import hnswlib  # noqa: E402
import lancedb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import usearch.index  # noqa: E402
from adbc_driver_flightsql import dbapi as flight_sql  # noqa: E402

K = 10
M, EF_CONSTRUCTION = 16, 128


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def read_arrow(path):
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def percentiles(samples):
    s = np.sort(np.asarray(samples)) * 1e3
    at = lambda q: float(s[int(round((len(s) - 1) * q))])
    return at(0.5), at(0.95), at(0.99)


def timed(fn, items, warmup):
    """Calls fn on each item after `warmup` untimed calls; returns (seconds, results)."""
    for item in items[:warmup]:
        fn(item)
    times, results = [], []
    for item in items:
        t = time.perf_counter()
        results.append(fn(item))
        times.append(time.perf_counter() - t)
    return times, results


def recall(found, truth):
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth))
    return hits / max(1, sum(len(t) for t in truth))


class Remdb:
    """A database directory served by `remdb serve` on loopback, one tenant, one token."""

    def __init__(self, binary, workdir, setup_sql):
        self.binary = binary
        self.path = os.path.join(workdir, "remdb")
        self.run("sql", "--path", self.path, "--tenant", "bench", "--create", "-c", setup_sql)
        self.token = self.run("token", "create", "--path", self.path, "bench").strip()
        self.log = open(os.path.join(workdir, "remdb-serve.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--path", self.path, "--listen", "127.0.0.1:0",
             "--query-timeout", "600"],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=dict(os.environ, REMDB_LOG="warn"),
        )
        line = self.proc.stdout.readline()
        match = re.search(r"on (127\.0\.0\.1:\d+)", line)
        if not match:
            self.proc.kill()
            raise SystemExit(f"remdb serve did not start: {line!r}")
        self.conn = flight_sql.connect(
            f"grpc://{match.group(1)}",
            db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {self.token}"},
        )
        # One cursor for every statement, as an application keeps one: a new ADBC
        # cursor per statement costs more in the driver than a point query (see
        # docs/BENCHMARKS.md).
        self.cur = self.conn.cursor()

    def run(self, *args):
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True,
                              env=dict(os.environ, REMDB_LOG="warn"))
        if proc.returncode != 0:
            raise SystemExit(f"remdb {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def ingest(self, table, data, batch_rows):
        for start in range(0, data.num_rows, batch_rows):
            self.cur.adbc_ingest(table, data.slice(start, batch_rows), mode="append")
        self.conn.commit()

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def query(self, sql, params=None):
        self.cur.execute(sql, params)
        return self.cur.fetch_arrow_table()

    def close(self):
        self.cur.close()
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


# ---------------------------------------------------------------------------------------
# W-ENT: predicate queries.

WENT = [
    ("P1 point", "SELECT * FROM entities WHERE id = '{id}'"),
    ("P2 simple", "SELECT * FROM entities WHERE type = 'person' LIMIT 100"),
    ("P3 JSON", "SELECT * FROM entities WHERE properties->>'role' = 'engineer' LIMIT 100"),
    ("P4 composite",
     "SELECT * FROM entities WHERE type = 'person' AND properties->>'team' IN ('platform','infra') "
     "AND created_at > '2024-01-01' ORDER BY name LIMIT 100"),
    ("P5 count", "SELECT count(*) FROM entities WHERE type = 'person'"),
]


def went_queries(template, n, count):
    return [template.replace("{id}", f"ent-{(i * 7919) % n:07d}") for i in range(count)]


def run_went(args, workdir, binary, table):
    n = table.num_rows
    count = args.went_queries
    results = {}  # (query, system) -> (p50, p95, p99, rows)

    def measure(system, execute, translate=lambda s: s):
        for name, template in WENT:
            qs = [translate(q) for q in went_queries(template, n, count)]
            times, rows = timed(execute, qs, warmup=20)
            p = percentiles(times)
            results[(name, system)] = (*p, rows[0])
            log(f"  {system} {name}: p50 {p[0]:.3f} ms, {rows[0]} rows")

    # remdb: the indexes SQLite gets below (type and id are built in): the JSON paths of
    # P3/P4, name and created_at (CREATE INDEX before the load maintains them).
    log("W-ENT: remdb (Flight SQL)")
    remdb = Remdb(binary, workdir, "CREATE INDEX idx_role ON entities ((properties->>'role')); "
                                   "CREATE INDEX idx_team ON entities ((properties->>'team')); "
                                   "CREATE INDEX idx_name ON entities (name); "
                                   "CREATE INDEX idx_created ON entities (created_at)")
    t = time.perf_counter()
    remdb.ingest("entities", table, 10_000)
    log(f"  loaded {n} entities in {time.perf_counter() - t:.1f}s")

    def remdb_execute(sql):
        return remdb.query(sql).num_rows

    measure("remdb", remdb_execute)
    # The front door's own cost: a statement that reads nothing.
    times, _ = timed(remdb_execute, ["SELECT 1"] * count, warmup=20)
    floor = percentiles(times)
    remdb.close()

    # SQLite: the same indexes (primary key, type, created_at, the two JSON expressions).
    log("W-ENT: SQLite")
    db = sqlite3.connect(os.path.join(workdir, "went.sqlite"))
    db.execute("CREATE TABLE entities (id TEXT PRIMARY KEY, type TEXT, name TEXT, "
               "properties TEXT, created_at TEXT)")
    created = pc.strftime(table["created_at"], format="%Y-%m-%dT%H:%M:%S").to_pylist()
    db.executemany("INSERT INTO entities VALUES (?, ?, ?, ?, ?)",
                   zip(table["id"].to_pylist(), table["type"].to_pylist(),
                       table["name"].to_pylist(), table["properties"].to_pylist(), created))
    for ddl in ["CREATE INDEX e_type ON entities (type)",
                "CREATE INDEX e_created ON entities (created_at)",
                "CREATE INDEX e_name ON entities (name)",
                "CREATE INDEX e_role ON entities (properties->>'role')",
                "CREATE INDEX e_team ON entities (properties->>'team')"]:
        db.execute(ddl)
    db.commit()
    db.execute("ANALYZE")
    for name, template in WENT:
        plan = db.execute("EXPLAIN QUERY PLAN " + went_queries(template, n, 1)[0]).fetchall()
        log(f"  SQLite plan {name}: {'; '.join(r[-1] for r in plan)}")
    measure("SQLite", lambda sql: len(db.execute(sql).fetchall()))
    db.close()

    # DuckDB: a primary key (its ART index serves point lookups); columnar scans otherwise.
    log("W-ENT: DuckDB")
    con = duckdb.connect(os.path.join(workdir, "went.duckdb"))
    con.register("source", table)
    con.execute("CREATE TABLE entities (id VARCHAR PRIMARY KEY, type VARCHAR, name VARCHAR, "
                "properties JSON, created_at TIMESTAMPTZ)")
    con.execute("INSERT INTO entities SELECT id, type, name, properties, created_at FROM source")
    con.unregister("source")
    measure("DuckDB", lambda sql: len(con.execute(sql).fetchall()))
    con.close()

    print(f"\n### W-ENT at {n:,} entities: p50 / p95 ms, {count} queries each, one client\n")
    systems = ["remdb", "SQLite", "DuckDB"]
    print("| query | " + " | ".join(f"{s} p50 / p95" for s in systems)
          + " | remdb / SQLite | remdb / DuckDB |")
    print("|---|" + "---|" * (len(systems) + 2))
    for name, _ in WENT:
        cells = [f"{results[(name, s)][0]:.3f} / {results[(name, s)][1]:.3f}" for s in systems]
        r = results[(name, "remdb")][0]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {r / results[(name, 'SQLite')][0]:.2f} | {r / results[(name, 'DuckDB')][0]:.2f} |")
    print(f"\nremdb's figures include the Flight SQL round trip: `SELECT 1` through the same "
          f"ADBC connection takes {floor[0]:.3f} ms p50 ({floor[1]:.3f} p95). SQLite and DuckDB "
          "run in the Python process. The library's figures for the same queries: "
          "`cargo bench --bench remdb -- went`.")
    rows = {s: [results[(name, s)][3] for name, _ in WENT] for s in systems}
    if len({tuple(v) for v in rows.values()}) != 1:
        print(f"\nRows returned differ between systems: {rows}")
    return [{"query": name, "system": s, "p50_ms": results[(name, s)][0],
             "p95_ms": results[(name, s)][1], "rows": results[(name, s)][3]}
            for name, _ in WENT for s in systems]


# ---------------------------------------------------------------------------------------
# W-VEC and W-HYB: vector search, unfiltered and filtered.

def exact_top_k(data, queries, mask=None):
    """Exact top-10 by inner product (unit vectors: cosine) among rows where mask holds."""
    scores = queries @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    out = []
    for row, (t, o) in enumerate(zip(top, order)):
        ids = t[o]
        out.append([int(i) for i in ids if np.isfinite(scores[row, i])])
    return out


def ids_to_rows(ids):
    return [int(i[1:]) for i in ids]


def vector_arrays(vectors, queries):
    """The W-VEC vectors and queries as 2-d numpy arrays."""
    n = vectors.num_rows
    data = np.asarray(vectors["embedding"].combine_chunks().flatten()).reshape(n, -1)
    qs = np.asarray(queries["embedding"].combine_chunks().flatten()).reshape(queries.num_rows, -1)
    return data, qs


def filter_masks(vectors):
    """The rows each W-HYB filter keeps, by its label."""
    tags = vectors["tags"].to_pylist()
    return {
        "50% language = 'en'": np.asarray(pc.equal(vectors["language"], "en")),
        "10% 'important' in tags": np.array(["important" in t for t in tags]),
        "1% 'urgent' in tags": np.array(["urgent" in t for t in tags]),
        "0.1% source = 's42'": np.asarray(pc.equal(vectors["source"], "s42")),
    }


def run_wvec(args, workdir, binary, vectors, queries):
    n = vectors.num_rows
    data, qs = vector_arrays(vectors, queries)
    qs = qs[: args.vec_queries]
    dims = data.shape[1]
    log(f"W-VEC: exact ground truth of {len(qs)} queries over {n} x {dims}")
    truth = exact_top_k(data, qs)
    meta = filter_masks(vectors)
    results = []  # (system, setting, build s, recall, p50, p95, rows)
    hyb = []  # (filter, system, recall, p50, p95, mean rows)
    hyb_truth = {f: exact_top_k(data, qs[: args.hyb_queries], m) for f, m in meta.items()}

    # remdb over Flight SQL: rows with embeddings ingested in batches of 5,000 (each one
    # atomic write, indexed as it commits); W-HYB's JSON indexes declared before the load.
    log("W-VEC: remdb (Flight SQL)")
    remdb = Remdb(binary, workdir,
                  "CREATE INDEX idx_lang ON resources ((metadata->>'language')); "
                  "CREATE INDEX idx_tags ON resources USING gin ((metadata->'tags')); "
                  "CREATE INDEX idx_source ON resources ((metadata->>'source'))")
    rows = pa.table({
        "id": vectors["id"],
        "uri": pc.binary_join_element_wise("doc://", pc.cast(vectors["row"], pa.string()), ""),
        "content": vectors["id"],
        "metadata": vectors["metadata"],
        "embedding": vectors["embedding"].cast(pa.list_(pa.float32())),
    })
    t = time.perf_counter()
    done = 0
    for batch in rows.to_batches(max_chunksize=5_000):
        remdb.cur.adbc_ingest("resources", pa.Table.from_batches([batch]), mode="append")
        done += batch.num_rows
        if done % 50_000 == 0 or done == n:
            log(f"  remdb ingest {done}/{n} ({done / (time.perf_counter() - t):.0f}/s)")
    remdb.conn.commit()
    ingest = time.perf_counter() - t
    # The HNSW index is built when the first search needs it (from the rows, on 2 threads).
    t = time.perf_counter()
    remdb.query(f"SELECT id FROM vector_similar('resources', $1, {K})", (qs[0].tolist(),))
    index_build = time.perf_counter() - t
    build = ingest + index_build
    log(f"  remdb: {n} rows in {ingest:.1f}s, index built in {index_build:.1f}s, "
        f"server RSS {remdb.rss_mib():.0f} MiB")
    for ef in args.ef:
        sql = f"SELECT id FROM vector_similar('resources', $1, {K}, NULL, {ef})"

        def search(q, sql=sql):
            return ids_to_rows(remdb.query(sql, (q.tolist(),))["id"].to_pylist())

        times, found = timed(search, list(qs), warmup=20)
        p = percentiles(times)
        results.append(("remdb (Flight SQL)", f"ef {ef}", build, recall(found, truth), p[0], p[1]))
    for label, filt in [("50% language = 'en'", "metadata->>'language' = 'en'"),
                        ("10% 'important' in tags", "json_array_contains(metadata, 'tags', 'important')"),
                        ("1% 'urgent' in tags", "json_array_contains(metadata, 'tags', 'urgent')"),
                        ("0.1% source = 's42'", "metadata->>'source' = 's42'")]:
        sql = f"SELECT id FROM vector_similar('resources', $1, {K}) WHERE {filt} LIMIT {K}"

        def search(q, sql=sql):
            return ids_to_rows(remdb.query(sql, (q.tolist(),))["id"].to_pylist())

        times, found = timed(search, list(qs[: args.hyb_queries]), warmup=10)
        p = percentiles(times)
        hyb.append((label, "remdb (Flight SQL)", recall(found, hyb_truth[label]), p[0], p[1],
                    np.mean([len(f) for f in found])))
    remdb.close()

    # usearch at the same parameters, built on 2 threads.
    log("W-VEC: usearch")
    index = usearch.index.Index(ndim=dims, metric="cos", dtype="f32", connectivity=M,
                                expansion_add=EF_CONSTRUCTION)
    t = time.perf_counter()
    index.add(np.arange(n), data, threads=2)
    build = time.perf_counter() - t
    for ef in args.ef:
        index.expansion_search = ef
        times, found = timed(lambda q: index.search(q, K).keys.tolist(), list(qs), warmup=20)
        p = percentiles(times)
        results.append(("usearch (Python)", f"ef {ef}", build, recall(found, truth), p[0], p[1]))
    del index

    # hnswlib at the same parameters.
    log("W-VEC: hnswlib")
    index = hnswlib.Index(space="cosine", dim=dims)
    index.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION, random_seed=1)
    t = time.perf_counter()
    index.add_items(data, np.arange(n), num_threads=2)
    build = time.perf_counter() - t
    index.set_num_threads(1)
    for ef in args.ef:
        index.set_ef(ef)
        times, found = timed(lambda q: index.knn_query(q, k=K)[0][0].tolist(), list(qs), warmup=20)
        p = percentiles(times)
        results.append(("hnswlib", f"ef {ef}", build, recall(found, truth), p[0], p[1]))
    # hnswlib's filtered search calls back into Python for every node it visits.
    for label, mask in meta.items():
        allowed, k = mask, min(K, int(mask.sum()))
        index.set_ef(64)
        times, found = timed(
            lambda q: index.knn_query(q, k=k, filter=lambda i: bool(allowed[i]))[0][0].tolist(),
            list(qs[: args.hyb_queries]), warmup=5)
        p = percentiles(times)
        hyb.append((label, "hnswlib filter callback, ef 64", recall(found, hyb_truth[label]),
                    p[0], p[1], np.mean([len(f) for f in found])))
    del index

    # LanceDB: IVF_HNSW_SQ (its HNSW index), and its filtered search with prefiltering.
    log("W-VEC: LanceDB")
    db = lancedb.connect(os.path.join(workdir, "lancedb"))
    lt = db.create_table("vectors", pa.table({
        "row": vectors["row"], "vector": vectors["embedding"],
        "language": vectors["language"], "source": vectors["source"],
        "important": pa.array(meta["10% 'important' in tags"]),
        "urgent": pa.array(meta["1% 'urgent' in tags"]),
    }))
    t = time.perf_counter()
    lt.create_index(metric="cosine", index_type="IVF_HNSW_SQ", m=M, ef_construction=EF_CONSTRUCTION)
    build = time.perf_counter() - t
    for ef in args.ef:
        def search(q, ef=ef):
            return lt.search(q).metric("cosine").ef(ef).limit(K).select(["row", "_distance"]).to_arrow()[
                "row"].to_pylist()
        times, found = timed(search, list(qs), warmup=20)
        p = percentiles(times)
        results.append(("LanceDB IVF_HNSW_SQ", f"ef {ef}", build, recall(found, truth), p[0], p[1]))
    for label, where in [("50% language = 'en'", "language = 'en'"),
                         ("10% 'important' in tags", "important"),
                         ("1% 'urgent' in tags", "urgent"),
                         ("0.1% source = 's42'", "source = 's42'")]:
        def search(q, where=where):
            return lt.search(q).metric("cosine").ef(64).where(where, prefilter=True).limit(
                K).select(["row", "_distance"]).to_arrow()["row"].to_pylist()
        times, found = timed(search, list(qs[: args.hyb_queries]), warmup=5)
        p = percentiles(times)
        hyb.append((label, "LanceDB prefilter, ef 64", recall(found, hyb_truth[label]), p[0], p[1],
                    np.mean([len(f) for f in found])))

    # Exact search with numpy (one query at a time, BLAS): the floor any index must beat.
    times, found = timed(lambda q: np.argpartition(-(data @ q), K)[:K].tolist(), list(qs[:100]),
                         warmup=5)
    p = percentiles(times)
    results.append(("exact, numpy", "-", 0.0, recall(found, truth[:100]), p[0], p[1]))

    print(f"\n### W-VEC at {n:,} x {dims}, cosine, M {M}, ef_construction {EF_CONSTRUCTION}: "
          f"{len(qs)} queries, one client\n")
    print("| system | ef | build s | recall@10 | p50 ms | p95 ms | p50 / remdb's |")
    print("|---|---|---|---|---|---|---|")
    remdb_p50 = {s: p50 for (sys_, s, _, _, p50, _) in results if sys_.startswith("remdb")}
    for system, setting, build, rec, p50, p95 in results:
        ratio = p50 / remdb_p50[setting] if setting in remdb_p50 else float("nan")
        print(f"| {system} | {setting} | {build:.1f} | {rec:.4f} | {p50:.3f} | {p95:.3f} | {ratio:.2f} |")

    print(f"\n### W-HYB at {n:,} x {dims}: top-10 with one filter, {args.hyb_queries} queries\n")
    print("| filter | system | recall@10 | p50 ms | p95 ms | mean rows |")
    print("|---|---|---|---|---|---|")
    for label, system, rec, p50, p95, mean_rows in hyb:
        print(f"| {label} | {system} | {rec:.4f} | {p50:.3f} | {p95:.3f} | {mean_rows:.1f} |")
    return ([{"system": system, "setting": setting, "build_s": build, "recall": rec,
              "p50_ms": p50, "p95_ms": p95} for system, setting, build, rec, p50, p95 in results],
            [{"filter": label, "system": system, "recall": rec, "p50_ms": p50, "p95_ms": p95,
              "mean_rows": float(mean_rows)} for label, system, rec, p50, p95, mean_rows in hyb])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="directory written by `export`")
    parser.add_argument("--remdb", required=True, help="the remdb binary (release build)")
    parser.add_argument("--went-queries", type=int, default=300)
    parser.add_argument("--vec-queries", type=int, default=1000)
    parser.add_argument("--hyb-queries", type=int, default=200)
    parser.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128])
    parser.add_argument("--only", choices=["went", "wvec"], default=None)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--plots", help="draw the plots (plots.py) as SVG files into this directory")
    parser.add_argument("--tenants", help="the Markdown output of `cargo bench --bench remdb -- "
                                          "layouts` to draw tenants against memory from")
    args = parser.parse_args()

    machine = (f"{os.cpu_count()} cores; "
               f"duckdb {duckdb.__version__}, lancedb {lancedb.__version__}, "
               f"sqlite {sqlite3.sqlite_version}, hnswlib, usearch {usearch.__version__}, "
               f"numpy {np.__version__}, pyarrow {pa.__version__}")
    print(f"\nMachine: {machine}")
    report = {"machine": machine}
    with tempfile.TemporaryDirectory(prefix="remdb-compare-") as workdir:
        if args.only in (None, "went"):
            report["went"] = run_went(args, workdir, args.remdb,
                                      read_arrow(os.path.join(args.data, "entities.arrow")))
        if args.only in (None, "wvec"):
            report["wvec"], report["whyb"] = run_wvec(
                args, workdir, args.remdb,
                read_arrow(os.path.join(args.data, "vectors.arrow")),
                read_arrow(os.path.join(args.data, "queries.arrow")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.plots:
        import plots

        tenants = plots.read_layouts(args.tenants) if args.tenants else None
        for path in plots.draw(report, args.plots, tenants):
            log(f"wrote {path}")


if __name__ == "__main__":
    main()
