//! Front end: `remdb shell`, an interactive SQL shell bound to one tenant (in the manner
//! of datafusion-cli).
//!
//! Statements end with `;` and may span lines; lines starting with `\` are shell
//! commands (`\?` lists them). On a terminal the shell has line editing and a persistent
//! history, and Ctrl-C cancels the running query (or clears the line being typed) without
//! leaving the shell. Piped standard input is read the same way, without prompts; an
//! error prints and the shell goes on, and the exit status tells whether any statement
//! failed.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;
use rustyline::error::ReadlineError;

use crate::error::{Error, Result};
use crate::session::{QueryResult, Tenant};
use crate::storage::Table;

/// How result rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table (at most `--maxrows` rows).
    Table,
    /// Comma-separated values with a header line.
    Csv,
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
                "unknown format '{}' (choose table, csv, json or ndjson)",
                s.trim()
            ))
        })
    }
}

/// Output settings, changed by `\format` and `\timing`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    /// Rows a table shows at most (`None`: all).
    pub max_rows: Option<usize>,
    pub timing: bool,
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
                writeln!(out, "({rows} rows, the first {shown} shown; see --maxrows)")
                    .map_err(io)?;
            }
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
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

/// True when `text` ends with a `;` outside quotes and comments: the statement is whole.
pub fn statement_complete(text: &str) -> bool {
    #[derive(PartialEq)]
    enum State {
        Code,
        Single,
        Double,
        Line,
        Block,
    }
    let mut state = State::Code;
    let mut last_code: Option<char> = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match state {
            State::Code => match c {
                '\'' => state = State::Single,
                '"' => state = State::Double,
                '-' if next == Some('-') => {
                    state = State::Line;
                    i += 1;
                }
                '/' if next == Some('*') => {
                    state = State::Block;
                    i += 1;
                }
                c if c.is_whitespace() => {}
                c => last_code = Some(c),
            },
            // A doubled quote inside a literal is an escaped quote.
            State::Single if c == '\'' => {
                if next == Some('\'') {
                    i += 1;
                } else {
                    state = State::Code;
                    last_code = Some('\'');
                }
            }
            State::Double if c == '"' => {
                state = State::Code;
                last_code = Some('"');
            }
            State::Line if c == '\n' => state = State::Code,
            State::Block if c == '*' && next == Some('/') => {
                state = State::Code;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    matches!(state, State::Code | State::Line) && last_code == Some(';')
}

/// What a line of input did.
enum Step {
    Continue,
    Quit,
}

/// One shell: a tenant, the output settings and the statement being typed.
pub struct Shell {
    tenant: Tenant,
    pub settings: Settings,
    buffer: String,
    /// Statements (or commands) that failed so far.
    errors: usize,
    interactive: bool,
}

/// How long a cancelled statement is waited for before the prompt comes back.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

const HELP: &str = "\
Statements end with ';' and may span lines. Shell commands:
  \\d              list the tables and table functions
  \\d NAME         describe a table (columns and indexes)
  \\timing [on|off] show how long each statement took
  \\format FORMAT  print results as table, csv, json or ndjson
  \\?              this help
  \\q              quit
REM verbs work as statements: LOOKUP 'k1', 'k2'; TRAVERSE FROM 'id' DEPTH 2 DIRECTION out;
SEARCH <vector> IN resources LIMIT 10;";

impl Shell {
    pub fn new(tenant: Tenant, settings: Settings) -> Shell {
        Shell {
            tenant,
            settings,
            buffer: String::new(),
            errors: 0,
            interactive: false,
        }
    }

    /// Runs `;`-separated statements (from `-c` or `-f`), stopping at the first error.
    pub async fn run_script(&mut self, script: &str) -> Result<()> {
        let statements = crate::session::split_statements(script)?;
        if statements.is_empty() {
            return Err(Error::invalid("no SQL statement given"));
        }
        for sql in statements {
            self.run_statement(&sql).await?;
        }
        Ok(())
    }

    /// Reads statements from standard input until `\q` or end of input: with line editing
    /// and history on a terminal, plainly from a pipe.
    pub async fn run_stdin(&mut self) -> Result<()> {
        if std::io::stdin().is_terminal() {
            self.interactive = true;
            self.run_terminal().await
        } else {
            let mut line = String::new();
            loop {
                line.clear();
                let read = std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| Error::invalid(format!("cannot read standard input: {e}")))?;
                if read == 0 {
                    break;
                }
                if let Step::Quit = self.feed(line.trim_end_matches(['\n', '\r'])).await {
                    return Ok(());
                }
            }
            self.finish_input().await;
            Ok(())
        }
    }

    async fn run_terminal(&mut self) -> Result<()> {
        let config = rustyline::Config::builder()
            .max_history_size(10_000)
            .map_err(|e| Error::invalid(e.to_string()))?
            .auto_add_history(false)
            .build();
        let mut editor = rustyline::DefaultEditor::with_config(config)
            .map_err(|e| Error::invalid(format!("cannot start line editing: {e}")))?;
        let history = history_path();
        if let Some(path) = &history {
            // A missing history file is the first run, not an error.
            let _ = editor.load_history(path);
        }
        println!(
            "remdb shell, tenant '{}'. Statements end with ';'. \\? for help, \\q to quit.",
            self.tenant.id()
        );
        loop {
            let prompt = if self.buffer.is_empty() {
                format!("{}> ", self.tenant.id())
            } else {
                format!("{}-> ", " ".repeat(self.tenant.id().len()))
            };
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if let Step::Quit = self.feed(&line).await {
                        break;
                    }
                }
                // Ctrl-C while typing drops the statement being typed.
                Err(ReadlineError::Interrupted) => {
                    self.buffer.clear();
                    println!("^C");
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(Error::invalid(format!("cannot read input: {e}"))),
            }
        }
        if let Some(path) = &history
            && let Err(e) = editor.save_history(path)
        {
            eprintln!("warning: cannot save history to {}: {e}", path.display());
        }
        Ok(())
    }

    /// Handles one line: a shell command, or part of a statement.
    async fn feed(&mut self, line: &str) -> Step {
        let trimmed = line.trim();
        if self.buffer.trim().is_empty() && trimmed.starts_with('\\') {
            self.buffer.clear();
            return match self.command(trimmed).await {
                Ok(step) => step,
                Err(e) => {
                    self.report(&e);
                    Step::Continue
                }
            };
        }
        if !self.buffer.is_empty() {
            self.buffer.push('\n');
        }
        self.buffer.push_str(line);
        if statement_complete(&self.buffer) {
            self.run_buffer().await;
        }
        Step::Continue
    }

    /// At the end of piped input, a statement without its final `;` still runs.
    async fn finish_input(&mut self) {
        if !self.buffer.trim().is_empty() {
            self.run_buffer().await;
        }
    }

    /// Runs the statements collected so far, up to the first that fails.
    async fn run_buffer(&mut self) {
        let text = std::mem::take(&mut self.buffer);
        match crate::session::split_statements(&text) {
            Ok(statements) => {
                for sql in statements {
                    if let Err(e) = self.run_statement(&sql).await {
                        self.report(&e);
                        break;
                    }
                }
            }
            Err(e) => self.report(&e),
        }
    }

    /// Statements that failed, for the exit status of a piped session (an interactive
    /// session's errors were seen and answered by its user: it exits with 0).
    pub fn failures(&self) -> usize {
        if self.interactive { 0 } else { self.errors }
    }

    fn report(&mut self, e: &Error) {
        self.errors += 1;
        eprintln!("error: {e}");
    }

    /// Runs one statement and prints its result. On a terminal, Ctrl-C cancels it and
    /// gives the prompt back within [`CANCEL_WAIT`].
    async fn run_statement(&mut self, sql: &str) -> Result<()> {
        let started = Instant::now();
        let tenant = self.tenant.clone();
        let owned = sql.to_string();
        let mut task = tokio::spawn(async move { tenant.sql(&owned).await });
        let batches = if self.interactive {
            tokio::select! {
                joined = &mut task => joined,
                _ = tokio::signal::ctrl_c() => {
                    // Dropping the query's streams stops its scans at their next batch:
                    // wait a moment for that, so that the next statement does not run
                    // beside it. An operator inside one long computation (a function
                    // over a huge value) does not look up until it ends: the prompt
                    // comes back anyway, and that computation ends in the background.
                    task.abort();
                    if tokio::time::timeout(CANCEL_WAIT, &mut task).await.is_err() {
                        eprintln!(
                            "(the cancelled query's current computation finishes in the \
                             background; its result is dropped)"
                        );
                    }
                    return Err(Error::Cancelled("query cancelled by Ctrl-C".into()));
                }
            }
        } else {
            (&mut task).await
        }
        .map_err(|e| Error::Query(format!("query task failed: {e}")))??;
        let elapsed = started.elapsed();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        write_result(&mut out, &batches, &self.settings)?;
        if self.settings.timing {
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            eprintln!(
                "{rows} row{} in {:.3} ms",
                if rows == 1 { "" } else { "s" },
                elapsed.as_secs_f64() * 1e3
            );
        }
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Step> {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let arg = words.next();
        if words.next().is_some() {
            return Err(Error::invalid(format!(
                "too many arguments to {name} (\\? for help)"
            )));
        }
        match (name, arg) {
            ("\\q" | "\\quit", None) => return Ok(Step::Quit),
            ("\\?" | "\\h" | "\\help", None) => println!("{HELP}"),
            ("\\d", None) => self.list_tables()?,
            ("\\d", Some(table)) => self.describe(table)?,
            ("\\timing", arg) => {
                self.settings.timing = match arg {
                    None => !self.settings.timing,
                    Some("on") => true,
                    Some("off") => false,
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "\\timing takes on or off, not '{other}'"
                        )));
                    }
                };
                println!(
                    "timing is {}",
                    if self.settings.timing { "on" } else { "off" }
                );
            }
            ("\\format", Some(format)) => {
                self.settings.format = format.parse()?;
                println!("format is {format}");
            }
            ("\\format", None) => println!("format is {:?}", self.settings.format),
            _ => {
                return Err(Error::invalid(format!(
                    "unknown command {line} (\\? for help)"
                )));
            }
        }
        Ok(Step::Continue)
    }

    fn list_tables(&self) -> Result<()> {
        println!("tables:");
        // (No row counts: counting reads every key of a table.)
        for table in Table::ALL {
            let columns = crate::query::convert::table_schema(table).fields().len();
            println!("  {:<10} {columns} columns", table.name());
        }
        println!("table functions:");
        for (name, what) in TABLE_FUNCTIONS {
            println!("  {name:<48} {what}");
        }
        Ok(())
    }

    fn describe(&self, name: &str) -> Result<()> {
        let table = Table::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "table '{name}' (the tables are resources, entities, edges, moments)"
                ))
            })?;
        let schema = crate::query::convert::table_schema(table);
        println!("{:<20} {:<40} nullable", "column", "type");
        for field in schema.fields() {
            println!(
                "{:<20} {:<40} {}",
                field.name(),
                field.data_type().to_string(),
                if field.is_nullable() { "yes" } else { "no" }
            );
        }
        let indexes: Vec<_> = self
            .tenant
            .list_indexes()?
            .into_iter()
            .filter(|d| d.table == table.name())
            .collect();
        if !indexes.is_empty() {
            println!("declared indexes:");
            for index in indexes {
                println!(
                    "  {} on {}->{} ({:?})",
                    index.name,
                    index.column,
                    index.path.join("->"),
                    index.kind
                );
            }
        }
        Ok(())
    }
}

const TABLE_FUNCTIONS: [(&str, &str); 4] = [
    (
        "vector_similar(table, query, k [, min_score, ef])",
        "nearest rows by embedding",
    ),
    (
        "traverse(start_id, direction, max_depth [, types])",
        "entities reached over edges",
    ),
    (
        "lookup(key, ...)",
        "entities by name or alias, resources by uri",
    ),
    ("list_indexes()", "the declared JSON indexes"),
];

/// `$REMDB_HISTORY`, else `~/.remdb_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REMDB_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".remdb_history"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        assert!(statement_complete("SELECT 1;"));
        assert!(statement_complete("SELECT 1;  \n"));
        assert!(statement_complete("SELECT 1; -- done"));
        assert!(statement_complete("SELECT\n 'a;b'\n;"));
        assert!(statement_complete("SELECT 'it''s';"));
        assert!(!statement_complete("SELECT 1"));
        assert!(!statement_complete("SELECT 'a;"));
        assert!(!statement_complete("SELECT 'it'';"));
        assert!(!statement_complete("SELECT 1 -- ;"));
        assert!(!statement_complete("SELECT 1 /* ; */"));
        assert!(!statement_complete("SELECT \"a;"));
        assert!(!statement_complete(""));
    }

    #[test]
    fn formats_parse_case_insensitively_and_refuse_others() {
        assert_eq!("CSV".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("ndjson".parse::<Format>(), Ok(Format::Ndjson));
        let err = "xml".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("unknown format 'xml'"), "{err}");
    }
}
