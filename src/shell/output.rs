//! Shell: how results are printed (an aligned table, CSV, TSV, JSON, NDJSON), the
//! same for query results and for what `\d` shows.

use std::io::Write;
use std::sync::Arc;

use clap::ValueEnum;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

use crate::error::{Error, Result};
use crate::session::QueryResult;

/// How result rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table (at most `--maxrows` rows).
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// Tab-separated values with a header line.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

impl std::str::FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        <Format as ValueEnum>::from_str(s.trim(), true).map_err(|_| {
            Error::invalid(format!(
                "unknown format '{}' (choose table, csv, tsv, json or ndjson)",
                s.trim()
            ))
        })
    }
}

/// Output settings, changed by `\format`, `\maxrows`, `\timing` and `\quiet`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    /// Rows a table shows at most (`None`: all).
    pub max_rows: Option<usize>,
    /// The footer after every result (rows and time), also when not on a terminal.
    pub timing: bool,
    /// No footer on a terminal either.
    pub quiet: bool,
}

/// A row limit as typed: a count, or `inf` / `0` for all rows.
pub fn parse_max_rows(text: &str) -> Result<Option<usize>> {
    match text.trim() {
        "inf" | "all" | "0" => Ok(None),
        n => n
            .parse::<usize>()
            .map(Some)
            .map_err(|_| Error::invalid(format!("a row limit is a number or inf, not '{n}'"))),
    }
}

/// The footer after a result, as datafusion-cli prints it.
pub fn footer(rows: usize, elapsed: std::time::Duration) -> String {
    format!(
        "{rows} row{} fetched. Elapsed {:.3} seconds.",
        if rows == 1 { "" } else { "s" },
        elapsed.as_secs_f64()
    )
}

/// Writes a statement's result in the chosen format. A result without rows still shows
/// its columns (the table's header and `(0 rows)`, CSV's header line); a statement that
/// returns no columns (an index command) writes nothing.
pub fn write_result(out: &mut dyn Write, result: &QueryResult, settings: &Settings) -> Result<()> {
    let rows = result.num_rows();
    let io = |e: std::io::Error| Error::Storage(format!("cannot write output: {e}"));
    let arrow = |e: datafusion::arrow::error::ArrowError| Error::Query(e.to_string());
    if result.schema.fields().is_empty() {
        return Ok(());
    }
    // The writers take their columns from the first batch: an empty result gets one.
    let empty = [RecordBatch::new_empty(Arc::clone(&result.schema))];
    let batches: &[RecordBatch] = if result.is_empty() { &empty } else { result };
    match settings.format {
        Format::Table => {
            let shown = settings.max_rows.unwrap_or(usize::MAX).min(rows);
            let table = pretty_format_batches_with_schema(
                Arc::clone(&result.schema),
                &first_rows(batches, shown),
            )
            .map_err(arrow)?;
            writeln!(out, "{table}").map_err(io)?;
            if rows == 0 {
                writeln!(out, "(0 rows)").map_err(io)?;
            } else if shown < rows {
                writeln!(out, "({rows} rows, the first {shown} shown; see \\maxrows)")
                    .map_err(io)?;
            }
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if settings.format == Format::Tsv {
                b'\t'
            } else {
                b','
            };
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_delimiter(delimiter)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(arrow)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(arrow)?;
            }
            writer.finish().map_err(arrow)?;
            writeln!(out).map_err(io)?;
        }
        Format::Ndjson => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch).map_err(arrow)?;
            }
            writer.finish().map_err(arrow)?;
        }
    }
    out.flush().map_err(io)
}

fn first_rows(batches: &[RecordBatch], n: usize) -> Vec<RecordBatch> {
    let mut left = n;
    let mut out = Vec::new();
    for batch in batches {
        if left == 0 {
            break;
        }
        let take = left.min(batch.num_rows());
        out.push(batch.slice(0, take));
        left -= take;
    }
    if out.is_empty() {
        out.extend(batches.first().map(|b| b.slice(0, 0)));
    }
    out
}
