"""The Python package rem_db against the Rust library and LanceDB, in one run.

Same rows and queries for everyone: the Arrow IPC files of `cargo bench --bench remdb --
export DIR` (W-ENT entities, W-VEC vectors with the W-HYB metadata, held-out queries).

- rem_db: W-ENT P1-P4 through the predicate API (the call alone, whose rows are built
  when first read, and the call with every row turned into an object) and through
  `db.sql` with the SQL text and parameters the predicate compiles to; W-VEC through
  `search_similar` and `db.sql`; W-HYB through `Predicate.vector_similar` with filters.
- Rust: the same SQL and parameters, prepared, through the library, on the same database
  directory (`cargo bench --bench remdb -- replay`), once before and once after the
  Python runs. Python reopens the database before it measures, so that both sides read
  the same files (a freshly written tenant reads from memtables, a freshly built HNSW
  graph is laid out differently from a loaded one), and runs its variants of each query
  in turns of 25 consecutive calls each, so that each variant runs in a loop of its own
  (as the replay does) and drift of the machine hits them alike.
- LanceDB from Python on the same data: scalar indexes (BTREE, BITMAP) on the W-ENT
  columns it filters (properties flattened into columns: Lance has no JSON path index),
  IVF_HNSW_SQ for vectors, prefiltered search for W-HYB.

Run it with `scripts/dev.sh bench-python` (it builds the package in release into
.venv-compare, exports the data, then calls this script). Markdown on standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "compare"))

import lancedb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from compare import (  # noqa: E402
    exact_top_k, filter_masks, ids_to_rows, log, percentiles, read_arrow, recall, timed,
    vector_arrays,
)

import rem_db  # noqa: E402
from rem_db import Predicate, Query, REMDatabase  # noqa: E402

K = 10


def json_param(p):
    if isinstance(p, rem_db._rem_db.Timestamp):
        return {"ts": p.micros}
    if isinstance(p, np.ndarray):
        return {"vector": [float(x) for x in p]}
    if isinstance(p, list):
        return {"vector": p}
    return p


def replay(args, path, tenant, statements):
    """The Rust library's figures for the same statements on the same directory."""
    spec = os.path.join(os.path.dirname(path), f"{tenant}-statements.json")
    with open(spec, "w") as f:
        json.dump([{"name": name, "sql": sql,
                    "samples": [[json_param(p) for p in ps] for ps in samples]}
                   for name, sql, samples in statements], f)
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "remdb", "--", "replay", path, tenant, spec],
        capture_output=True, text=True, env=dict(os.environ, REMDB_LOG="warn"))
    if out.returncode != 0:
        raise SystemExit(f"replay failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed_together(fns, items, warmup, block=25):
    """Runs every fn over the items (after `warmup` untimed items each) in blocks of
    `block` consecutive calls, the fns taking turns block by block (and in a rotating
    order), so that each fn runs in a loop of its own calls as the Rust replay does,
    while drift of the machine hits them alike. Returns, per fn, its percentiles and its
    result on the first item."""
    for fn in fns:
        for item in items[:warmup]:
            fn(item)
    times = [[] for _ in fns]
    first = [fn(items[0]) for fn in fns]
    for n, start in enumerate(range(0, len(items), block)):
        chunk = items[start:start + block]
        for j in [(n + k) % len(fns) for k in range(len(fns))]:
            fn = fns[j]
            for item in chunk:
                t = time.perf_counter()
                fn(item)
                times[j].append(time.perf_counter() - t)
    return [(*percentiles(t), f) for t, f in zip(times, first)]


def rust_p50(before, after, name):
    return (before[name]["p50"] + after[name]["p50"]) / 2


def went_queries(n, count):
    ids = [f"ent-{(i * 7919) % n:07d}" for i in range(count)]
    person = Predicate.eq("type", "person")
    p4 = Query().filter(Predicate.and_([
        person, Predicate.in_("team", ["platform", "infra"]),
        Predicate.gt("created_at", datetime(2024, 1, 1))])).order_by("name").limit(100)
    return [
        ("P1 point", [Query().filter(Predicate.eq("id", i)) for i in ids]),
        ("P2 simple", [Query().filter(person).limit(100)] * count),
        ("P3 JSON", [Query().filter(Predicate.eq("role", "engineer")).limit(100)] * count),
        ("P4 composite", [p4] * count),
    ]


def run_went(args, workdir, table):
    n, count = table.num_rows, args.went_queries
    path = os.path.join(workdir, "went")
    db = REMDatabase(tenant_id="went", path=path)
    for name, field in [("idx_role", "role"), ("idx_team", "team"), ("idx_name", "name"),
                        ("idx_created", "created_at")]:
        db.create_index(name, "entities", field)
    t = time.perf_counter()
    for start in range(0, n, 10_000):
        db.insert_arrow("entities", table.slice(start, 10_000))
    log(f"W-ENT: {n} entities loaded in {time.perf_counter() - t:.1f}s")

    statements = [(name, db.to_sql("entities", qs[0])[0],
                   [db.to_sql("entities", q)[1] for q in qs]) for name, qs in went_queries(n, count)]
    db.close()
    before = replay(args, path, "went", statements)

    results = {}
    db = REMDatabase(tenant_id="went", path=path)
    labels = ["predicate API", "predicate API, rows as objects", "db.sql"]
    for (name, queries), (_, sql, samples) in zip(went_queries(n, count), statements):
        items = list(zip(queries, samples))
        measured = timed_together([
            lambda it: len(db.query_entities(it[0])),
            lambda it: len(db.query_entities(it[0]).to_list()),
            lambda it, sql=sql: db.sql(sql, it[1]).num_rows,
        ], items, warmup=20)
        for label, m in zip(labels, measured):
            results[(name, label)] = m
        log(f"  {name}: " + ", ".join(f"{lbl} {results[(name, lbl)][0]:.3f} ms" for lbl in labels))
    db.close()
    after = replay(args, path, "went", statements)

    log("W-ENT: LanceDB")
    ldb = lancedb.connect(os.path.join(workdir, "lancedb-went"))
    props = [json.loads(p) for p in table["properties"].to_pylist()]
    lt = ldb.create_table("entities", pa.table({
        "id": table["id"], "type": table["type"], "name": table["name"],
        "role": [p.get("role") for p in props], "team": [p.get("team") for p in props],
        "created_at": table["created_at"], "properties": table["properties"],
    }))
    for column, kind in [("id", "BTREE"), ("type", "BITMAP"), ("role", "BITMAP"),
                         ("team", "BITMAP"), ("created_at", "BTREE"), ("name", "BTREE")]:
        lt.create_scalar_index(column, index_type=kind)
    ids = [f"ent-{(i * 7919) % n:07d}" for i in range(count)]
    lance = {
        "P1 point": (lambda i: lt.search().where(f"id = '{i}'").limit(1).to_arrow().num_rows, ids),
        "P2 simple": (lambda _: lt.search().where("type = 'person'").limit(100).to_arrow().num_rows,
                      [None] * count),
        "P3 JSON": (lambda _: lt.search().where("role = 'engineer'").limit(100).to_arrow().num_rows,
                    [None] * count),
        # No ORDER BY in Lance's query API: the matching rows, sorted by name, first 100.
        "P4 composite": (lambda _: lt.search().where(
            "type = 'person' AND team IN ('platform', 'infra') AND created_at > "
            "timestamp '2024-01-01 00:00:00'").limit(n).to_arrow().sort_by("name").slice(0, 100)
            .num_rows, [None] * count),
    }
    for name, (fn, items) in lance.items():
        times, rows = timed(fn, items, warmup=5)
        results[(name, "LanceDB")] = (*percentiles(times), rows[0])
        log(f"  LanceDB {name}: {results[(name, 'LanceDB')][0]:.3f} ms")

    print(f"\n### W-ENT at {n:,} entities from Python: p50 / p95 ms, {count} queries each\n")
    print("| query | Rust library, prepared (before / after) | " + " | ".join(labels)
          + " | predicate API - Rust | db.sql - Rust | LanceDB | LanceDB / predicate API |")
    print("|---|" + "---|" * (len(labels) + 5))
    for name, _ in went_queries(n, 1):
        r = rust_p50(before, after, name)
        cells = [f"{results[(name, lbl)][0]:.3f} / {results[(name, lbl)][1]:.3f}" for lbl in labels]
        api_p50 = results[(name, "predicate API")][0]
        sql_p50 = results[(name, "db.sql")][0]
        lance_p50 = results[(name, "LanceDB")][0]
        print(f"| {name} | {before[name]['p50']:.3f} / {after[name]['p50']:.3f} | " + " | ".join(cells)
              + f" | {(api_p50 - r) * 1e3:.0f} us ({(api_p50 / r - 1) * 100:.0f}%)"
              + f" | {(sql_p50 - r) * 1e3:.0f} us ({(sql_p50 / r - 1) * 100:.0f}%)"
              + f" | {lance_p50:.3f} | {lance_p50 / api_p50:.1f} |")
    rows = {lbl: [results[(name, lbl)][3] for name, _ in went_queries(n, 1)]
            for lbl in labels + ["LanceDB"]}
    rows["Rust"] = [after[name]["rows"] for name, _ in went_queries(n, 1)]
    print(f"\nRows returned (P1-P4): {rows}")


def run_vectors(args, workdir, vectors, queries):
    n = vectors.num_rows
    data, qs = vector_arrays(vectors, queries)
    qs = qs[: args.vec_queries].astype(np.float32)
    hq = qs[: args.hyb_queries]
    truth = exact_top_k(data, qs)
    masks = filter_masks(vectors)
    filters = {
        "50% language = 'en'": Predicate.eq("language", "en"),
        "10% 'important' in tags": Predicate.contains("tags", "important"),
        "1% 'urgent' in tags": Predicate.contains("tags", "urgent"),
        "0.1% source = 's42'": Predicate.eq("source", "s42"),
    }
    hyb_truth = {f: exact_top_k(data, hq, m) for f, m in masks.items()}

    path = os.path.join(workdir, "vectors")
    db = REMDatabase(tenant_id="vectors", path=path)
    db.create_index("idx_lang", "resources", "language")
    db.create_index("idx_tags", "resources", "tags", kind="list")
    db.create_index("idx_source", "resources", "source")
    rows = pa.table({
        "id": vectors["id"], "content": vectors["id"], "metadata": vectors["metadata"],
        "embedding": vectors["embedding"].cast(pa.list_(pa.float32())),
    })
    t = time.perf_counter()
    for batch in rows.to_batches(max_chunksize=5_000):
        db.insert_arrow("resources", pa.Table.from_batches([batch]))
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    db.search_similar(qs[0], top_k=K)
    log(f"W-VEC: {n} rows in {ingest:.1f}s, index built in {time.perf_counter() - t:.1f}s")

    sql = f"SELECT id FROM vector_similar('resources', $1, {K})"
    cases = [("W-VEC top-10", None, list(qs), truth)]
    for label, predicate in filters.items():
        cases.append((label, predicate, list(hq), hyb_truth[label]))
    seed_name = "seed: top_k 50, min_score 0.7, en, limit 10"

    def query_of(predicate, q):
        return Query().filter(Predicate.and_([Predicate.vector_similar(query=q, top_k=K), predicate])).limit(K)

    def seed_of(q):
        return Query().filter(Predicate.and_([
            Predicate.vector_similar(query=q, top_k=50, min_score=0.7),
            Predicate.eq("language", "en")])).limit(10)

    statements = [("W-VEC top-10", sql, [[q] for q in qs])]
    for label, predicate, items, _ in cases[1:]:
        compiled = [db.to_sql("resources", query_of(predicate, q)) for q in items]
        statements.append((label, compiled[0][0], [c[1] for c in compiled]))
    compiled = [db.to_sql("resources", seed_of(q)) for q in hq]
    statements.append((seed_name, compiled[0][0], [c[1] for c in compiled]))
    db.close()
    before = replay(args, path, "vectors", statements)

    results, found = {}, {}
    db = REMDatabase(tenant_id="vectors", path=path)
    db.search_similar(qs[0], top_k=K)  # loads the saved index, as the replay did
    for (label, predicate, items, want), (_, sql_, samples) in zip(cases, statements):
        if predicate is None:
            api = ("search_similar", lambda it: [h.id for h in db.search_similar(it[0], top_k=K)])
        else:
            api = ("predicate API",
                   lambda it, p=predicate: [h.id for h in db.query_resources(query_of(p, it[0]))])
        measured = timed_together([
            api[1],
            lambda it, sql_=sql_: db.sql(sql_, it[1]).column("id").to_pylist(),
        ], list(zip(items, samples)), warmup=10)
        for lbl, m in zip([api[0], "db.sql"], measured):
            results[(label, lbl)] = m[:3]
        got = [api[1](it) for it in zip(items, samples)]
        found[(label, api[0])] = recall([ids_to_rows(x) for x in got], want)
    seed_samples = statements[-1][2]
    measured = timed_together([
        lambda it: len(db.query_resources(seed_of(it[0])).to_list()),
        lambda it: db.sql(statements[-1][1], it[1]).num_rows,
    ], list(zip(hq, seed_samples)), warmup=10)
    results[(seed_name, "predicate API")] = measured[0][:3]
    results[(seed_name, "db.sql")] = measured[1][:3]
    db.close()
    after = replay(args, path, "vectors", statements)

    log("W-VEC: LanceDB")
    ldb = lancedb.connect(os.path.join(workdir, "lancedb-vec"))
    lt = ldb.create_table("vectors", pa.table({
        "row": vectors["row"], "vector": vectors["embedding"],
        "language": vectors["language"], "source": vectors["source"],
        "important": pa.array(masks["10% 'important' in tags"]),
        "urgent": pa.array(masks["1% 'urgent' in tags"]),
    }))
    lt.create_index(metric="cosine", index_type="IVF_HNSW_SQ", m=16, ef_construction=128)
    times, f = timed(lambda q: lt.search(q).metric("cosine").ef(64).limit(K).select(["row"])
                     .to_arrow()["row"].to_pylist(), list(qs), warmup=20)
    results[("W-VEC top-10", "LanceDB")] = percentiles(times)
    found[("W-VEC top-10", "LanceDB")] = recall(f, truth)
    for label, where in [("50% language = 'en'", "language = 'en'"),
                         ("10% 'important' in tags", "important"),
                         ("1% 'urgent' in tags", "urgent"),
                         ("0.1% source = 's42'", "source = 's42'")]:
        times, f = timed(lambda q: lt.search(q).metric("cosine").ef(64).where(where, prefilter=True)
                         .limit(K).select(["row"]).to_arrow()["row"].to_pylist(), list(hq), warmup=5)
        results[(label, "LanceDB")] = percentiles(times)
        found[(label, "LanceDB")] = recall(f, hyb_truth[label])

    print(f"\n### W-VEC / W-HYB at {n:,} x {data.shape[1]} from Python: p50 / p95 ms "
          f"({len(qs)} W-VEC queries, {len(hq)} per filter; recall@10 in brackets)\n")
    print("| query | Rust library, prepared (before / after) | predicate API or search_similar | "
          "db.sql | API - Rust | db.sql - Rust | LanceDB |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in statements:
        api = "search_similar" if name == "W-VEC top-10" else "predicate API"

        def cell(key):
            if key not in results:
                return "-"
            p = results[key]
            rec = f" [{found[key]:.3f}]" if key in found else ""
            return f"{p[0]:.3f} / {p[1]:.3f}{rec}"

        r = rust_p50(before, after, name)
        api_p50, sql_p50 = results[(name, api)][0], results[(name, "db.sql")][0]
        print(f"| {name} | {before[name]['p50']:.3f} / {after[name]['p50']:.3f} | "
              f"{cell((name, api))} | {cell((name, 'db.sql'))} | "
              f"{(api_p50 - r) * 1e3:.0f} us ({(api_p50 / r - 1) * 100:.0f}%) | "
              f"{(sql_p50 - r) * 1e3:.0f} us ({(sql_p50 / r - 1) * 100:.0f}%) | "
              f"{cell((name, 'LanceDB'))} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="directory written by `export`")
    parser.add_argument("--went-queries", type=int, default=300)
    parser.add_argument("--vec-queries", type=int, default=1000)
    parser.add_argument("--hyb-queries", type=int, default=200)
    parser.add_argument("--only", choices=["went", "vectors"], default=None)
    args = parser.parse_args()
    print(f"\nMachine: {os.cpu_count()} cores; lancedb {lancedb.__version__}, "
          f"numpy {np.__version__}, pyarrow {pa.__version__}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="rem_db-bench-") as workdir:
        if args.only in (None, "went"):
            run_went(args, workdir, read_arrow(os.path.join(args.data, "entities.arrow")))
        if args.only in (None, "vectors"):
            run_vectors(args, workdir, read_arrow(os.path.join(args.data, "vectors.arrow")),
                        read_arrow(os.path.join(args.data, "queries.arrow")))


if __name__ == "__main__":
    main()
