//! Differential tests of the read path against SQLite: random WHERE clauses over the same
//! generated entities, answered by remdb with user indexes, by remdb with its built-in
//! indexes only, and by SQLite (rusqlite, bundled). Every answer must be the same set of
//! ids; `ORDER BY name, id LIMIT n` the same rows in the same order; and the counts of
//! `p`, `NOT p` and `p IS NULL` must add up to the table (ternary logic partitioning).
//!
//! A fixed seed runs in CI (`REMDB_DIFF_QUERIES` WHERE clauses, 1,000 by default);
//! `REMDB_DIFF_SEED` and a larger `REMDB_DIFF_QUERIES` run more.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Entity, Tenant};

use super::rows;

const ENTITIES: usize = 1500;
const TYPES: [&str; 4] = ["person", "project", "Person", "team"];
const WORDS: [&str; 8] = [
    "ada",
    "Bob",
    "carol",
    "dan",
    "Eve",
    "ada lovelace",
    "o'neil",
    "zed",
];
const TAGS: [&str; 4] = ["a", "b", "Bee", "c d"];
const ROLES: [&str; 5] = ["engineer", "manager", "Engineer", "", "zz"];
/// 2024-01-01T00:00:00Z in microseconds, and the spread of `created_at` after it.
const EPOCH_2024: i64 = 1_704_067_200_000_000;
const SPREAD: i64 = 86_400_000_000 * 30;

/// One generated entity: what both engines store.
struct Row {
    id: String,
    ty: String,
    name: String,
    role: Option<String>,
    n: Option<i64>,
    created_at: i64,
    /// `properties.tags`, an array (missing when None).
    tags: Option<Vec<String>>,
}

fn generate(rng: &mut StdRng) -> Vec<Row> {
    (0..ENTITIES)
        .map(|i| Row {
            id: format!("e{i:04}"),
            ty: TYPES[rng.random_range(0..TYPES.len())].to_string(),
            name: format!(
                "{} {}",
                WORDS[rng.random_range(0..WORDS.len())],
                rng.random_range(0..20)
            ),
            role: rng
                .random_bool(0.8)
                .then(|| ROLES[rng.random_range(0..ROLES.len())].to_string()),
            n: rng.random_bool(0.7).then(|| rng.random_range(-5..50)),
            created_at: EPOCH_2024 + rng.random_range(0..SPREAD),
            tags: rng.random_bool(0.7).then(|| {
                TAGS.iter()
                    .filter(|_| rng.random_bool(0.4))
                    .map(|t| t.to_string())
                    .collect()
            }),
        })
        .collect()
}

/// A filter, rendered for either engine.
#[derive(Debug, Clone)]
enum Pred {
    Cmp(Col, &'static str, Val),
    In(Col, Vec<Val>, bool),
    Between(Col, Val, Val, bool),
    IsNull(Col, bool),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Col {
    Id,
    Type,
    Name,
    Role,
    N,
    Created,
}

#[derive(Debug, Clone)]
enum Val {
    Text(String),
    Int(i64),
    Micros(i64),
    Null,
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Remdb,
    Sqlite,
}

fn col(c: Col, d: Dialect) -> &'static str {
    match (c, d) {
        (Col::Id, _) => "id",
        (Col::Type, _) => "type",
        (Col::Name, _) => "name",
        (Col::Role, Dialect::Remdb) => "(properties->>'role')",
        (Col::Role, Dialect::Sqlite) => "role",
        (Col::N, Dialect::Remdb) => "json_get_int(properties, 'n')",
        (Col::N, Dialect::Sqlite) => "n",
        (Col::Created, _) => "created_at",
    }
}

fn val(v: &Val, d: Dialect) -> String {
    match (v, d) {
        (Val::Text(s), _) => format!("'{}'", s.replace('\'', "''")),
        (Val::Int(n), _) => n.to_string(),
        (Val::Micros(t), Dialect::Sqlite) => t.to_string(),
        (Val::Micros(t), Dialect::Remdb) => {
            let at = chrono::DateTime::from_timestamp_micros(*t).expect("a time");
            format!(
                "'{}'",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        }
        (Val::Null, _) => "NULL".into(),
    }
}

fn render(p: &Pred, d: Dialect) -> String {
    match p {
        Pred::Cmp(c, op, v) => format!("{} {op} {}", col(*c, d), val(v, d)),
        Pred::In(c, vs, negated) => {
            let list: Vec<String> = vs.iter().map(|v| val(v, d)).collect();
            let not = if *negated { "NOT " } else { "" };
            format!("{} {not}IN ({})", col(*c, d), list.join(", "))
        }
        Pred::Between(c, lo, hi, negated) => {
            let not = if *negated { "NOT " } else { "" };
            format!(
                "{} {not}BETWEEN {} AND {}",
                col(*c, d),
                val(lo, d),
                val(hi, d)
            )
        }
        Pred::IsNull(c, true) => format!("{} IS NULL", col(*c, d)),
        Pred::IsNull(c, false) => format!("{} IS NOT NULL", col(*c, d)),
        Pred::And(a, b) => format!("({} AND {})", render(a, d), render(b, d)),
        Pred::Or(a, b) => format!("({} OR {})", render(a, d), render(b, d)),
        Pred::Not(a) => format!("NOT ({})", render(a, d)),
    }
}

fn value(rng: &mut StdRng, c: Col, rows: &[Row]) -> Val {
    // Mostly values that occur, sometimes ones that do not, rarely NULL.
    if rng.random_bool(0.03) {
        return Val::Null;
    }
    let row = &rows[rng.random_range(0..rows.len())];
    match c {
        Col::Id if rng.random_bool(0.9) => Val::Text(row.id.clone()),
        Col::Id => Val::Text("nope".into()),
        Col::Type if rng.random_bool(0.9) => Val::Text(row.ty.clone()),
        Col::Type => Val::Text("PERSON".into()),
        Col::Name if rng.random_bool(0.7) => Val::Text(row.name.clone()),
        Col::Name => Val::Text(WORDS[rng.random_range(0..WORDS.len())].into()),
        Col::Role => Val::Text(ROLES[rng.random_range(0..ROLES.len())].into()),
        Col::N => Val::Int(rng.random_range(-6..52)),
        Col::Created if rng.random_bool(0.3) => Val::Micros(row.created_at),
        Col::Created => {
            Val::Micros(EPOCH_2024 + rng.random_range(-SPREAD / 10..SPREAD + SPREAD / 10))
        }
    }
}

fn atom(rng: &mut StdRng, rows: &[Row]) -> Pred {
    let cols = [
        Col::Id,
        Col::Type,
        Col::Name,
        Col::Role,
        Col::N,
        Col::Created,
    ];
    let c = cols[rng.random_range(0..cols.len())];
    match rng.random_range(0..10) {
        0..=3 => {
            let ops = ["=", "=", "<>", "<", "<=", ">", ">="];
            Pred::Cmp(c, ops[rng.random_range(0..ops.len())], value(rng, c, rows))
        }
        4..=6 => {
            let n = rng.random_range(1..5);
            let vs = (0..n).map(|_| value(rng, c, rows)).collect();
            Pred::In(c, vs, rng.random_bool(0.3))
        }
        7 | 8 => {
            let (a, b) = (value(rng, c, rows), value(rng, c, rows));
            Pred::Between(c, a, b, rng.random_bool(0.2))
        }
        _ => Pred::IsNull(c, rng.random_bool(0.5)),
    }
}

fn pred(rng: &mut StdRng, rows: &[Row], depth: u32) -> Pred {
    if depth == 0 || rng.random_bool(0.35) {
        return atom(rng, rows);
    }
    match rng.random_range(0..5) {
        0 | 1 => Pred::And(
            Box::new(pred(rng, rows, depth - 1)),
            Box::new(pred(rng, rows, depth - 1)),
        ),
        2 | 3 => Pred::Or(
            Box::new(pred(rng, rows, depth - 1)),
            Box::new(pred(rng, rows, depth - 1)),
        ),
        _ => Pred::Not(Box::new(pred(rng, rows, depth - 1))),
    }
}

fn sqlite_of(rows: &[Row]) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
    conn.execute_batch(
        "CREATE TABLE entities (id TEXT PRIMARY KEY, type TEXT, name TEXT, role TEXT, n INTEGER, \
         created_at INTEGER)",
    )
    .expect("create");
    let mut insert = conn
        .prepare("INSERT INTO entities VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .expect("prepare");
    for r in rows {
        insert
            .execute(rusqlite::params![
                r.id,
                r.ty,
                r.name,
                r.role,
                r.n,
                r.created_at
            ])
            .expect("insert");
    }
    drop(insert);
    conn
}

fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = statement.column_count();
    statement
        .query_map([], |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        rusqlite::types::ValueRef::Null => "NULL".into(),
                        other => format!("{other:?}"),
                    })
                })
                .collect::<rusqlite::Result<Vec<String>>>()
                .map(|cells| cells.join("|"))
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect::<rusqlite::Result<_>>()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn load(t: &Tenant, rows: &[Row]) {
    let mut batch = Batch::new();
    for r in rows {
        let mut properties = serde_json::Map::new();
        if let Some(role) = &r.role {
            properties.insert("role".into(), role.clone().into());
        }
        if let Some(n) = r.n {
            properties.insert("n".into(), n.into());
        }
        if let Some(tags) = &r.tags {
            properties.insert("tags".into(), tags.clone().into());
        }
        batch = batch.insert(Entity {
            id: r.id.clone(),
            entity_type: r.ty.clone(),
            name: r.name.clone(),
            properties: serde_json::Value::Object(properties).to_string(),
            created_at: r.created_at,
            ..Default::default()
        });
    }
    t.write(batch).expect("load");
}

#[tokio::test]
async fn random_filters_agree_with_sqlite() {
    let seed: u64 = std::env::var("REMDB_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207);
    let queries: usize = std::env::var("REMDB_DIFF_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut rng = StdRng::seed_from_u64(seed);
    let data = generate(&mut rng);
    let sqlite = sqlite_of(&data);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = remdb::Db::open(dir.path(), Default::default()).expect("open");
    let indexed = db.create_tenant("indexed").expect("tenant");
    let builtin = db.create_tenant("builtin").expect("tenant");
    load(&indexed, &data).await;
    load(&builtin, &data).await;
    for index in [
        "CREATE INDEX idx_role ON entities ((properties->>'role'))",
        "CREATE INDEX idx_n ON entities ((properties->>'n'))",
        "CREATE INDEX idx_created ON entities (created_at)",
        "CREATE INDEX idx_name ON entities (name)",
    ] {
        indexed.sql(index).await.expect(index);
    }
    let total = data.len().to_string();
    for q in 0..queries {
        let p = pred(&mut rng, &data, 3);
        let (ours, theirs) = (render(&p, Dialect::Remdb), render(&p, Dialect::Sqlite));
        let context = format!("seed {seed}, query {q}: {ours}");
        let expected = sqlite_rows(
            &sqlite,
            &format!("SELECT id FROM entities WHERE {theirs} ORDER BY id"),
        );
        let ordered = sqlite_rows(
            &sqlite,
            &format!("SELECT id FROM entities WHERE {theirs} ORDER BY name, id LIMIT 7"),
        );
        for t in [&indexed, &builtin] {
            let got = rows(
                t,
                &format!("SELECT id FROM entities WHERE {ours} ORDER BY id"),
            )
            .await;
            assert_eq!(got, expected, "{} {context}", t.id());
            let got = rows(
                t,
                &format!("SELECT id FROM entities WHERE {ours} ORDER BY name, id LIMIT 7"),
            )
            .await;
            assert_eq!(got, ordered, "{} ORDER BY name LIMIT: {context}", t.id());
            // p, NOT p and p IS NULL partition the rows.
            let parts = rows(
                t,
                &format!(
                    "SELECT (SELECT count(*) FROM entities WHERE {ours}) + \
                     (SELECT count(*) FROM entities WHERE NOT ({ours})) + \
                     (SELECT count(*) FROM entities WHERE ({ours}) IS NULL)"
                ),
            )
            .await;
            assert_eq!(
                parts,
                std::slice::from_ref(&total),
                "{} partition: {context}",
                t.id()
            );
        }
    }
}

/// A moment over the generated entities.
struct MomentRow {
    id: String,
    ty: &'static str,
    at: i64,
    refs: Vec<String>,
    classes: Vec<&'static str>,
    /// `metadata.kind` (missing when None).
    kind: Option<&'static str>,
}

const MOMENT_TYPES: [&str; 3] = ["meeting", "chat", "Meeting"];
const CLASSES: [&str; 3] = ["x", "y", "z"];
const KINDS: [&str; 3] = ["call", "note", "mail"];
const EDGE_TYPES: [&str; 3] = ["knows", "works_with", "manages"];

fn generate_moments(rng: &mut StdRng, entities: &[Row]) -> Vec<MomentRow> {
    (0..800)
        .map(|i| MomentRow {
            id: format!("m{i:04}"),
            ty: MOMENT_TYPES[rng.random_range(0..MOMENT_TYPES.len())],
            at: EPOCH_2024 + rng.random_range(0..SPREAD),
            refs: (0..rng.random_range(0..4))
                .map(|_| entities[rng.random_range(0..entities.len())].id.clone())
                .collect(),
            classes: CLASSES
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.4))
                .collect(),
            kind: rng
                .random_bool(0.8)
                .then(|| KINDS[rng.random_range(0..KINDS.len())]),
        })
        .collect()
}

/// Edges `(src, edge_type, dst)` between the generated entities, each once.
fn generate_edges(rng: &mut StdRng, entities: &[Row]) -> Vec<(String, &'static str, String)> {
    let mut seen = std::collections::BTreeSet::new();
    // A few hubs with many edges, so that walks and joins from them are not all tiny.
    let hubs = 30;
    for _ in 0..4000 {
        let src = if rng.random_bool(0.5) {
            rng.random_range(0..hubs)
        } else {
            rng.random_range(0..entities.len())
        };
        let dst = rng.random_range(0..entities.len());
        let ty = EDGE_TYPES[rng.random_range(0..EDGE_TYPES.len())];
        seen.insert((entities[src].id.clone(), ty, entities[dst].id.clone()));
    }
    seen.into_iter().collect()
}

fn load_rest(t: &Tenant, moments: &[MomentRow], edges: &[(String, &'static str, String)]) {
    let mut batch = Batch::new();
    for m in moments {
        let metadata = match m.kind {
            Some(kind) => serde_json::json!({ "kind": kind }),
            None => serde_json::json!({}),
        };
        batch = batch.insert(remdb::Moment {
            id: m.id.clone(),
            timestamp: m.at,
            moment_type: m.ty.into(),
            classifications: m.classes.iter().map(|c| c.to_string()).collect(),
            entity_refs: m.refs.clone(),
            metadata: metadata.to_string(),
            ..Default::default()
        });
    }
    for (src, ty, dst) in edges {
        batch = batch.insert(remdb::Edge {
            src: src.clone(),
            dst: dst.clone(),
            edge_type: ty.to_string(),
            properties: "{}".into(),
            ..Default::default()
        });
    }
    t.write(batch).expect("load");
}

fn sqlite_rest(
    conn: &rusqlite::Connection,
    entities: &[Row],
    moments: &[MomentRow],
    edges: &[(String, &'static str, String)],
) {
    conn.execute_batch(
        "CREATE TABLE entity_tags (id TEXT, tag TEXT); \
         CREATE TABLE moments (id TEXT PRIMARY KEY, type TEXT, at INTEGER, kind TEXT); \
         CREATE TABLE moment_refs (id TEXT, ref TEXT); \
         CREATE TABLE moment_classes (id TEXT, class TEXT); \
         CREATE TABLE edges (src TEXT, edge_type TEXT, dst TEXT);",
    )
    .expect("create");
    let run = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        conn.execute(sql, params).expect(sql);
    };
    for e in entities {
        for tag in e.tags.iter().flatten() {
            run("INSERT INTO entity_tags VALUES (?1, ?2)", &[&e.id, tag]);
        }
    }
    for m in moments {
        run(
            "INSERT INTO moments VALUES (?1, ?2, ?3, ?4)",
            &[&m.id, &m.ty, &m.at, &m.kind],
        );
        for r in &m.refs {
            run("INSERT INTO moment_refs VALUES (?1, ?2)", &[&m.id, r]);
        }
        for c in &m.classes {
            run("INSERT INTO moment_classes VALUES (?1, ?2)", &[&m.id, c]);
        }
    }
    for (src, ty, dst) in edges {
        run("INSERT INTO edges VALUES (?1, ?2, ?3)", &[src, ty, dst]);
    }
}

/// A moment query: a time window and some of a type, an entity it refers to, a
/// classification and a JSON value; `(remdb, sqlite)`.
fn moment_query(rng: &mut StdRng, entities: &[Row]) -> (String, String) {
    let (mut lo, mut hi) = (
        EPOCH_2024 + rng.random_range(-SPREAD / 10..SPREAD),
        EPOCH_2024 + rng.random_range(0..SPREAD + SPREAD / 10),
    );
    if lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    }
    let (mut ours, mut theirs) = (
        vec![format!(
            "timestamp >= {} AND timestamp < {}",
            val(&Val::Micros(lo), Dialect::Remdb),
            val(&Val::Micros(hi), Dialect::Remdb)
        )],
        vec![format!("at >= {lo} AND at < {hi}")],
    );
    if rng.random_bool(0.4) {
        let ty = MOMENT_TYPES[rng.random_range(0..MOMENT_TYPES.len())];
        ours.push(format!("type = '{ty}'"));
        theirs.push(format!("type = '{ty}'"));
    }
    if rng.random_bool(0.4) {
        let e = &entities[rng.random_range(0..entities.len())].id;
        ours.push(format!("'{e}' = ANY(entity_refs)"));
        theirs.push(format!(
            "EXISTS (SELECT 1 FROM moment_refs r WHERE r.id = moments.id AND r.ref = '{e}')"
        ));
    }
    if rng.random_bool(0.4) {
        let c = CLASSES[rng.random_range(0..CLASSES.len())];
        ours.push(format!("array_has(classifications, '{c}')"));
        theirs.push(format!(
            "EXISTS (SELECT 1 FROM moment_classes c WHERE c.id = moments.id AND c.class = '{c}')"
        ));
    }
    if rng.random_bool(0.4) {
        let k = KINDS[rng.random_range(0..KINDS.len())];
        let op = ["=", "<>"][rng.random_range(0..2)];
        ours.push(format!("metadata->>'kind' {op} '{k}'"));
        theirs.push(format!("kind {op} '{k}'"));
    }
    let limit = rng.random_range(1..30);
    (
        format!(
            "SELECT id FROM moments WHERE {} ORDER BY timestamp DESC, id LIMIT {limit}",
            ours.join(" AND ")
        ),
        format!(
            "SELECT id FROM moments WHERE {} ORDER BY at DESC, id LIMIT {limit}",
            theirs.join(" AND ")
        ),
    )
}

/// Edges, joins of edges with filtered entities, and list-index filters, the same in
/// both engines' SQL but for the entity predicate; `(remdb, sqlite)`.
fn graph_query(rng: &mut StdRng, entities: &[Row]) -> (String, String) {
    let node = if rng.random_bool(0.5) {
        entities[rng.random_range(0..30)].id.clone()
    } else {
        entities[rng.random_range(0..entities.len())].id.clone()
    };
    let ty = EDGE_TYPES[rng.random_range(0..EDGE_TYPES.len())];
    let p = pred(rng, entities, 2);
    let (ours, theirs) = (render(&p, Dialect::Remdb), render(&p, Dialect::Sqlite));
    let tag = TAGS[rng.random_range(0..TAGS.len())];
    let same = |sql: String| (sql.clone(), sql);
    match rng.random_range(0..6) {
        0 => same(format!(
            "SELECT src, edge_type, dst FROM edges WHERE src = '{node}' ORDER BY 1, 2, 3"
        )),
        1 => same(format!(
            "SELECT src, dst FROM edges WHERE dst = '{node}' AND edge_type = '{ty}' ORDER BY 1, 2"
        )),
        2 => {
            let join = |p: &str| {
                format!(
                    "SELECT g.dst, e.name FROM edges g JOIN (SELECT id, name FROM entities \
                     WHERE {p}) e ON e.id = g.dst WHERE g.src = '{node}' ORDER BY 1, 2"
                )
            };
            (join(&ours), join(&theirs))
        }
        3 => {
            let join = |p: &str| {
                format!(
                    "SELECT e.id, g.edge_type, g.dst FROM (SELECT id FROM entities WHERE {p}) e \
                     JOIN edges g ON g.src = e.id WHERE g.edge_type = '{ty}' ORDER BY 1, 2, 3"
                )
            };
            (join(&ours), join(&theirs))
        }
        4 => (
            format!(
                "SELECT id FROM entities WHERE json_array_contains(properties, 'tags', '{tag}') \
                 AND {ours} ORDER BY id"
            ),
            format!(
                "SELECT id FROM entities WHERE EXISTS (SELECT 1 FROM entity_tags t WHERE \
                 t.id = entities.id AND t.tag = '{tag}') AND {theirs} ORDER BY id"
            ),
        ),
        _ => {
            let two_hops = |p: &str| {
                format!(
                    "SELECT DISTINCT b.dst FROM edges a JOIN edges b ON b.src = a.dst \
                     WHERE a.src = '{node}' AND b.dst IN (SELECT id FROM entities WHERE {p}) \
                     ORDER BY 1"
                )
            };
            (two_hops(&ours), two_hops(&theirs))
        }
    }
}

/// Moments (time windows, list columns, a JSON index), edges, joins of edges with
/// filtered entities and a list (GIN) index, against SQLite: `REMDB_DIFF_QUERIES` of
/// each (1,000 by default).
#[tokio::test]
async fn moments_edges_joins_and_list_indexes_agree_with_sqlite() {
    let seed: u64 = std::env::var("REMDB_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261207);
    let queries: usize = std::env::var("REMDB_DIFF_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xED6E);
    let data = generate(&mut rng);
    let moments = generate_moments(&mut rng, &data);
    let edges = generate_edges(&mut rng, &data);
    let sqlite = sqlite_of(&data);
    sqlite_rest(&sqlite, &data, &moments, &edges);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = remdb::Db::open(dir.path(), Default::default()).expect("open");
    let indexed = db.create_tenant("indexed").expect("tenant");
    let builtin = db.create_tenant("builtin").expect("tenant");
    for t in [&indexed, &builtin] {
        load(t, &data).await;
        load_rest(t, &moments, &edges);
    }
    for index in [
        "CREATE INDEX idx_role ON entities ((properties->>'role'))",
        "CREATE INDEX idx_tags ON entities USING gin ((properties->'tags'))",
        "CREATE INDEX idx_name ON entities (name)",
        "CREATE INDEX idx_kind ON moments ((metadata->>'kind'))",
    ] {
        indexed.sql(index).await.expect(index);
    }
    for q in 0..queries {
        for (family, (ours, theirs)) in [
            ("moments", moment_query(&mut rng, &data)),
            ("graph", graph_query(&mut rng, &data)),
        ] {
            let expected = sqlite_rows(&sqlite, &theirs);
            for t in [&indexed, &builtin] {
                let got = rows(t, &ours).await;
                assert_eq!(
                    got,
                    expected,
                    "{} seed {seed}, {family} {q}: {ours}",
                    t.id()
                );
            }
        }
    }
}
