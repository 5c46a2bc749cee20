//! A bounded SQL generator over the parser, the planner, our rewrites and execution:
//! random statements (expressions of every operator, functions, JSON paths, lists,
//! casts, subqueries, the REM verbs and table functions, DML) and their mangled forms
//! (a token dropped, doubled or swapped) run against a tenant with rows, declared
//! indexes and vectors. None may panic or abort the process, and every failure must be
//! an error of ours with a message, not a DataFusion internal error.
//!
//! A fixed seed runs in CI (`REMDB_FUZZ_STATEMENTS`, 1,500 by default); `REMDB_FUZZ_SEED`
//! and a larger count run more.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Edge, Entity, Resource, VectorOptions};

use super::fresh;

const COLUMNS: [&str; 8] = [
    "id",
    "type",
    "name",
    "properties",
    "created_at",
    "aliases",
    "properties->>'role'",
    "properties->'n'",
];
const LITERALS: [&str; 16] = [
    "1",
    "-1",
    "0",
    "2.5",
    "1e308",
    "9223372036854775807",
    "'ada'",
    "''",
    "'o''neil'",
    "NULL",
    "TRUE",
    "[1, 2]",
    "['a', NULL]",
    "TIMESTAMP '2024-01-01T00:00:00Z'",
    "INTERVAL '1 day'",
    "'{\"a\": 1}'",
];
const BINARY: [&str; 18] = [
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "<>",
    "<",
    ">=",
    "AND",
    "OR",
    "||",
    "LIKE",
    "ILIKE",
    "->>",
    "->",
    "?",
    "IS DISTINCT FROM",
];
const FUNCTIONS: [&str; 16] = [
    "lower",
    "upper",
    "length",
    "coalesce",
    "abs",
    "round",
    "repeat",
    "lpad",
    "array_length",
    "cardinality",
    "json_get_str",
    "json_get_int",
    "date_trunc",
    "concat",
    "substr",
    "nullif",
];
const TABLES: [&str; 4] = ["entities", "resources", "moments", "edges"];

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn expr(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.random_bool(0.3) {
            return if self.rng.random_bool(0.5) {
                self.pick(&COLUMNS).to_string()
            } else {
                self.pick(&LITERALS).to_string()
            };
        }
        match self.rng.random_range(0..9) {
            0..=2 => {
                let (a, b) = (self.expr(depth - 1), self.expr(depth - 1));
                format!("({a} {} {b})", self.pick(&BINARY))
            }
            3 => {
                let f = self.pick(&FUNCTIONS);
                let n = self.rng.random_range(0..4);
                let args: Vec<String> = (0..n).map(|_| self.expr(depth - 1)).collect();
                format!("{f}({})", args.join(", "))
            }
            4 => {
                let ty = self.pick(&["BIGINT", "VARCHAR", "DOUBLE", "TIMESTAMP", "BOOLEAN"]);
                format!("CAST({} AS {ty})", self.expr(depth - 1))
            }
            5 => {
                let items: Vec<String> = (0..self.rng.random_range(1..4))
                    .map(|_| self.expr(0))
                    .collect();
                let not = if self.rng.random_bool(0.5) {
                    "NOT "
                } else {
                    ""
                };
                format!("({} {not}IN ({}))", self.expr(depth - 1), items.join(", "))
            }
            6 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.expr(depth - 1),
                self.expr(depth - 1),
                self.expr(depth - 1)
            ),
            7 => format!(
                "({} BETWEEN {} AND {})",
                self.expr(depth - 1),
                self.expr(0),
                self.expr(0)
            ),
            _ => format!(
                "(SELECT count(*) FROM {} WHERE {})",
                self.pick(&TABLES),
                self.expr(depth - 1)
            ),
        }
    }

    /// A text value, mostly well typed.
    fn text(&mut self, depth: u32) -> String {
        if depth == 0 {
            return self
                .pick(&[
                    "name",
                    "type",
                    "id",
                    "properties->>'role'",
                    "'ada'",
                    "''",
                    "NULL",
                ])
                .to_string();
        }
        let a = self.text(depth - 1);
        match self.rng.random_range(0..6) {
            0 => format!("lower({a})"),
            1 => format!("concat({a}, {})", self.text(depth - 1)),
            2 => format!("substr({a}, {}, 2)", self.int(0)),
            3 => format!("coalesce({a}, 'x')"),
            4 => format!("({a} || {})", self.text(depth - 1)),
            _ => format!("CASE WHEN {} THEN {a} END", self.predicate(depth - 1)),
        }
    }

    /// An integer value, mostly well typed.
    fn int(&mut self, depth: u32) -> String {
        if depth == 0 {
            return self
                .pick(&[
                    "1",
                    "-3",
                    "0",
                    "42",
                    "NULL",
                    "CAST(properties->>'n' AS BIGINT)",
                ])
                .to_string();
        }
        match self.rng.random_range(0..6) {
            0 => format!("length({})", self.text(depth - 1)),
            1 => "json_get_int(properties, 'n')".to_string(),
            2 => format!(
                "({} {} {})",
                self.int(depth - 1),
                self.pick(&["+", "-", "*", "%"]),
                self.int(depth - 1)
            ),
            3 => format!("abs({})", self.int(depth - 1)),
            4 => "cardinality(aliases)".to_string(),
            _ => format!(
                "(SELECT count(*) FROM entities WHERE {})",
                self.predicate(depth - 1)
            ),
        }
    }

    /// A condition, mostly well typed; sometimes any expression at all.
    fn predicate(&mut self, depth: u32) -> String {
        if self.rng.random_bool(0.15) {
            return self.expr(depth);
        }
        let d = depth.saturating_sub(1);
        match self.rng.random_range(0..9) {
            0 => format!(
                "{} {} {}",
                self.text(d),
                self.pick(&["=", "<>", "<", ">="]),
                self.text(0)
            ),
            1 => format!(
                "{} {} {}",
                self.int(d),
                self.pick(&["=", "<>", "<", ">="]),
                self.int(0)
            ),
            2 => format!("{} IS {}NULL", self.text(d), self.pick(&["", "NOT "])),
            3 => format!(
                "{} {}IN ({}, {})",
                self.text(d),
                self.pick(&["", "NOT "]),
                self.text(0),
                self.text(0)
            ),
            4 => format!(
                "{} LIKE '{}'",
                self.text(d),
                self.pick(&["a%", "%", "_l%", "%''%"])
            ),
            5 => format!(
                "{} BETWEEN {} AND {}",
                self.int(d),
                self.int(0),
                self.int(0)
            ),
            6 if depth > 0 => format!(
                "({} {} {})",
                self.predicate(d),
                self.pick(&["AND", "OR"]),
                self.predicate(d)
            ),
            7 if depth > 0 => format!("NOT ({})", self.predicate(d)),
            _ => format!(
                "created_at >= TIMESTAMP '202{}-01-01T00:00:00Z'",
                self.rng.random_range(3..7)
            ),
        }
    }

    fn statement(&mut self) -> String {
        let depth = self.rng.random_range(1..5);
        match self.rng.random_range(0..12) {
            0..=4 => {
                let limit = if self.rng.random_bool(0.5) {
                    format!(" ORDER BY name LIMIT {}", self.rng.random_range(0..5))
                } else {
                    String::new()
                };
                let column = if self.rng.random_bool(0.5) {
                    self.text(depth)
                } else {
                    self.int(depth)
                };
                format!(
                    "SELECT id, {column} FROM entities WHERE {}{limit}",
                    self.predicate(depth)
                )
            }
            5 => format!(
                "SELECT {} AS x, count(*) FROM entities GROUP BY 1",
                if self.rng.random_bool(0.7) {
                    self.text(depth)
                } else {
                    self.expr(depth)
                }
            ),
            6 => format!(
                "SELECT id FROM vector_similar('resources', [{}, 0.5, 0.1], {}) WHERE {}",
                self.pick(&["0.2", "1", "-3", "NULL", "'x'"]),
                self.pick(&["1", "2", "0", "-1", "100000", "NULL"]),
                self.pick(&[
                    "metadata->>'language' = 'en'",
                    "content LIKE 'chunk%'",
                    "uri IN ('doc://1', 'doc://2')",
                    "id <> 'r1'",
                    "true",
                ])
            ),
            7 => format!(
                "SELECT id FROM traverse({}, {}, {})",
                self.pick(&["'ada'", "'nobody'", "NULL", "1"]),
                self.pick(&["'out'", "'in'", "'both'", "'up'"]),
                self.pick(&["0", "1", "3", "17", "-1"])
            ),
            8 => format!(
                "{} {}",
                self.pick(&["LOOKUP", "TRAVERSE FROM", "SEARCH"]),
                self.pick(&[
                    "'ada'",
                    "'ada' DEPTH 2",
                    "[0.1, 0.2, 0.3] IN resources LIMIT 2",
                    "'x', 'y'",
                    "",
                    "IN resources",
                ])
            ),
            9 => format!(
                "UPDATE entities SET name = {} WHERE {}",
                self.text(1),
                self.predicate(depth)
            ),
            10 => format!(
                "DELETE FROM edges WHERE {}",
                self.pick(&["src = 'nobody'", "edge_type IN ('x')", "dst IS NULL"])
            ),
            _ => format!(
                "INSERT INTO entities (id, type, name, properties) VALUES ({}, {}, {}, {})",
                self.pick(&["'n1'", "NULL", "''", "'ada'", "concat('g', 'x')"]),
                self.text(0),
                self.text(1),
                self.pick(&["'{}'", "'{\"role\": \"x\"}'", "'[1]'", "NULL", "'nope'"])
            ),
        }
    }

    /// The statement with one of its words dropped, doubled or swapped with the next.
    fn mangle(&mut self, sql: &str) -> String {
        let mut words: Vec<&str> = sql.split(' ').collect();
        if words.len() < 2 {
            return sql.to_string();
        }
        let i = self.rng.random_range(0..words.len() - 1);
        match self.rng.random_range(0..3) {
            0 => {
                words.remove(i);
            }
            1 => words.insert(i, words[i]),
            _ => words.swap(i, i + 1),
        }
        words.join(" ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_statements_never_panic_and_fail_with_clear_errors() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seed = env("REMDB_FUZZ_SEED", 7);
    let count = env("REMDB_FUZZ_STATEMENTS", 1500);
    let (_dir, _db, t) = fresh("fuzz");
    t.configure_vectors(VectorOptions {
        dimensions: Some(3),
        ..Default::default()
    })
    .unwrap();
    let mut batch = Batch::new();
    for (i, name) in ["Ada", "Alan", "Grace", "o'neil"].iter().enumerate() {
        batch = batch
            .insert(Entity {
                id: name.to_lowercase(),
                entity_type: "person".into(),
                name: name.to_string(),
                properties: format!(r#"{{"role": "r{i}", "n": {i}}}"#),
                ..Default::default()
            })
            .insert(Resource {
                id: format!("r{i}"),
                uri: Some(format!("doc://{i}")),
                content: format!("chunk {i}"),
                metadata: r#"{"language": "en"}"#.into(),
                embedding: Some(vec![i as f32, 1.0, 0.5]),
                ..Default::default()
            });
    }
    batch = batch.insert(Edge {
        src: "ada".into(),
        dst: "alan".into(),
        edge_type: "knows".into(),
        ..Default::default()
    });
    t.write(batch).unwrap();
    t.sql("CREATE INDEX idx_role ON entities ((properties->>'role'))")
        .await
        .unwrap();

    let mut generator = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let (mut ok, mut failed) = (0, 0);
    let mut unclear = Vec::new();
    for _ in 0..count {
        let mut sql = generator.statement();
        if generator.rng.random_bool(0.25) {
            sql = generator.mangle(&sql);
        }
        use futures::FutureExt;
        let outcome = std::panic::AssertUnwindSafe(t.sql(&sql))
            .catch_unwind()
            .await;
        let Ok(outcome) = outcome else {
            unclear.push(format!("{sql}\n  -> PANIC"));
            continue;
        };
        match outcome {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                let message = e.to_string();
                if message.trim().is_empty()
                    || message.contains("Internal error")
                    || message.contains("likely caused by a bug")
                {
                    unclear.push(format!("{sql}\n  -> {message}"));
                }
            }
        }
    }
    eprintln!("fuzz seed {seed}: {ok} ran, {failed} refused with an error");
    assert!(
        ok > count / 10,
        "too few statements ran ({ok} of {count}): the generator is off"
    );
    assert!(
        unclear.is_empty(),
        "{} statements failed with an internal error:\n{}",
        unclear.len(),
        unclear.join("\n")
    );
}
