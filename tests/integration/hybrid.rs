//! User-declared JSON indexes and filtered vector search on generated data: every indexed
//! answer equals the unindexed one (NULLs and missing keys included), and a filtered
//! search returns k passing rows whenever k exist, with the strategy EXPLAIN ANALYZE names.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{
    Batch, Db, Entity, IndexKind, Param, QueryOptions, Resource, Table, Tenant, VectorStrategy,
};

use super::{fresh, rows};

const DIMS: usize = 8;

fn vector(rng: &mut StdRng) -> Vec<f32> {
    (0..DIMS).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// `n` resources with language (en 50%, missing 5%, null 5%), tags (important 10%,
/// urgent 1%), a numeric or textual level, and a vector.
fn load(t: &Tenant, n: usize) -> Vec<(String, serde_json::Value, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut out = Vec::with_capacity(n);
    let mut batch = Batch::new();
    for i in 0..n {
        let mut meta = serde_json::Map::new();
        match rng.random_range(0..20) {
            0 => {}
            1 => {
                meta.insert("language".into(), serde_json::Value::Null);
            }
            2..12 => {
                meta.insert("language".into(), "en".into());
            }
            x => {
                meta.insert("language".into(), ["de", "fr", "es"][x % 3].into());
            }
        }
        let mut tags = vec![];
        if rng.random_range(0..10) == 0 {
            tags.push("important");
        }
        if rng.random_range(0..100) == 0 {
            tags.push("urgent");
        }
        meta.insert("tags".into(), tags.into());
        match rng.random_range(0..10) {
            0 => {
                meta.insert("level".into(), "high".into());
            }
            1 => {}
            // A number written as a string: json_get_float reads it as a number.
            2 => {
                meta.insert("level".into(), "2.5".into());
            }
            _ => {
                meta.insert(
                    "level".into(),
                    (rng.random_range(0..40) as f64 / 4.0).into(),
                );
            }
        }
        match rng.random_range(0..4) {
            0 => {
                meta.insert("flag".into(), true.into());
            }
            1 => {
                meta.insert("flag".into(), "false".into());
            }
            2 => {
                meta.insert("flag".into(), 0.into());
            }
            _ => {}
        }
        let meta = serde_json::Value::Object(meta);
        let v = vector(&mut rng);
        batch = batch.insert(Resource {
            id: format!("r{i:05}"),
            uri: Some(format!("doc://{}", i % 50)),
            content: format!("chunk {}", i % 7),
            metadata: meta.to_string(),
            embedding: Some(v.clone()),
            ..Default::default()
        });
        out.push((format!("r{i:05}"), meta, v));
        if batch.len() == 1000 {
            t.write(std::mem::take(&mut batch)).unwrap();
        }
    }
    if !batch.is_empty() {
        t.write(batch).unwrap();
    }
    out
}

fn index_all(t: &Tenant) {
    t.create_index(
        "idx_lang",
        Table::Resources,
        "metadata",
        &["language"],
        IndexKind::Value,
    )
    .unwrap();
    t.create_index(
        "idx_tags",
        Table::Resources,
        "metadata",
        &["tags"],
        IndexKind::List,
    )
    .unwrap();
    t.create_index(
        "idx_level",
        Table::Resources,
        "metadata",
        &["level"],
        IndexKind::Value,
    )
    .unwrap();
    t.create_index(
        "idx_flag",
        Table::Resources,
        "metadata",
        &["flag"],
        IndexKind::Value,
    )
    .unwrap();
    t.create_index(
        "idx_tag0",
        Table::Resources,
        "metadata",
        &["tags", "0"],
        IndexKind::Value,
    )
    .unwrap();
}

/// `n` entities: names in mixed case (and one non-ASCII), types (person 30%), a team
/// (rare 0.5%) and a creation time spread over two years.
fn load_entities(t: &Tenant, n: usize) {
    let mut rng = StdRng::seed_from_u64(5);
    let mut batch = Batch::new();
    for i in 0..n {
        let first =
            ["ada", "Ada", "bob", "Zed", "éva", "grace", "alan", "Linus"][rng.random_range(0..8)];
        let team = match rng.random_range(0..200) {
            0 => "rare",
            x if x < 80 => "platform",
            x if x < 140 => "infra",
            _ => "product",
        };
        batch = batch.insert(Entity {
            id: format!("e{i:05}"),
            entity_type: if rng.random_range(0..10) < 3 {
                "person"
            } else {
                "project"
            }
            .into(),
            // Distinct names (7,919 is prime to 10,007), so that a LIMIT cuts no tie.
            name: format!("{first} {}", (i * 7919) % 10_007),
            properties: format!(r#"{{"team": "{team}"}}"#),
            created_at: 1_700_000_000_000_000 + rng.random_range(0..63_000_000_000_000i64),
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
}

/// `ORDER BY name LIMIT n` walks a user index on `name` in order, skipping rows outside
/// the filter's index set (or, for a small set, sorting it), reading rows from the
/// index's copies: the answers equal those of the same query sorted without indexes,
/// before and after writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_walks_equal_sorted_answers() {
    let (_dir, db, t) = fresh("o");
    load_entities(&t, 3000);
    // 5,000 rows that sort first, and a set of 200 that sorts after them: its walk
    // passes over 5,000 entries and asks for the set's order in memory.
    let mut batch = Batch::new();
    for i in 0..5200 {
        let (name, team) = if i < 5000 {
            (format!("a-filler {i:05}"), "filler")
        } else {
            (format!("zz late {i}"), "late")
        };
        batch = batch.insert(Entity {
            id: format!("f{i:05}"),
            entity_type: "project".into(),
            name,
            properties: format!(r#"{{"team": "{team}"}}"#),
            created_at: 1_700_000_000_000_000 + i * 1_000_000_000,
            ..Default::default()
        });
    }
    t.write(batch).unwrap();
    t.create_index("idx_name", Table::Entities, "name", &[], IndexKind::Value)
        .unwrap();
    t.create_index(
        "idx_team",
        Table::Entities,
        "properties",
        &["team"],
        IndexKind::Value,
    )
    .unwrap();
    let scan = db
        .tenant_with(
            "o",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();
    let queries = [
        "SELECT name FROM entities ORDER BY name LIMIT 25",
        "SELECT name FROM entities ORDER BY name DESC LIMIT 25",
        "SELECT name, type FROM entities WHERE type = 'person' ORDER BY name LIMIT 40",
        "SELECT name FROM entities WHERE properties->>'team' IN ('platform', 'infra') ORDER BY name DESC LIMIT 40",
        "SELECT name FROM entities WHERE type = 'person' AND properties->>'team' IN ('platform', 'infra') AND created_at > '2024-06-01' ORDER BY name LIMIT 100",
        // A set of ~15 rows: the walk gives up early and sorts them.
        "SELECT name FROM entities WHERE properties->>'team' = 'rare' ORDER BY name LIMIT 10",
        "SELECT name FROM entities WHERE properties->>'team' = 'rare' AND created_at < '2024-01-01' ORDER BY name DESC LIMIT 10",
        "SELECT name FROM entities WHERE properties->>'team' = 'none' ORDER BY name LIMIT 10",
        "SELECT name FROM entities WHERE name > 'b' AND type = 'project' ORDER BY name LIMIT 30",
        "SELECT upper(name) AS n FROM entities WHERE type = 'person' ORDER BY name LIMIT 5",
        // Columns read from the index's copy of the row.
        "SELECT name, properties->>'team', type FROM entities WHERE type = 'project' ORDER BY name DESC LIMIT 30",
        // Bounds on the column start and stop the walk (the next page).
        "SELECT name FROM entities WHERE name >= 'ada 5' AND name < 'bob' ORDER BY name DESC LIMIT 20",
        "SELECT name FROM entities WHERE name > 'grace 9' AND properties->>'team' = 'infra' ORDER BY name LIMIT 15",
        "SELECT name FROM entities WHERE name BETWEEN 'Zed' AND 'ada' ORDER BY name LIMIT 15",
        "SELECT name FROM entities WHERE name = 'alan 1000' OR name = 'bob 7' ORDER BY name LIMIT 5",
        "SELECT name FROM entities WHERE properties->>'team' = 'rare' AND name > 'b' ORDER BY name LIMIT 5",
        // The set after the fillers: its order is kept in memory after the first walk.
        "SELECT name, created_at FROM entities WHERE properties->>'team' = 'late' ORDER BY name LIMIT 10",
        "SELECT name FROM entities WHERE properties->>'team' = 'late' ORDER BY name DESC LIMIT 10",
    ];
    for round in 0..2 {
        for sql in queries {
            let ordered = rows(&t, sql).await;
            assert_eq!(ordered, rows(&scan, sql).await, "round {round}: {sql}");
            let plan = rows(&t, &format!("EXPLAIN {sql}")).await.join("\n");
            assert!(
                plan.contains("access=index idx_name (name") && plan.contains(") in order"),
                "{sql} walks the name index:\n{plan}"
            );
            if sql.contains("name >") || sql.contains("BETWEEN") {
                assert!(plan.contains("(name >"), "{sql}: a bounded walk:\n{plan}");
            }
            assert!(
                !plan.contains("FilterExec"),
                "{sql}: filter folded in:\n{plan}"
            );
            // A walk that passed over many entries asked for its set's order in memory.
            settle(&db, "o");
        }
        // Again, now that the late set's order is in memory.
        let mut from_memory = 0;
        for sql in queries {
            assert_eq!(
                rows(&t, sql).await,
                rows(&scan, sql).await,
                "round {round}: {sql}"
            );
            let analyzed = rows(&t, &format!("EXPLAIN ANALYZE {sql}")).await.join("\n");
            let taken = metric(&analyzed, "order_in_memory");
            if sql.contains("'late'") {
                assert!(
                    taken > 0,
                    "{sql} reads its set's order from memory:\n{analyzed}"
                );
                assert_eq!(metric(&analyzed, "index_entries_skipped"), 0, "{analyzed}");
            }
            from_memory += taken;
        }
        assert!(from_memory > 0);
        // Renames, deletes and new rows move and drop index entries.
        t.sql("UPDATE entities SET name = concat('aaa ', name) WHERE properties->>'team' = 'rare'")
            .await
            .unwrap();
        t.sql("DELETE FROM entities WHERE name LIKE 'Zed 1%'")
            .await
            .unwrap();
        // A change that keeps the name rewrites the index's copy of the row.
        t.sql("UPDATE entities SET properties = '{\"team\": \"moved\"}' WHERE name LIKE 'éva 3%'")
            .await
            .unwrap();
        t.sql(&format!(
            "INSERT INTO entities (id, type, name, properties) VALUES ('new{round}', 'person', 'AAA first', '{{\"team\": \"rare\"}}')"
        ))
        .await
        .unwrap();
    }
    // Dropping the index puts the sort back.
    t.sql("DROP INDEX idx_name").await.unwrap();
    let plan = rows(&t, &format!("EXPLAIN {}", queries[2]))
        .await
        .join("\n");
    assert!(!plan.contains("in order"), "{plan}");
    assert_eq!(rows(&t, queries[2]).await, rows(&scan, queries[2]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_answers_equal_unindexed_ones() {
    let (_dir, db, t) = fresh("h");
    load(&t, 3000);
    index_all(&t);
    let scan = db
        .tenant_with(
            "h",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();
    for filter in [
        "metadata->>'language' = 'en'",
        "metadata->>'language' IN ('de', 'fr')",
        "metadata->>'language' <> 'en'",
        "metadata->>'language' IS NULL",
        "metadata->>'language' IS NOT NULL",
        "NOT (metadata->>'language' = 'en')",
        "metadata->>'language' NOT IN ('en', 'de')",
        "metadata->>'language' > 'e'",
        "metadata->>'language' BETWEEN 'de' AND 'es'",
        "json_array_contains(metadata, 'tags', 'important')",
        "json_array_contains(metadata, 'tags', 'urgent') OR metadata->>'language' = 'fr'",
        "json_array_contains(metadata, 'tags', 'important') AND NOT (metadata->>'language' = 'en' OR metadata->>'language' IS NULL)",
        "json_get_float(metadata, 'level') >= 7.5",
        "json_get_float(metadata, 'level') BETWEEN 2 AND 3",
        "json_get_int(metadata, 'level') < 3",
        "json_get_str(metadata, 'level') = 'high'",
        "metadata->>'level' = '2.5'",
        "metadata->>'level' = '5'",
        "metadata->>'level' IS NULL",
        "metadata->>'level' < '3'",
        "NOT (json_get_float(metadata, 'level') < 5)",
        "uri = 'doc://7' AND metadata->>'language' = 'en'",
        "uri = 'doc://7' OR json_array_contains(metadata, 'tags', 'urgent')",
        "content = 'chunk 3' AND json_array_contains(metadata, 'tags', 'important')",
        "json_get_float(metadata, 'level') = 2.5",
        "json_get_float(metadata, 'level') > 2 AND json_get_float(metadata, 'level') < 3",
        "json_get_int(metadata, 'level') <> 5",
        "json_get_str(metadata, 'level') NOT IN ('high')",
        "json_get_str(metadata, 'level') <> 'high'",
        "metadata->>'level' NOT IN ('high', 'low')",
        "json_get_bool(metadata, 'flag')",
        "NOT json_get_bool(metadata, 'flag')",
        "json_get_bool(metadata, 'flag') = false",
        "metadata->>'flag' IS NULL",
        "metadata->'tags'->>'0' = 'important'",
        "metadata->'tags'->>'0' IS NULL",
    ] {
        let sql = format!("SELECT id FROM resources WHERE {filter} ORDER BY id");
        let indexed = rows(&t, &sql).await;
        assert_eq!(indexed, rows(&scan, &sql).await, "{filter}");
        let plan = rows(&t, &format!("EXPLAIN {sql}")).await.join("\n");
        // A uri is near-unique: its own index reads fewer rows than any set.
        let path = if filter.starts_with("uri = 'doc://7' AND") {
            "access=index resources_uri"
        } else {
            "access=index set"
        };
        assert!(plan.contains(path), "{filter} uses {path}:\n{plan}");
    }
}

type Data = [(String, serde_json::Value, Vec<f32>)];

/// Runs `queries` top-k searches with `filter` and checks that each returns k rows when
/// k match; returns recall@k against the exact filtered answer.
async fn filtered_recall(
    t: &Tenant,
    data: &Data,
    filter: &str,
    keep: &dyn Fn(&serde_json::Value) -> bool,
    rng: &mut StdRng,
    queries: usize,
) -> f64 {
    let k = 10;
    let matching = data.iter().filter(|(_, m, _)| keep(m)).count();
    let (mut hits, mut total) = (0, 0);
    for _ in 0..queries {
        let q = vector(rng);
        let sql = format!("SELECT id FROM vector_similar('resources', $1, {k}) WHERE {filter}");
        let batches = t
            .sql_with_params(&sql, &[Param::Vector(q.clone())])
            .await
            .unwrap();
        let got: Vec<String> = super::slt::render(&batches)
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        assert_eq!(got.len(), k.min(matching), "{filter}: k rows when k match");
        let want: HashSet<String> = exact_top(data, &q, k, keep).into_iter().collect();
        hits += got.iter().filter(|id| want.contains(*id)).count();
        total += want.len();
    }
    hits as f64 / total as f64
}

/// The sum of a metric over the operators of an EXPLAIN ANALYZE (0 when absent).
fn metric(analyzed: &str, name: &str) -> usize {
    analyzed
        .split(&format!("{name}="))
        .skip(1)
        .map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().unwrap_or(0)
        })
        .sum()
}

/// Waits until tenant `id` has no background read of a candidate set under way.
fn settle(db: &Db, id: &str) {
    let store = db.storage().tenant(id).unwrap();
    let start = std::time::Instant::now();
    while store.filling_candidates() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "candidate set not read in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// EXPLAIN ANALYZE of `sql` (whose `$1` is a random vector) as one text.
async fn analyze(t: &Tenant, sql: &str, rng: &mut StdRng) -> String {
    let batches = t
        .sql_with_params(
            &format!("EXPLAIN ANALYZE {sql}"),
            &[Param::Vector(vector(rng))],
        )
        .await
        .unwrap();
    super::slt::render(&batches)
        .into_iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Exact top-k (cosine) among the rows that pass `keep`.
fn exact_top(
    data: &Data,
    q: &[f32],
    k: usize,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<String> {
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    };
    let mut scored: Vec<(f32, &String)> = data
        .iter()
        .filter(|(_, m, _)| keep(m))
        .map(|(id, _, v)| (cos(q, v), id))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_search_returns_k_rows_with_high_recall() {
    let (_dir, db, t) = fresh("h");
    let data = load(&t, 10_000);
    index_all(&t);
    let has_tag = |m: &serde_json::Value, tag: &str| {
        m["tags"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == tag))
    };
    type Keep = Box<dyn Fn(&serde_json::Value) -> bool>;
    // The strategy of a filter's first search, and of the searches after the candidate
    // set was read in the background.
    let cases: Vec<(&str, Keep, &str, &str)> = vec![
        // 5,000 candidates: under the cap, read and scored exactly.
        (
            "metadata->>'language' = 'en'",
            Box::new(|m| m["language"] == "en"),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        (
            "json_array_contains(metadata, 'tags', 'important')",
            Box::new(move |m| has_tag(m, "important")),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        (
            "json_array_contains(metadata, 'tags', 'urgent')",
            Box::new(move |m| has_tag(m, "urgent")),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        (
            "metadata->>'language' <> 'en'",
            Box::new(|m| m["language"].as_str().is_some_and(|l| l != "en")),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        // 9,000 candidates, more than the index is read for in line (max(8192,
        // sqrt(262 n))): the first search post-filters, checking the filter on the rows
        // it reads; the next ones score the whole set, read meanwhile, exactly (it is
        // under max(16384, sqrt(262 n))).
        (
            "metadata->>'language' IS NOT NULL",
            Box::new(|m| m["language"].is_string()),
            "strategy_post_filter=1",
            "strategy_exact=1",
        ),
        (
            "json_array_contains(metadata, 'tags', 'important') AND metadata->>'language' = 'de'",
            Box::new(move |m| has_tag(m, "important") && m["language"] == "de"),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        // One part small, one over the cap: the small part's ids are a superset of the
        // answer, scored exactly, the whole filter checked on the rows. Later searches
        // get the whole (exact) set.
        (
            "json_array_contains(metadata, 'tags', 'important') AND metadata->>'language' = 'en'",
            Box::new(move |m| has_tag(m, "important") && m["language"] == "en"),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
        (
            "json_array_contains(metadata, 'tags', 'urgent') OR metadata->>'language' = 'de'",
            Box::new(move |m| has_tag(m, "urgent") || m["language"] == "de"),
            "strategy_exact=1",
            "strategy_exact=1",
        ),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    for (filter, keep, first, later) in &cases {
        let sql = format!("SELECT id FROM vector_similar('resources', $1, 10) WHERE {filter}");
        settle(&db, "h");
        let text = analyze(&t, &sql, &mut rng).await;
        assert!(text.contains(first), "{filter}: {first} in\n{text}");
        settle(&db, "h");
        let text = analyze(&t, &sql, &mut rng).await;
        assert!(text.contains(later), "{filter}: {later} in\n{text}");
        let recall = filtered_recall(&t, &data, filter, keep.as_ref(), &mut rng, 20).await;
        assert!(recall >= 0.9, "{filter}: recall@10 {recall}");
    }

    // A filter no index answers: post-filter, widening until k rows pass.
    let text = analyze(
        &t,
        "SELECT id FROM vector_similar('resources', $1, 10) WHERE content = 'chunk 3' AND uri <> 'doc://1'",
        &mut rng,
    )
    .await;
    assert!(text.contains("strategy_post_filter=1"), "{text}");
    let got = rows(
        &t,
        "SELECT count(*) FROM vector_similar('resources', ARRAY[1,0,0,0,0,0,0,0], 10) WHERE content = 'chunk 3'",
    )
    .await;
    assert_eq!(got, ["10"]);
}

/// Every strategy, forced, returns k passing rows with high recall for every filter:
/// the planner's choice is about speed only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_answers_every_filter() {
    let (_dir, db, t) = fresh("h");
    let data = load(&t, 6_000);
    index_all(&t);
    type Keep = Box<dyn Fn(&serde_json::Value) -> bool>;
    let cases: Vec<(&str, Keep)> = vec![
        (
            "metadata->>'language' = 'en'",
            Box::new(|m| m["language"] == "en"),
        ),
        (
            "json_array_contains(metadata, 'tags', 'urgent')",
            Box::new(|m| {
                m["tags"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "urgent"))
            }),
        ),
        (
            "metadata->>'language' IS NULL",
            Box::new(|m| !m["language"].is_string()),
        ),
    ];
    for strategy in [
        VectorStrategy::Exact,
        VectorStrategy::InGraph,
        VectorStrategy::Overfetch,
        VectorStrategy::PostFilter,
    ] {
        let forced = db
            .tenant_with(
                "h",
                QueryOptions {
                    vector_strategy: Some(strategy),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        for (filter, keep) in &cases {
            let recall = filtered_recall(&forced, &data, filter, keep.as_ref(), &mut rng, 10).await;
            assert!(recall >= 0.9, "{strategy:?} {filter}: recall@10 {recall}");
            let sql = format!("SELECT id FROM vector_similar('resources', $1, 10) WHERE {filter}");
            let text = analyze(&forced, &sql, &mut rng).await;
            assert!(
                text.contains(&format!("strategy={} (forced)", strategy.name())),
                "{text}"
            );
        }
    }
}

/// Without an ef argument a search runs at the tenant's ef_search (64 by default), not at
/// k: its answers are those of the same search with ef 64 spelled out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_without_ef_uses_the_tenants_ef_search() {
    let (_dir, db, t) = fresh("h");
    load(&t, 10_000);
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..30 {
        let answers = answers_for(
            &t,
            &vector(&mut rng),
            &[
                "SELECT id FROM vector_similar('resources', $1, 10)",
                "SELECT id FROM vector_similar('resources', $1, 10, NULL, 64)",
                "SELECT id FROM vector_similar('resources', $1, 10) WHERE uri <> 'nowhere'",
                "SELECT id FROM vector_similar('resources', $1, 10, NULL, 64) WHERE uri <> 'nowhere'",
            ],
        )
        .await;
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[2], answers[3]);
    }
    // Changing ef_search applies to the loaded index at once (it is not rebuilt).
    let mut options = t.vector_options().unwrap().unwrap();
    options.ef_search = 12;
    t.configure_vectors(options).unwrap();
    assert!(db.storage().tenant("h").unwrap().vector_index_loaded());
    for _ in 0..30 {
        let answers = answers_for(
            &t,
            &vector(&mut rng),
            &[
                "SELECT id FROM vector_similar('resources', $1, 10)",
                "SELECT id FROM vector_similar('resources', $1, 10, NULL, 12)",
            ],
        )
        .await;
        assert_eq!(answers[0], answers[1]);
    }
}

/// The rendered answer of each statement, with `$1` bound to `q`.
async fn answers_for(t: &Tenant, q: &[f32], sqls: &[&str]) -> Vec<Vec<Vec<String>>> {
    let mut answers = vec![];
    for sql in sqls {
        let batches = t
            .sql_with_params(sql, &[Param::Vector(q.to_vec())])
            .await
            .unwrap();
        answers.push(super::slt::render(&batches));
    }
    answers
}

/// A filter's candidate set, read in the background after its first search, serves the
/// searches after it, and is dropped by the next write: a row written after it was read
/// is found at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_sets_are_kept_until_the_next_write() {
    let (_dir, db, t) = fresh("h");
    let data = load(&t, 10_000);
    index_all(&t);
    assert!(
        data.iter()
            .filter(|(_, m, _)| m["language"].is_string())
            .count()
            > 8192
    );
    let sql = "SELECT id FROM vector_similar('resources', $1, 10) WHERE metadata->>'language' IS NOT NULL";
    let mut rng = StdRng::seed_from_u64(33);
    let cold = analyze(&t, sql, &mut rng).await;
    assert!(cold.contains("strategy_post_filter=1"), "{cold}");
    settle(&db, "h");
    let warm = analyze(&t, sql, &mut rng).await;
    assert!(warm.contains("strategy_exact=1"), "{warm}");

    // A new English row at exactly the query vector: the nearest row from now on.
    let q = vector(&mut rng);
    t.write(Batch::new().insert(Resource {
        id: "new".into(),
        uri: Some("doc://new".into()),
        content: "new".into(),
        metadata: r#"{"language": "en"}"#.into(),
        embedding: Some(q.clone()),
        ..Default::default()
    }))
    .unwrap();
    let first = |batches: &[datafusion::arrow::array::RecordBatch]| {
        super::slt::render(batches)
            .first()
            .map(|r| r[0].clone())
            .unwrap_or_default()
    };
    let after_write = analyze(&t, sql, &mut rng).await;
    assert!(
        after_write.contains("strategy_post_filter=1"),
        "{after_write}"
    );
    let got = t
        .sql_with_params(sql, &[Param::Vector(q.clone())])
        .await
        .unwrap();
    assert_eq!(first(&got), "new");
    // The set read after the write holds the new row: the search keeps it.
    settle(&db, "h");
    let warm = analyze(&t, sql, &mut rng).await;
    assert!(warm.contains("strategy_exact=1"), "{warm}");
    let got = t
        .sql_with_params(sql, &[Param::Vector(q.clone())])
        .await
        .unwrap();
    assert_eq!(first(&got), "new");
}

/// An exact search keeps its set's vectors in memory for the next search on the filter;
/// a changed vector is seen at once (the copy is dropped with the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_vectors_are_kept_until_a_vector_changes() {
    let (_dir, _db, t) = fresh("h");
    let data = load(&t, 3000);
    index_all(&t);
    let important = |m: &serde_json::Value| {
        m["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|x| x == "important"))
    };
    let sql = "SELECT id FROM vector_similar('resources', $1, 10) WHERE json_array_contains(metadata, 'tags', 'important')";
    let mut rng = StdRng::seed_from_u64(44);
    let first = analyze(&t, sql, &mut rng).await;
    assert!(first.contains("strategy_exact=1"), "{first}");
    assert!(!first.contains("vectors_in_memory"), "{first}");
    for _ in 0..3 {
        let q = vector(&mut rng);
        let got: Vec<String> = super::slt::render(
            &t.sql_with_params(sql, &[Param::Vector(q.clone())])
                .await
                .unwrap(),
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
        assert_eq!(got, exact_top(&data, &q, 10, important));
    }
    let warm = analyze(&t, sql, &mut rng).await;
    assert!(warm.contains("vectors_in_memory="), "{warm}");

    // An important row moved onto the query vector is the nearest from now on.
    let q = vector(&mut rng);
    let (moved, _, _) = data.iter().rev().find(|(_, m, _)| important(m)).unwrap();
    t.set_embedding(moved, Some(q.clone())).unwrap();
    let got = t
        .sql_with_params(sql, &[Param::Vector(q.clone())])
        .await
        .unwrap();
    assert_eq!(super::slt::render(&got)[0][0], *moved);
    let after = analyze(&t, sql, &mut rng).await;
    assert!(after.contains("vectors_in_memory="), "{after}");
}

/// A user index on a timestamp column answers comparisons with the column as an exact
/// set (alone, and ANDed or ORed with other indexes), and serves `ORDER BY created_at
/// LIMIT n` as a walk whose rows are read by id: the answers equal the unindexed ones,
/// before and after writes that move the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_indexes_equal_unindexed_answers() {
    let (_dir, db, t) = fresh("ts");
    load_entities(&t, 3000);
    t.sql("CREATE INDEX idx_created ON entities (created_at)")
        .await
        .unwrap();
    t.create_index(
        "idx_team",
        Table::Entities,
        "properties",
        &["team"],
        IndexKind::Value,
    )
    .unwrap();
    let scan = db
        .tenant_with(
            "ts",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();
    // One row's exact time, for `=`, `<>` and IN.
    let at = rows(&t, "SELECT created_at FROM entities WHERE id = 'e00007'").await[0].clone();
    let filters = [
        "created_at > '2024-06-01'".to_string(),
        "created_at >= '2024-06-01' AND created_at < '2025-01-01'".into(),
        "created_at BETWEEN '2024-01-01' AND '2024-02-01'".into(),
        "NOT (created_at < '2024-06-01')".into(),
        format!("created_at = '{at}'"),
        format!("created_at <> '{at}'"),
        format!("created_at IN ('{at}', '2024-01-01')"),
        format!("created_at NOT IN ('{at}')"),
        "created_at > '2024-06-01' AND type = 'person' AND properties->>'team' = 'infra'".into(),
        "created_at < '2024-01-01' OR properties->>'team' = 'rare'".into(),
        "NOT (created_at > '2024-06-01' OR properties->>'team' = 'platform')".into(),
    ];
    for round in 0..2 {
        for filter in &filters {
            let sql = format!("SELECT id FROM entities WHERE {filter} ORDER BY id");
            assert_eq!(
                rows(&t, &sql).await,
                rows(&scan, &sql).await,
                "round {round}: {filter}"
            );
            let plan = rows(&t, &format!("EXPLAIN {sql}")).await.join("\n");
            assert!(
                plan.contains("access=index set") && plan.contains("idx_created (created_at)"),
                "{filter} uses the timestamp index:\n{plan}"
            );
            assert!(
                !plan.contains("residual=created_at") && !plan.contains("FilterExec"),
                "{filter}: answered by the set, not re-checked:\n{plan}"
            );
        }
        // A literal between two microseconds is not the index's: a residual checks it.
        let sql = "SELECT id FROM entities WHERE created_at > CAST('2024-06-01T00:00:00.000000500Z' AS TIMESTAMP) ORDER BY id";
        assert_eq!(rows(&t, sql).await, rows(&scan, sql).await);
        // Newest and oldest first, read through the index (rows by id). Rows of one time
        // (the update below gives many rows one) may come in any order among themselves:
        // the times are compared.
        for sql in [
            "SELECT created_at FROM entities ORDER BY created_at DESC LIMIT 20",
            "SELECT created_at FROM entities WHERE type = 'person' ORDER BY created_at LIMIT 20",
            "SELECT created_at FROM entities WHERE created_at > '2025-01-01' ORDER BY created_at DESC LIMIT 7",
        ] {
            assert_eq!(rows(&t, sql).await, rows(&scan, sql).await, "{sql}");
            let plan = rows(&t, &format!("EXPLAIN {sql}")).await.join("\n");
            assert!(
                plan.contains("access=index idx_created (created_at) in order"),
                "{sql} walks the timestamp index:\n{plan}"
            );
        }
        // Writes move entries: new times, a delete, a new row.
        t.sql("UPDATE entities SET created_at = '2026-01-01' WHERE properties->>'team' = 'rare'")
            .await
            .unwrap();
        t.sql("DELETE FROM entities WHERE id LIKE 'e001%'")
            .await
            .unwrap();
        t.sql(&format!(
            "INSERT INTO entities (id, type, name, properties, created_at) VALUES ('new{round}', 'person', 'n{round}', '{{\"team\": \"infra\"}}', '2024-07-0{}')",
            round + 1
        ))
        .await
        .unwrap();
    }
}
