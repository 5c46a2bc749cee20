//! Front end: `remdb shell`, an interactive SQL shell bound to one tenant (in the manner
//! of datafusion-cli).
//!
//! Statements end with `;` and may span lines; lines starting with `\` are shell
//! commands (`\?` lists them). On a terminal the shell has line editing and a persistent
//! history, and Ctrl-C cancels the running query (or clears the line being typed) without
//! leaving the shell. Piped standard input is read the same way, without prompts; an
//! error prints and the shell goes on, and the exit status tells whether any statement
//! failed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rustyline::error::ReadlineError;

mod editor;
mod output;
use editor::{SqlHelper, outside_quotes, statement_complete};
pub use output::{Format, Settings, footer, parse_max_rows, write_result};

use crate::error::{Error, Result};
use crate::session::{QueryResult, Tenant};

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
Statements end with ';' and may span lines (one history entry). Tab completes keywords,
tables, columns, functions and commands. Shell commands (also inside a statement):
  \\d                 list the tables and table functions
  \\d NAME            describe a table: its columns and indexes
  \\i FILE            run the statements of a file
  \\h FUNCTION        what a function does and how it is called
  \\format FORMAT     print results as table, csv, tsv, json or ndjson
  \\maxrows N|inf     rows a table shows at most
  \\timing [on|off]   the footer (rows, time) also when not on a terminal
  \\quiet [on|off]    no footer
  \\?                 this help
  \\q                 quit
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
        let mut editor =
            rustyline::Editor::<SqlHelper, rustyline::history::DefaultHistory>::with_config(config)
                .map_err(|e| Error::invalid(format!("cannot start line editing: {e}")))?;
        editor.set_helper(Some(SqlHelper::new(&self.tenant)));
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
            if let Some(helper) = editor.helper_mut() {
                helper.pending.clone_from(&self.buffer);
            }
            // The validator holds the lines of a statement together: one input, one
            // history entry.
            match editor.readline(&prompt) {
                Ok(input) => {
                    if !input.trim().is_empty() {
                        let _ = editor.add_history_entry(input.as_str());
                    }
                    let mut quit = false;
                    for line in input.split('\n') {
                        if let Step::Quit = self.feed(line).await {
                            quit = true;
                            break;
                        }
                    }
                    if quit {
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

    /// Handles one line: a shell command (also inside an unfinished statement, which
    /// it leaves as it is, as psql does: `\q` there quits), or part of a statement.
    async fn feed(&mut self, line: &str) -> Step {
        let trimmed = line.trim();
        if trimmed.starts_with('\\') && outside_quotes(&self.buffer) {
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
        let result = if self.interactive {
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
        self.print(&result, started.elapsed())
    }

    /// Prints a result in the chosen format, and the footer on a terminal (unless
    /// `\quiet`) or with `\timing`.
    fn print(&self, result: &QueryResult, elapsed: std::time::Duration) -> Result<()> {
        write_result(&mut std::io::stdout().lock(), result, &self.settings)?;
        let footer_wanted = self.settings.timing || (self.interactive && !self.settings.quiet);
        if footer_wanted && !result.schema.fields().is_empty() {
            println!("{}", footer(result.num_rows(), elapsed));
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
        let on_off = |arg: Option<&str>, now: bool, what: &str| match arg {
            None => Ok(!now),
            Some("on") => Ok(true),
            Some("off") => Ok(false),
            Some(other) => Err(Error::invalid(format!(
                "\\{what} takes on or off, not '{other}'"
            ))),
        };
        match (name, arg) {
            ("\\q" | "\\quit", None) => return Ok(Step::Quit),
            ("\\?" | "\\h" | "\\help", None) => println!("{HELP}"),
            ("\\h" | "\\help", Some(function)) => self.function_help(function)?,
            ("\\d", None) => self.list_tables().await?,
            ("\\d", Some(table)) => self.describe(table).await?,
            ("\\i" | "\\include", Some(file)) => {
                let script = std::fs::read_to_string(file)
                    .map_err(|e| Error::invalid(format!("cannot read {file}: {e}")))?;
                for sql in crate::session::split_statements(&script)? {
                    self.run_statement(&sql).await?;
                }
            }
            ("\\timing", arg) => {
                self.settings.timing = on_off(arg, self.settings.timing, "timing")?;
                println!(
                    "timing is {}",
                    if self.settings.timing { "on" } else { "off" }
                );
            }
            ("\\quiet", arg) => {
                self.settings.quiet = on_off(arg, self.settings.quiet, "quiet")?;
                println!(
                    "quiet is {}",
                    if self.settings.quiet { "on" } else { "off" }
                );
            }
            ("\\format", Some(format)) => {
                self.settings.format = format.parse()?;
                println!("format is {format}");
            }
            ("\\format", None) => println!("format is {:?}", self.settings.format),
            ("\\maxrows", Some(rows)) => {
                self.settings.max_rows = parse_max_rows(rows)?;
                match self.settings.max_rows {
                    Some(n) => println!("maxrows is {n}"),
                    None => println!("maxrows is inf"),
                }
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown command {line} (\\? for help)"
                )));
            }
        }
        Ok(Step::Continue)
    }

    /// `\d`: the tables (from `information_schema`), then the table functions.
    async fn list_tables(&self) -> Result<()> {
        let tables = self
            .tenant
            .sql(
                "SELECT table_name, table_type FROM information_schema.tables \
                 WHERE table_schema = 'public' ORDER BY table_name",
            )
            .await?;
        write_result(&mut std::io::stdout().lock(), &tables, &self.settings)?;
        let (names, what): (Vec<&str>, Vec<&str>) = TABLE_FUNCTIONS.iter().copied().unzip();
        let schema = Arc::new(Schema::new(vec![
            Field::new("table_function", DataType::Utf8, false),
            Field::new("returns", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(what)),
            ],
        )
        .map_err(|e| Error::Query(e.to_string()))?;
        let functions = QueryResult::new(schema, vec![batch]);
        write_result(&mut std::io::stdout().lock(), &functions, &self.settings)
    }

    /// `\d NAME`: a table's columns (from `information_schema`) and its indexes, built-in
    /// and declared (from `list_indexes()`).
    async fn describe(&self, name: &str) -> Result<()> {
        let name = name.trim_matches('"');
        let quoted = name.replace('\'', "''");
        let columns = self
            .tenant
            .sql(&format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = '{quoted}' \
                 ORDER BY ordinal_position"
            ))
            .await?;
        if columns.num_rows() == 0 {
            return Err(Error::NotFound(format!(
                "table '{name}' (\\d lists the tables)"
            )));
        }
        write_result(&mut std::io::stdout().lock(), &columns, &self.settings)?;
        let indexes = self
            .tenant
            .sql(&format!(
                "SELECT * FROM list_indexes() WHERE table_name = '{quoted}' ORDER BY name"
            ))
            .await?;
        write_result(&mut std::io::stdout().lock(), &indexes, &self.settings)
    }

    /// `\h NAME`: a function's documentation, as DataFusion keeps it.
    fn function_help(&self, name: &str) -> Result<()> {
        let state = self.tenant.context().state();
        let lower = name.to_lowercase();
        let doc = state
            .scalar_functions()
            .get(&lower)
            .and_then(|f| f.documentation().cloned())
            .or_else(|| {
                state
                    .aggregate_functions()
                    .get(&lower)
                    .and_then(|f| f.documentation().cloned())
            })
            .or_else(|| {
                state
                    .window_functions()
                    .get(&lower)
                    .and_then(|f| f.documentation().cloned())
            });
        if let Some(doc) = doc {
            println!("{name}: {}\n\n  {}", doc.description, doc.syntax_example);
            if let Some(example) = &doc.sql_example {
                println!("\n{example}");
            }
            return Ok(());
        }
        if let Some((call, what)) = TABLE_FUNCTIONS.iter().find(|(call, _)| {
            call.split('(')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) {
            println!("{name}: {what}\n\n  {call}");
            return Ok(());
        }
        Err(Error::NotFound(format!(
            "function '{name}' (Tab after a prefix lists the known ones)"
        )))
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
    fn formats_parse_case_insensitively_and_refuse_others() {
        assert_eq!("CSV".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("ndjson".parse::<Format>(), Ok(Format::Ndjson));
        let err = "xml".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("unknown format 'xml'"), "{err}");
    }
}
