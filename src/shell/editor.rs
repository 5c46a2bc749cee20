//! Shell: what line editing knows of SQL. Whether a statement is whole is read off the
//! SQL tokenizer the statements are parsed with (quotes, comments, dollar quoting), so
//! that a statement typed over several lines is one input and one history entry; Tab
//! completes keywords, tables, columns, functions and shell commands.

use std::collections::BTreeSet;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use crate::catalog::Table;
use crate::session::Tenant;

/// The shell commands, for completion and `\?`.
pub const COMMANDS: [&str; 12] = [
    "\\d",
    "\\q",
    "\\quit",
    "\\?",
    "\\help",
    "\\h",
    "\\timing",
    "\\format",
    "\\maxrows",
    "\\quiet",
    "\\i",
    "\\include",
];

/// True when `text` ends with a `;` outside quotes and comments: the statement is whole.
/// Text the tokenizer cannot read to its end (an open quote or comment) is not.
pub fn statement_complete(text: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() else {
        return false;
    };
    let last = tokens.iter().rev().find(|t| {
        !matches!(
            t,
            Token::Whitespace(
                Whitespace::Space
                    | Whitespace::Tab
                    | Whitespace::Newline
                    | Whitespace::SingleLineComment { .. }
                    | Whitespace::MultiLineComment(_)
            ) | Token::EOF
        )
    });
    matches!(last, Some(Token::SemiColon))
}

/// True when `text` ends outside a quote or comment (a line starting with `\` there is
/// a shell command, not text of a literal).
pub fn outside_quotes(text: &str) -> bool {
    Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .is_ok()
}

/// True when the last line of `text` is a shell command: it runs at once, inside an
/// unfinished statement too (as in psql: `\q` there quits).
pub fn ends_with_command(text: &str) -> bool {
    text.lines()
        .last()
        .is_some_and(|l| l.trim_start().starts_with('\\'))
}

/// The line editor's helper: completion from the tenant's names, and the validator
/// that keeps a statement's lines together.
pub struct SqlHelper {
    words: Vec<String>,
    /// What earlier inputs left unfinished (after a command typed inside a statement).
    pub pending: String,
}

impl SqlHelper {
    pub fn new(tenant: &Tenant) -> SqlHelper {
        let mut words = BTreeSet::new();
        words.extend(ALL_KEYWORDS.iter().map(|k| k.to_string()));
        for table in Table::ALL {
            words.insert(table.name().to_string());
            words.extend(table.columns().iter().map(|c| c.name.to_string()));
        }
        let state = tenant.context().state();
        words.extend(state.scalar_functions().keys().cloned());
        words.extend(state.aggregate_functions().keys().cloned());
        words.extend(state.window_functions().keys().cloned());
        words.extend(state.table_functions().keys().cloned());
        SqlHelper {
            words: words.into_iter().collect(),
            pending: String::new(),
        }
    }

    /// The candidates for the word that ends at `pos` of `line`, and where it starts.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '\\'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[start..];
        if word.is_empty() {
            return (start, Vec::new());
        }
        if word.starts_with('\\') {
            let commands = COMMANDS.iter().filter(|c| c.starts_with(word));
            return (start, commands.map(|c| c.to_string()).collect());
        }
        // Keywords are offered in the case the word is typed in.
        let lower = word.chars().all(|c| !c.is_uppercase());
        let mut found: Vec<String> = self
            .words
            .iter()
            .filter(|w| w.len() > word.len() && w.to_lowercase().starts_with(&word.to_lowercase()))
            .map(|w| {
                if lower {
                    w.to_lowercase()
                } else {
                    w.to_uppercase()
                }
            })
            .collect();
        found.dedup();
        (start, found)
    }
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, words) = self.candidates(line, pos);
        let pairs = words
            .into_iter()
            .map(|w| Pair {
                display: w.clone(),
                replacement: w,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Validator for SqlHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let whole = format!("{}\n{input}", self.pending);
        // An empty line, a shell command or a whole statement ends the input.
        if whole.trim().is_empty() || ends_with_command(input) || statement_complete(&whole) {
            return Ok(ValidationResult::Valid(None));
        }
        Ok(ValidationResult::Incomplete)
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}

impl Highlighter for SqlHelper {}

impl Helper for SqlHelper {}

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
        assert!(statement_complete("SELECT $$a;$$;"));
        assert!(!statement_complete("SELECT 1"));
        assert!(!statement_complete("SELECT 'a;"));
        assert!(!statement_complete("SELECT 'it'';"));
        assert!(!statement_complete("SELECT 1 -- ;"));
        assert!(!statement_complete("SELECT 1 /* ; */"));
        assert!(!statement_complete("SELECT 1 /* ; "));
        assert!(!statement_complete("SELECT \"a;"));
        assert!(!statement_complete("SELECT $$a;"));
        assert!(!statement_complete(""));
        assert!(ends_with_command("SELECT 1\n  \\q"));
        assert!(!ends_with_command("SELECT '\\q'"));
    }
}
