//! Prepared statements: planned once, run with new values; the same rows as the SQL
//! with the values written in, through the same indexes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, IndexKind, Moment, Param, Policy, Resource, Table, VectorOptions};

use super::{fresh, rows};

const DAY: i64 = 86_400_000_000;
const START: i64 = 1_700_000_000_000_000;

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("timestamp")
        .to_rfc3339()
}

fn render(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    super::slt::render(batches)
        .into_iter()
        .map(|r| r.join("|"))
        .collect()
}

#[tokio::test]
async fn a_prepared_time_window_walks_the_time_index() {
    let (_dir, _db, t) = fresh("p");
    let mut rng = StdRng::seed_from_u64(5);
    let mut batch = Batch::new();
    for i in 0..2_000 {
        batch = batch.insert(Moment {
            id: format!("m{i:05}"),
            timestamp: START + rng.random_range(0..100 * DAY),
            moment_type: ["chat", "note"][rng.random_range(0..2)].into(),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    let window = "SELECT id, type, timestamp FROM moments WHERE timestamp >= $1 AND timestamp < $2 \
                  ORDER BY timestamp DESC, id LIMIT 20";
    let prepared = t.prepare(window).await.unwrap();
    assert!(prepared.is_planned());
    for day in [0, 13, 57, 99, 150] {
        let (from, to) = (rfc3339(START + day * DAY), rfc3339(START + (day + 7) * DAY));
        let params = [Param::Text(from.clone()), Param::Text(to.clone())];
        let got = render(&prepared.execute(&params).await.unwrap());
        let literal = window
            .replace("$1", &format!("'{from}'"))
            .replace("$2", &format!("'{to}'"));
        assert_eq!(got, rows(&t, &literal).await, "day {day}");
        assert_eq!(got.is_empty(), day >= 100, "day {day}");
    }
    // The plan of the bound statement is the index walk, not a filtered scan.
    let plan = prepared
        .explain(&[
            Param::Text(rfc3339(START)),
            Param::Text(rfc3339(START + DAY)),
        ])
        .await
        .unwrap();
    assert!(plan.contains("moments_timestamp range"), "{plan}");
    assert!(!plan.contains("FilterExec"), "{plan}");
    let newest = t
        .prepare("SELECT timestamp FROM moments ORDER BY timestamp DESC LIMIT $1")
        .await
        .unwrap();
    let got = newest.execute(&[Param::Int(3)]).await.unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 3);

    // A NULL bound compares as NULL: no row, as in SQL.
    let none = prepared
        .execute(&[Param::Null, Param::Text(rfc3339(START + DAY))])
        .await
        .unwrap();
    assert!(render(&none).is_empty());
    // Errors: a value that is not a timestamp, too few values.
    let err = prepared
        .execute(&[Param::Text("yesterday".into()), Param::Text(rfc3339(START))])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("parameter $1"), "{err}");
    let err = prepared
        .execute(&[Param::Text(rfc3339(START))])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has 2 parameters, 1 given"), "{err}");
}

#[tokio::test]
async fn a_prepared_filter_uses_a_json_index() {
    let (_dir, _db, t) = fresh("p");
    let mut batch = Batch::new();
    for i in 0..500 {
        batch = batch.insert(Resource {
            id: format!("r{i:04}"),
            uri: Some(format!("doc://{i}")),
            content: "x".into(),
            metadata: format!(r#"{{"language": "{}"}}"#, ["en", "de", "fr"][i % 3]),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    t.create_index(
        "idx_lang",
        Table::Resources,
        "metadata",
        &["language"],
        IndexKind::Value,
    )
    .unwrap();
    let prepared = t
        .prepare("SELECT id FROM resources WHERE metadata->>'language' = $1 ORDER BY id")
        .await
        .unwrap();
    for lang in ["en", "fr", "xx"] {
        let got = render(&prepared.execute(&[Param::Text(lang.into())]).await.unwrap());
        let literal =
            format!("SELECT id FROM resources WHERE metadata->>'language' = '{lang}' ORDER BY id");
        assert_eq!(got, rows(&t, &literal).await, "{lang}");
    }
    let plan = prepared.explain(&[Param::Text("en".into())]).await.unwrap();
    assert!(plan.contains("idx_lang"), "{plan}");
    // A number that would change as the column's type is refused, not rounded.
    let chunk = t
        .prepare("SELECT id FROM resources WHERE chunk_index = $1")
        .await
        .unwrap();
    let err = chunk
        .execute(&[Param::Float(1.5)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without changing"), "{err}");
    assert_eq!(
        chunk
            .execute(&[Param::Float(0.0)])
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        500
    );
    // `now()` is evaluated per call, so such a statement is planned per call.
    let recent = t
        .prepare("SELECT count(*) FROM resources WHERE created_at <= now() AND uri = $1")
        .await
        .unwrap();
    assert!(!recent.is_planned());
    // A prepared DELETE with a key.
    let delete = t
        .prepare("DELETE FROM resources WHERE id = $1")
        .await
        .unwrap();
    delete
        .execute(&[Param::Text("r0000".into())])
        .await
        .unwrap();
    assert_eq!(rows(&t, "SELECT count(*) FROM resources").await, ["499"]);
}

#[tokio::test]
async fn a_prepared_vector_search_binds_its_query_vector() {
    let (_dir, _db, t) = fresh("p");
    let mut rng = StdRng::seed_from_u64(3);
    let vectors: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    t.configure_vectors(VectorOptions {
        dimensions: Some(8),
        ..Default::default()
    })
    .unwrap();
    let mut batch = Batch::new();
    for (i, v) in vectors.iter().enumerate() {
        batch = batch.insert(Resource {
            id: format!("r{i:03}"),
            uri: Some(format!("doc://{i}")),
            content: format!("c{i}"),
            embedding: Some(v.clone()),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    let sql = "SELECT id, score FROM vector_similar('resources', $1, 5) ORDER BY score DESC, id";
    let prepared = t.prepare(sql).await.unwrap();
    assert!(prepared.is_planned());
    for i in [0, 17, 199] {
        let q = [Param::Vector(vectors[i].clone())];
        let got = render(&prepared.execute(&q).await.unwrap());
        assert_eq!(got, render(&t.sql_with_params(sql, &q).await.unwrap()));
        assert!(got[0].starts_with(&format!("r{i:03}|")), "{got:?}");
    }
    // Only vectors as parameters: the physical plan of the first call is reused, also
    // with a top-k sort above the search (whose dynamic filter is renewed per call).
    assert!(prepared.reuses_physical_plan());
    let top = t
        .prepare("SELECT id FROM vector_similar('resources', $1, 20) ORDER BY score DESC LIMIT 2")
        .await
        .unwrap();
    for i in [3, 150, 3, 77] {
        let q = [Param::Vector(vectors[i].clone())];
        let got = render(&top.execute(&q).await.unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], format!("r{i:03}"));
        let sql = "SELECT id FROM vector_similar('resources', $1, 20) ORDER BY score DESC LIMIT 2";
        assert_eq!(got, render(&t.sql_with_params(sql, &q).await.unwrap()));
    }
    assert!(
        top.reuses_physical_plan(),
        "{}",
        top.explain(&[Param::Vector(vectors[0].clone())])
            .await
            .unwrap()
    );
    // A reused plan whose candidates come from an index is made again once the index
    // is dropped.
    t.sql(
        "UPDATE resources SET metadata = '{\"odd\": \"yes\"}' WHERE id IN ('r001', 'r003', 'r005')",
    )
    .await
    .unwrap();
    t.create_index(
        "idx_odd",
        Table::Resources,
        "metadata",
        &["odd"],
        IndexKind::Value,
    )
    .unwrap();
    let odd = t
        .prepare("SELECT id FROM vector_similar('resources', $1, 2) WHERE metadata->>'odd' = 'yes' ORDER BY id")
        .await
        .unwrap();
    let q = [Param::Vector(vectors[3].clone())];
    let first = render(&odd.execute(&q).await.unwrap());
    assert!(odd.reuses_physical_plan());
    t.drop_index("idx_odd").unwrap();
    assert_eq!(render(&odd.execute(&q).await.unwrap()), first);
    assert_eq!(first.len(), 2);
    // With a filter in the search and a second parameter.
    let filtered = t
        .prepare("SELECT id FROM vector_similar('resources', $1, 3) WHERE content = $2")
        .await
        .unwrap();
    let got = filtered
        .execute(&[Param::Vector(vectors[0].clone()), Param::Text("c42".into())])
        .await
        .unwrap();
    assert_eq!(render(&got), ["r042"]);
    assert!(!filtered.reuses_physical_plan());
    // Wrong dimensions, not a vector, nothing bound.
    for (params, expect) in [
        (vec![Param::Vector(vec![1.0; 3])], "dimensions"),
        (vec![Param::Text("x".into())], "must be a vector"),
        (vec![], "1 parameter, 0 given"),
    ] {
        let err = prepared.execute(&params).await.unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
}

#[tokio::test]
async fn a_statement_that_needs_its_values_to_plan_is_planned_per_call() {
    let (_dir, _db, t) = fresh("p");
    t.sql("INSERT INTO entities (id, type, name) VALUES ('a', 'person', 'Ada'), ('b', 'person', 'Bob')")
        .await
        .unwrap();
    t.sql("INSERT INTO edges (src, edge_type, dst) VALUES ('a', 'knows', 'b')")
        .await
        .unwrap();
    let prepared = t
        .prepare("SELECT id FROM traverse($1, 'out', 1)")
        .await
        .unwrap();
    assert!(!prepared.is_planned());
    let got = prepared.execute(&[Param::Text("a".into())]).await.unwrap();
    assert_eq!(render(&got), ["b"]);
    // Errors without placeholders surface at once; index commands are not prepared.
    assert!(t.prepare("SELECT nope FROM entities").await.is_err());
    assert!(
        t.prepare("CREATE INDEX i ON entities ((properties->>'x'))")
            .await
            .is_err()
    );
    assert!(t.prepare("CREATE TABLE x (a INT)").await.is_err());
    // What the session refuses is refused, at prepare or (planned per call) at execute.
    let refused = t
        .prepare("DELETE FROM entities WHERE id IN (SELECT src FROM edges WHERE dst = $1)")
        .await;
    assert!(refused.is_err());
    let set = t
        .prepare("SET datafusion.execution.batch_size = $1")
        .await
        .unwrap();
    assert!(set.execute(&[Param::Int(7)]).await.is_err());
    assert_eq!(rows(&t, "SELECT count(*) FROM entities").await, ["2"]);
}

/// `Tenant::sql` keeps the physical plan of a repeated read-only text and runs it again
/// without planning; the kept plan reads the rows of the moment, follows index changes
/// and settings, and is not kept for what it cannot run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_text_reuses_its_plan_until_indexes_or_settings_change() {
    let (_dir, _db, t) = fresh("c");
    let mut batch = Batch::new();
    for i in 0..40 {
        batch = batch.insert(Resource {
            id: format!("r{i:03}"),
            uri: Some(format!("doc://{i}")),
            content: "x".into(),
            metadata: format!(r#"{{"language": "{}"}}"#, ["en", "de"][i % 2]),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    let sql = "SELECT id FROM resources WHERE metadata->>'language' = 'en' ORDER BY id LIMIT 5";
    let first = rows(&t, sql).await;
    assert_eq!(first, ["r000", "r002", "r004", "r006", "r008"]);
    let before = t.plan_cache_stats();
    assert_eq!(before.entries, 1, "{before:?}");
    assert_eq!(rows(&t, sql).await, first);
    let after = t.plan_cache_stats();
    assert_eq!(after.hits, before.hits + 1, "{after:?}");
    assert_eq!(after.misses, before.misses, "{after:?}");

    // A write is seen by the kept plan: it reads rows when it runs.
    t.sql("INSERT INTO resources (id, uri, content, metadata) VALUES ('a000', 'doc://a', 'x', '{\"language\": \"en\"}')")
        .await
        .unwrap();
    assert_eq!(rows(&t, sql).await[0], "a000");
    assert_eq!(t.plan_cache_stats().hits, after.hits + 1);

    // A new index: the next run plans again, and uses it.
    t.sql("CREATE INDEX idx_lang ON resources ((metadata->>'language'))")
        .await
        .unwrap();
    let misses = t.plan_cache_stats().misses;
    assert_eq!(rows(&t, sql).await[0], "a000");
    assert_eq!(t.plan_cache_stats().misses, misses + 1);
    let plan = rows(&t, &format!("EXPLAIN {sql}")).await.join("\n");
    assert!(plan.contains("idx_lang"), "{plan}");
    // Dropped again: planned again, without it (not an error about a missing index).
    t.sql("DROP INDEX idx_lang").await.unwrap();
    assert_eq!(rows(&t, sql).await.len(), 5);
    assert_eq!(t.plan_cache_stats().misses, misses + 2);

    // A setting changed by SET is honoured: smaller batches from the same text.
    let all = "SELECT id FROM resources";
    let batches = t.sql(all).await.unwrap().len();
    // (SET is the operator's: a handle with that policy shares the session.)
    t.with_policy(Policy::Operator)
        .sql("SET datafusion.execution.batch_size = 4")
        .await
        .unwrap();
    let smaller = t.sql(all).await.unwrap();
    assert!(smaller.len() > batches, "{} vs {batches}", smaller.len());
    assert!(smaller.iter().all(|b| b.num_rows() <= 4));

    // Not kept: `now()` (folded into the plan), aggregates, EXPLAIN, DML.
    let kept = t.plan_cache_stats().entries;
    for sql in [
        "SELECT id FROM resources WHERE created_at <= now()",
        "SELECT count(*) FROM resources",
        "EXPLAIN SELECT id FROM resources",
        "UPDATE resources SET content = 'y' WHERE id = 'r001'",
    ] {
        t.sql(sql).await.unwrap();
        t.sql(sql).await.unwrap();
        assert_eq!(t.plan_cache_stats().entries, kept, "{sql}");
    }
    // Runs of one kept plan at the same time each get their own renewed nodes.
    let expected = rows(&t, sql).await;
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move { rows(&t, sql).await })
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.unwrap(), expected);
    }
    // A prepared statement without parameters keeps its plan too.
    let prepared = t.prepare(sql).await.unwrap();
    let once = render(&prepared.execute(&[]).await.unwrap());
    assert!(prepared.reuses_physical_plan());
    assert_eq!(render(&prepared.execute(&[]).await.unwrap()), once);
}

#[tokio::test]
async fn a_list_index_serves_a_prepared_membership_and_timestamps_bind() {
    let (_dir, _db, t) = fresh("p");
    let mut batch = Batch::new();
    for i in 0..300 {
        batch = batch.insert(Resource {
            id: format!("r{i:03}"),
            content: "x".into(),
            metadata: format!(r#"{{"tags": ["t{}", "all"]}}"#, i % 10),
            created_at: START + i * DAY,
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    t.create_index(
        "idx_tags",
        Table::Resources,
        "metadata",
        &["tags"],
        IndexKind::List,
    )
    .unwrap();
    // DataFusion infers no type for a function's argument: the placeholder is still
    // classified, so the bound statement reads the list index.
    let sql = "SELECT id FROM resources WHERE json_array_contains(metadata, 'tags', $1) \
               AND created_at >= $2 ORDER BY id";
    let prepared = t.prepare(sql).await.unwrap();
    assert!(prepared.is_planned());
    let params = [
        Param::Text("t3".into()),
        Param::Timestamp(START + 100 * DAY),
    ];
    let plan = prepared.explain(&params).await.unwrap();
    assert!(plan.contains("idx_tags contains 't3'"), "{plan}");
    let got = render(&prepared.execute(&params).await.unwrap());
    let literal = format!(
        "SELECT id FROM resources WHERE json_array_contains(metadata, 'tags', 't3') \
         AND created_at >= '{}' ORDER BY id",
        rfc3339(START + 100 * DAY)
    );
    assert_eq!(got, rows(&t, &literal).await);
    assert_eq!(got.len(), 20);
    // The same timestamp through a statement planned per call (written into its text).
    let per_call = t
        .sql_with_params(
            "SELECT count(*) FROM resources WHERE created_at < $1",
            &[Param::Timestamp(START + 10 * DAY)],
        )
        .await
        .unwrap();
    assert_eq!(render(&per_call), ["10"]);
}
