//! Runs every `sql/**/*.slt` file, each on a fresh database with a tenant `t`, as the
//! operator at a terminal would (`Policy::Operator`: the files may `SET` the EXPLAIN
//! format).
//! `REMDB_SLT_COMPLETE=1 cargo test --test integration slt` rewrites the expected output
//! (read the diff before committing it).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};

use remdb::{Policy, Tenant};

struct SltDb {
    tenant: Tenant,
}

/// Formats batches as rows of cells: NULL as `NULL`, empty text as `(empty)`; a cell with
/// several lines (EXPLAIN) becomes one row per line.
pub fn render(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| {
                    let s = f.value(row).to_string();
                    if s.is_empty() {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect();
            let lines = cells.iter().map(|c| c.lines().count()).max().unwrap_or(1);
            if lines <= 1 {
                out.push(cells);
                continue;
            }
            for i in 0..lines {
                let line: Vec<String> = cells
                    .iter()
                    .map(|c| {
                        c.lines()
                            .nth(i)
                            .unwrap_or(if i == 0 { c } else { "" })
                            .trim_end()
                            .to_string()
                    })
                    .collect();
                // Continuation lines keep only their text: a blank cell would add a
                // leading space, and a blank line would end the record in an .slt file.
                let line: Vec<String> = line.into_iter().filter(|c| !c.is_empty()).collect();
                if !line.is_empty() {
                    out.push(line);
                }
            }
        }
    }
    out
}

#[async_trait]
impl sqllogictest::AsyncDB for SltDb {
    type Error = remdb::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let batches = self.tenant.sql(sql).await?;
        let head = sql.trim_start().to_ascii_uppercase();
        let is_dml = ["INSERT", "UPDATE", "DELETE"]
            .iter()
            .any(|k| head.starts_with(k));
        if is_dml {
            let rows = render(&batches);
            let count = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Ok(DBOutput::StatementComplete(count));
        }
        let columns = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows: render(&batches),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "remdb"
    }
}

fn slt_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("sql dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            slt_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files = Vec::new();
    slt_files(&root, &mut files);
    assert!(files.len() >= 5, "expected the sql/ files, found {files:?}");
    let complete = std::env::var("REMDB_SLT_COMPLETE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for file in &files {
        let (_dir, _db, tenant) = super::fresh("t");
        let tenant = tenant.with_policy(Policy::Operator);
        let mut runner = sqllogictest::Runner::new(move || {
            let tenant = tenant.clone();
            async move { Ok(SltDb { tenant }) }
        });
        if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{}", file.display(), e.display(true)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
