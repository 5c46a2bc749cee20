//! Graph walks, lookups, time-ordered moments and the REM verbs, checked against
//! independent answers on generated data: a breadth-first search written here over the
//! generated edge list, `WITH RECURSIVE` over `edges`, and the same query with indexes off.

use std::collections::{BTreeSet, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Direction, Edge, Entity, Moment, QueryOptions};

use super::{fresh, rows};

const NODES: usize = 300;

fn node(i: usize) -> String {
    format!("n{i:03}")
}

/// A random multigraph with three edge types, some cycles and self-contained islands.
fn generated_edges() -> Vec<(String, String, String)> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut edges = BTreeSet::new();
    while edges.len() < 900 {
        let src = rng.random_range(0..NODES);
        // Mostly short hops, so walks of a few steps do not reach everything.
        let dst = (src + rng.random_range(1..12)) % NODES;
        let ty = ["knows", "likes", "cites"][rng.random_range(0..3)];
        edges.insert((node(src), ty.to_string(), node(dst)));
    }
    edges.into_iter().collect()
}

/// Breadth-first search over the edge list: the oracle for `traverse`.
fn bfs(
    edges: &[(String, String, String)],
    start: &str,
    direction: Direction,
    depth: u32,
    types: &[&str],
) -> BTreeSet<(String, u32)> {
    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    for (s, t, d) in edges {
        if !types.is_empty() && !types.contains(&t.as_str()) {
            continue;
        }
        if direction != Direction::In {
            next.entry(s).or_default().push(d);
        }
        if direction != Direction::Out {
            next.entry(d).or_default().push(s);
        }
    }
    let mut seen: HashMap<&str, u32> = HashMap::from([(start, 0)]);
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let d = seen[n];
        if d == depth {
            continue;
        }
        for m in next.get(n).into_iter().flatten() {
            if !seen.contains_key(m) {
                seen.insert(m, d + 1);
                queue.push_back(m);
            }
        }
    }
    seen.into_iter()
        .filter(|(n, _)| *n != start)
        .map(|(n, d)| (n.to_string(), d))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traverse_matches_bfs_and_recursive_sql() {
    let (_dir, _db, t) = fresh("g");
    let edges = generated_edges();
    let mut batch = Batch::new();
    for i in 0..NODES {
        batch = batch.insert(Entity {
            id: node(i),
            entity_type: "node".into(),
            name: node(i),
            ..Default::default()
        });
    }
    for (src, ty, dst) in &edges {
        batch = batch.insert(Edge {
            src: src.clone(),
            dst: dst.clone(),
            edge_type: ty.clone(),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();

    let mut compared = 0;
    for (start, direction, depth, types) in [
        (0, Direction::Out, 1, vec![]),
        (7, Direction::Out, 2, vec![]),
        (13, Direction::Out, 4, vec!["knows"]),
        (99, Direction::In, 3, vec!["likes", "cites"]),
        (150, Direction::Both, 2, vec![]),
        (299, Direction::Out, 6, vec!["cites"]),
    ] {
        let start = node(start);
        let want = bfs(&edges, &start, direction, depth, &types);
        let got: BTreeSet<(String, u32)> = t
            .traverse(&start, direction, depth, &types)
            .unwrap()
            .into_iter()
            .map(|(hop, entity)| {
                assert_eq!(entity.map(|e| e.id), Some(hop.id.clone()));
                assert_eq!(hop.path.len() as u32, hop.depth + 1);
                assert_eq!(hop.path.first(), Some(&start));
                (hop.id, hop.depth)
            })
            .collect();
        assert_eq!(
            got, want,
            "traverse({start}, {direction:?}, {depth}, {types:?})"
        );

        // The same walk in SQL, and as WITH RECURSIVE over edges (out only): the same set.
        let type_arg = if types.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
            format!(", ARRAY[{}]", quoted.join(", "))
        };
        let sql_rows: BTreeSet<String> = rows(
            &t,
            &format!(
                "SELECT id || '@' || depth FROM traverse('{start}', '{}', {depth}{type_arg})",
                direction.name()
            ),
        )
        .await
        .into_iter()
        .collect();
        let want_rows: BTreeSet<String> = want.iter().map(|(n, d)| format!("{n}@{d}")).collect();
        assert_eq!(sql_rows, want_rows);
        if direction == Direction::Out {
            let type_filter = if types.is_empty() {
                String::new()
            } else {
                let quoted: Vec<String> = types.iter().map(|t| format!("'{t}'")).collect();
                format!(" AND edge_type IN ({})", quoted.join(", "))
            };
            let recursive = format!(
                "WITH RECURSIVE walk(id, depth) AS (
                   SELECT dst, 1 FROM edges WHERE src = '{start}'{type_filter}
                   UNION ALL
                   SELECT e.dst, w.depth + 1 FROM edges e JOIN walk w ON e.src = w.id
                   WHERE w.depth < {depth}{}
                 )
                 SELECT DISTINCT id FROM walk WHERE id <> '{start}' ORDER BY id",
                type_filter.replace("edge_type", "e.edge_type")
            );
            let ids: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
            assert_eq!(
                rows(&t, &recursive).await,
                ids,
                "WITH RECURSIVE from {start}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_api_and_verbs() {
    let (_dir, _db, t) = fresh("g");
    t.create_entity(Entity {
        id: "p1".into(),
        entity_type: "person".into(),
        name: "Alice  Smith".into(),
        aliases: vec!["TAP-1234".into()],
        ..Default::default()
    })
    .unwrap();
    let found = t.lookup(&["alice smith", "tap-1234", "nobody"]).unwrap();
    let keys: Vec<&str> = found.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["alice smith", "tap-1234"]);

    // Verbs work in scripts, beside other statements, and with parameters.
    let results = t
        .sql_script("LOOKUP 'ALICE SMITH'; SELECT count(*) FROM entities; TRAVERSE FROM 'p1'")
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].result[0].num_rows(), 1);
    let batches = t
        .sql_with_params(
            "TRAVERSE FROM $1 DEPTH 2",
            &[remdb::Param::Text("p1".into())],
        )
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_ordered_moments_equal_a_sort() {
    let (_dir, db, t) = fresh("m");
    let mut rng = StdRng::seed_from_u64(9);
    let mut batch = Batch::new();
    for i in 0..3000 {
        batch = batch.insert(Moment {
            id: format!("m{i:05}"),
            // Coarse timestamps, so that many moments share one.
            timestamp: 1_700_000_000_000_000 + rng.random_range(0..500) * 3_600_000_000,
            moment_type: ["chat", "meeting", "note"][rng.random_range(0..3)].into(),
            entity_refs: vec![format!("e{}", rng.random_range(0..20))],
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    let unindexed = db
        .tenant_with(
            "m",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();
    for sql in [
        "SELECT timestamp FROM moments ORDER BY timestamp DESC LIMIT 70",
        "SELECT timestamp FROM moments ORDER BY timestamp LIMIT 5000",
        "SELECT timestamp FROM moments WHERE timestamp >= '2023-11-20' AND timestamp < '2023-11-30' ORDER BY timestamp DESC LIMIT 40",
        "SELECT timestamp FROM moments WHERE timestamp > '2023-11-20T04:00:00Z' ORDER BY timestamp LIMIT 300",
        "SELECT timestamp FROM moments WHERE timestamp < '2023-12-01' AND 'e3' = ANY(entity_refs) ORDER BY timestamp DESC LIMIT 25",
        "SELECT count(*) FROM moments WHERE timestamp BETWEEN '2023-11-15' AND '2023-11-25'",
    ] {
        // Only timestamps are compared: moments that tie may come in either order.
        let got = rows(&t, sql).await;
        assert!(!got.is_empty(), "{sql}");
        assert_eq!(got, rows(&unindexed, sql).await, "{sql}");
    }
    // The walk is the plan.
    let plan = rows(
        &t,
        "EXPLAIN SELECT timestamp FROM moments ORDER BY timestamp DESC LIMIT 70",
    )
    .await
    .join("\n");
    assert!(
        plan.contains("moments_timestamp range all, descending, limit=70"),
        "{plan}"
    );
}

/// The text of `EXPLAIN ANALYZE sql`, lines joined.
async fn analyze(t: &remdb::Tenant, sql: &str) -> String {
    rows(t, &format!("EXPLAIN ANALYZE {sql}")).await.join("\n")
}

/// Joins to `entities` on its id read the joined rows through the primary index when the
/// other side has few keys (the hash join's dynamic filter), and the answer is the one a
/// session without indexes gives; with more keys than an IN list holds, the scan reads
/// the table, with the same answer.
#[tokio::test]
async fn joins_on_ids_look_keys_up() {
    let (_dir, db, t) = fresh("joins");
    let mut rng = StdRng::seed_from_u64(9);
    let mut batch = Batch::new();
    for i in 0..2_000 {
        batch = batch.insert(Entity {
            id: node(i),
            entity_type: "person".into(),
            name: format!("name {i}"),
            ..Default::default()
        });
    }
    for i in 0..400usize {
        let refs = (0..rng.random_range(0..4))
            .map(|_| node(rng.random_range(0..2_100)))
            .collect();
        batch = batch.insert(Moment {
            id: format!("m{i:04}"),
            timestamp: 1_767_225_600_000_000 + i as i64 * 3_600_000_000,
            moment_type: if i % 40 == 0 { "rare" } else { "common" }.into(),
            entity_refs: refs,
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    let scan = db
        .tenant_with(
            "joins",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();

    let join = |filter: &str| {
        format!(
            "WITH refs AS (SELECT id AS moment, unnest(entity_refs) AS ref FROM moments WHERE {filter}) \
             SELECT refs.moment, e.id, e.name FROM refs JOIN entities e ON e.id = refs.ref \
             ORDER BY refs.moment, e.id"
        )
    };
    // Few keys: looked up. All moments: ~600 keys, more than an IN list holds.
    for (filter, looked_up) in [("type = 'rare'", true), ("type <> 'nothing'", false)] {
        let sql = join(filter);
        let indexed = rows(&t, &sql).await;
        assert!(!indexed.is_empty(), "{filter}");
        assert_eq!(indexed, rows(&scan, &sql).await, "{filter}");
        let text = analyze(&t, &sql).await;
        assert!(
            text.contains("or join keys of id by index"),
            "{filter}: the plan offers the lookup\n{text}"
        );
        assert_eq!(
            text.contains("join_key_lookups=1"),
            looked_up,
            "{filter}: lookup taken\n{text}"
        );
    }
    // A lookup reads only the rows of those keys.
    let text = analyze(&t, &join("type = 'rare'")).await;
    let scanned: usize = text
        .lines()
        .find(|l| l.contains("RemScanExec: table=entities"))
        .and_then(|l| l.split("output_rows=").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("output_rows of the entities scan in\n{text}"));
    assert!(
        scanned <= 30,
        "{scanned} entity rows read for 10 moments\n{text}"
    );
}
