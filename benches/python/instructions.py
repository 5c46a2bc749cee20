"""What the Python binding adds to a query, in instructions (valgrind's callgrind), which
the machine's noise does not move (RocksDB's background threads count too: the database
is opened a few times first, so that flushes and compactions are done before): the same statements through `db.sql`, through the
native call alone (no pyarrow import) and through the library's `replay`, each run under
callgrind once with 1 query and once with N; (total(N) - total(1)) / (N - 1) is one
query's instructions, start-up and the one-time prepare cancelled out.

    .venv-compare/bin/python benches/python/instructions.py [--queries 300]

needs valgrind, the package built (`scripts/dev.sh bench-python` does it) and the bench
binary (`cargo bench --bench remdb --no-run`). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow as pa

CHILD = """
import sys, json
import numpy as np
from rem_db import REMDatabase
spec, path, tenant, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
s = json.load(open(spec))[0]
params = [[np.array(p["vector"], dtype=np.float32) if isinstance(p, dict) else p for p in ps]
          for ps in s["samples"]]
db = REMDatabase(tenant_id=tenant, path=path)
for i in range(n):
    if mode == "db.sql":
        db.sql(s["sql"], params[i % len(params)])
    else:
        db._tenant.sql(s["sql"], params[i % len(params)])
db.close()
"""


def bench_binary():
    out = subprocess.run(["cargo", "bench", "--bench", "remdb", "--no-run",
                          "--message-format=json"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg["target"]["name"] == "remdb" and "bench" in msg["target"]["kind"]:
            return msg["executable"]
    raise SystemExit("no bench binary")


def instructions(cmd):
    with tempfile.NamedTemporaryFile(suffix=".out") as f:
        # A fixed hash seed: Python's start-up then runs the same instructions each time.
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={f.name}",
                              *cmd], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONHASHSEED="0"))
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return int(m.group(1))


def per_query(make_cmd, spec, n):
    def write(k):
        path = f"{spec}.{k}.json"
        s = json.load(open(spec))
        s[0]["samples"] = (s[0]["samples"] * k)[:k]
        json.dump(s, open(path, "w"))
        return path
    one, many = write(1), write(n)
    return (instructions(make_cmd(many, n)) - instructions(make_cmd(one, 1))) / (n - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    from rem_db import Predicate, Query, REMDatabase

    binary = bench_binary()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="rem_db-instructions-") as work:
        path = os.path.join(work, "db")
        db = REMDatabase(tenant_id="t", path=path)
        n = 20_000
        db.insert_arrow("entities", pa.table({
            "id": [f"e{i}" for i in range(n)],
            "type": ["person" if i % 3 else "project" for i in range(n)],
            "name": [f"name {i:05}" for i in range(n)],
            "properties": [json.dumps({"role": ["engineer", "manager"][i % 2]}) for i in range(n)],
        }))
        data = rng.standard_normal((n, 768)).astype(np.float32)
        db.insert_arrow("resources", pa.table({
            "id": [f"r{i}" for i in range(n)], "content": ["x"] * n,
            "metadata": [json.dumps({"language": ["en", "de"][i % 2]}) for i in range(n)],
            "embedding": pa.array(list(data), type=pa.list_(pa.float32())),
        }))
        db.create_index("idx_lang", "resources", "language")
        queries = {
            "P1 point": Query().filter(Predicate.eq("id", "e77")),
            "P2 simple (100 rows)": Query().filter(Predicate.eq("type", "person")).limit(100),
            "vector top-10": Query().filter(Predicate.vector_similar(
                query=rng.standard_normal(768).astype(np.float32), top_k=10)),
            "vector top-10, language = 'en'": Query().filter(Predicate.and_([
                Predicate.vector_similar(query=rng.standard_normal(768).astype(np.float32), top_k=10),
                Predicate.eq("language", "en")])).limit(10),
        }
        specs = {}
        for name, q in queries.items():
            table = "resources" if "vector" in name else "entities"
            sql, params = db.to_sql(table, q)
            spec = os.path.join(work, f"q{len(specs)}.json")
            json.dump([{"name": name, "sql": sql, "samples": [[
                {"vector": [float(x) for x in p]} if isinstance(p, np.ndarray) else p
                for p in params]]}], open(spec, "w"))
            specs[name] = spec
        db.search_similar(data[0], top_k=1)  # builds the index, saved on close
        db.close()
        child = os.path.join(work, "child.py")
        open(child, "w").write(CHILD)
        # RocksDB's background flushes and compactions count too: let the first opens after
        # the load do them, outside the measured runs.
        for spec in specs.values():
            subprocess.run([binary, "replay", path, "t", spec], capture_output=True, check=True)
            subprocess.run([sys.executable, child, spec, path, "t", "native", "1"], check=True)

        print(f"\n### Instructions per query (callgrind, {args.queries} queries, 20,000 rows)\n")
        print("| query | library (replay) | native call | `db.sql` | native / library | `db.sql` / library |")
        print("|---|---|---|---|---|---|")
        for name, spec in specs.items():
            rust = per_query(lambda s, k: [binary, "replay", path, "t", s], spec, args.queries)
            native = per_query(lambda s, k: [sys.executable, child, s, path, "t", "native", str(k)],
                               spec, args.queries)
            sql = per_query(lambda s, k: [sys.executable, child, s, path, "t", "db.sql", str(k)],
                            spec, args.queries)
            print(f"| {name} | {rust / 1e6:.3f} M | {native / 1e6:.3f} M | {sql / 1e6:.3f} M | "
                  f"{native / rust:.3f} | {sql / rust:.3f} |", flush=True)


if __name__ == "__main__":
    main()
