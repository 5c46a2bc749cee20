//! `remdb demo`: a small REM memory (people, a project, documents with embeddings,
//! moments) and the statements that show what remdb is for: a vector search, the same
//! search filtered by metadata with its EXPLAIN, a traversal and a time window.

use std::path::Path;

use crate::error::Result;
use crate::session::{Batch, Db, DbOptions, Policy, Tenant};
use crate::storage::{Edge, Entity, Moment, Resource};

/// Dimensions of the demo's embeddings.
const DIMENSIONS: usize = 64;

/// A stand-in for an embedding model, so that the demo needs none: each word of the
/// text (lower case, letters and digits) and each of its three-letter pieces adds 1 to
/// one of [`DIMENSIONS`] slots chosen by its FNV-1a hash. Texts that share words, or
/// parts of words ("run", "runs"), point the same way.
pub fn embed(text: &str) -> Vec<f32> {
    let slot = |piece: &str| {
        let hash = piece.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % DIMENSIONS as u64) as usize
    };
    let mut v = vec![0f32; DIMENSIONS];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        v[slot(&word)] += 1.0;
        let padded: Vec<char> = format!(" {word} ").chars().collect();
        for piece in padded.windows(3) {
            v[slot(&piece.iter().collect::<String>())] += 0.5;
        }
    }
    // A text without words gets a vector that is not zero.
    if v.iter().all(|x| *x == 0.0) {
        v[0] = 1.0;
    }
    v
}

/// A vector as an SQL array literal.
fn literal(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", items.join(", "))
}

/// What the demo's vector search asks.
const QUESTION: &str = "Where does SQL run?";

/// The demo's statements, with the question's embedding in place.
fn statements() -> Vec<(&'static str, String)> {
    let q = literal(&embed(QUESTION));
    vec![
        (
            "people and their roles (a JSON property)",
            "SELECT name, type, properties->>'role' AS role FROM entities \
             WHERE type = 'person' ORDER BY name"
                .into(),
        ),
        (
            "vector search: the chunks nearest to \"Where does SQL run?\"",
            format!(
                "SELECT id, content, round(score, 3) AS score \
                 FROM vector_similar('resources', {q}, 3)"
            ),
        ),
        (
            "the same search, only English chunks: the filter is applied inside the search",
            format!(
                "SELECT id, metadata->>'language' AS language, round(score, 3) AS score \
                 FROM vector_similar('resources', {q}, 3) \
                 WHERE metadata->>'language' = 'en'"
            ),
        ),
        (
            "its plan: the filter reads the JSON index idx_language inside the search",
            format!(
                "EXPLAIN SELECT id FROM vector_similar('resources', {q}, 3) \
                 WHERE metadata->>'language' = 'en'"
            ),
        ),
        (
            "graph: who and what Grace reaches in two hops",
            "SELECT id, name, depth, edge_type, path FROM traverse('grace', 'out', 2) \
             ORDER BY depth, id"
                .into(),
        ),
        (
            "time window: the moments of the first two days of 2026, with their people",
            "SELECT id, type, timestamp, entity_refs FROM moments \
             WHERE timestamp >= TIMESTAMP '2026-01-01T00:00:00Z' \
               AND timestamp < TIMESTAMP '2026-01-03T00:00:00Z' ORDER BY timestamp"
                .into(),
        ),
    ]
}

/// Loads the sample into the database at `path` (once) and runs the statements.
pub async fn run(path: &Path) -> Result<()> {
    let db = Db::open(path, DbOptions::default())?;
    let tenant = if db.has_tenant("demo") {
        db.tenant("demo")?
    } else {
        db.create_tenant("demo")?
    }
    .with_policy(Policy::Operator);
    if tenant.count(crate::Table::Entities)? == 0 {
        load_sample(&tenant)?;
        tenant
            .sql("CREATE INDEX idx_language ON resources ((metadata->>'language'))")
            .await?;
        println!(
            "loaded sample data into {} (tenant 'demo'; embeddings are hashed words)\n",
            path.display()
        );
    }
    let q = literal(&embed(QUESTION));
    for (what, sql) in statements() {
        let shown = sql.replace(&q, &format!("<embed({QUESTION:?})>"));
        println!("-- {what}\n> {shown}");
        super::run_script(&tenant, &sql).await?;
        println!();
    }
    println!("try: remdb shell --path {} --tenant demo", path.display());
    Ok(())
}

/// A small REM graph: people, a project, documents and the moments that tie them.
fn load_sample(tenant: &Tenant) -> Result<()> {
    let person = |id: &str, name: &str, role: &str, aliases: &[&str]| Entity {
        id: id.into(),
        entity_type: "person".into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        properties: format!(r#"{{"role":"{role}","team":"platform"}}"#),
        ..Default::default()
    };
    let edge = |src: &str, ty: &str, dst: &str| Edge {
        src: src.into(),
        dst: dst.into(),
        edge_type: ty.into(),
        ..Default::default()
    };
    let chunk = |i: i64, language: &str, text: &str| Resource {
        id: format!("design-{i}"),
        uri: Some("doc://remdb/design".into()),
        chunk_index: i,
        content: text.into(),
        metadata: format!(r#"{{"language":"{language}","tags":["design"]}}"#),
        embedding: Some(embed(text)),
        ..Default::default()
    };
    let day = 86_400_000_000i64;
    let t0 = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let moment = |id: &str, ty: &str, offset_days: i64, refs: &[&str], ents: &[&str]| Moment {
        id: id.into(),
        timestamp: t0 + offset_days * day,
        end_timestamp: Some(t0 + offset_days * day + 3_600_000_000),
        moment_type: ty.into(),
        classifications: vec![ty.into()],
        resource_refs: refs.iter().map(|r| r.to_string()).collect(),
        entity_refs: ents.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    let batch = Batch::new()
        .insert(person(
            "ada",
            "Ada Lovelace",
            "engineer",
            &["Countess of Lovelace"],
        ))
        .insert(person(
            "grace",
            "Grace Hopper",
            "manager",
            &["Amazing Grace"],
        ))
        .insert(person("alan", "Alan Turing", "researcher", &[]))
        .insert(Entity {
            id: "remdb".into(),
            entity_type: "project".into(),
            name: "remdb".into(),
            properties: r#"{"status":"active"}"#.into(),
            ..Default::default()
        })
        .insert(edge("ada", "works_on", "remdb"))
        .insert(edge("grace", "works_on", "remdb"))
        .insert(edge("ada", "knows", "alan"))
        .insert(edge("grace", "manages", "ada"))
        .insert(chunk(
            0,
            "en",
            "remdb stores REM memory: resources, entities and moments.",
        ))
        .insert(chunk(1, "en", "Each tenant's rows live in RocksDB."))
        .insert(chunk(
            2,
            "en",
            "SQL runs on Apache DataFusion with index pushdown.",
        ))
        .insert(chunk(
            3,
            "en",
            "Vector search runs on a usearch HNSW index beside the rows.",
        ))
        .insert(chunk(
            4,
            "de",
            "SQL läuft auf DataFusion, die Indizes filtern vorher.",
        ))
        .insert(moment("m1", "meeting", 0, &["design-0"], &["ada", "grace"]))
        .insert(moment(
            "m2",
            "conversation",
            1,
            &["design-1"],
            &["ada", "alan"],
        ))
        .insert(moment("m3", "meeting", 7, &["design-2"], &["grace"]));
    tenant.write(batch)?;
    Ok(())
}
