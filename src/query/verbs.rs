//! Query layer: the REM verbs as statements, rewritten into SQL over the table functions
//! before DataFusion parses a script, so they compose with everything else:
//!
//! | statement | becomes |
//! |---|---|
//! | `LOOKUP 'k1' [, 'k2' ...]` | `SELECT * FROM lookup('k1', 'k2')` |
//! | `TRAVERSE FROM 'id' [DEPTH n] [DIRECTION out\|in\|both] [TYPE 't1' [, 't2' ...]]` | `SELECT id, type, name, depth, edge_type, path FROM traverse('id', 'out', n [, ARRAY['t1', 't2']])` (DEPTH 1 and DIRECTION out by default) |
//! | `SEARCH <vector or $n> IN <table> [WHERE ...] [LIMIT n]` | `SELECT id, uri, content, metadata, score FROM vector_similar('<table>', <vector>, n) [WHERE ...] LIMIT n` (n = 10 by default) |
//!
//! A verb shows the columns a person reading its answer wants; the table functions have
//! them all (timestamps, aliases, embeddings) for SQL that needs more.
//!
//! A script is tokenized once (quotes and comments are honoured), split at its top-level
//! `;`, and only statements that start with a verb are rewritten; every other statement
//! is kept byte for byte. A malformed verb is an error that names what was expected,
//! what was found, and where (line and column of the script).

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::{Error, Result};

const VERBS: [&str; 3] = ["lookup", "traverse", "search"];
const TRAVERSE_COLUMNS: &str = "id, type, name, depth, edge_type, path";
const SEARCH_COLUMNS: &str = "id, uri, content, metadata, score";

/// The script with its verb statements rewritten (borrowed when it has none).
pub fn rewrite(script: &str) -> Result<Cow<'_, str>> {
    let lower = script.to_ascii_lowercase();
    if !VERBS.iter().any(|v| lower.contains(v)) {
        return Ok(Cow::Borrowed(script));
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, script)
        .tokenize_with_location()
        .map_err(|e| Error::Query(format!("SQL error: {e}")))?;
    let lines = LineIndex::new(script);
    let mut out = String::with_capacity(script.len());
    let mut changed = false;
    // Byte offsets of the top-level `;`s: statement i runs up to the i-th one.
    let semicolons: Vec<usize> = tokens
        .iter()
        .filter(|t| t.token == Token::SemiColon)
        .map(|t| lines.offset(t.span.start))
        .collect();
    let mut from = 0usize;
    for (i, statement) in tokens.split(|t| t.token == Token::SemiColon).enumerate() {
        let significant: Vec<&TokenWithSpan> = statement
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
            .collect();
        let to = semicolons.get(i).copied().unwrap_or(script.len());
        match rewrite_statement(&significant, script, &lines)? {
            Some(sql) => {
                // Whitespace and comments before the verb stay where they were.
                let verb_at = significant
                    .first()
                    .map_or(to, |t| lines.offset(t.span.start));
                out.push_str(&script[from..verb_at]);
                out.push_str(&sql);
                changed = true;
            }
            None => out.push_str(&script[from..to]),
        }
        if i < semicolons.len() {
            out.push(';');
        }
        from = (to + 1).min(script.len());
    }
    Ok(if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(script)
    })
}

/// Turns token locations (line, column in characters) into byte offsets of the script
/// in constant time: the byte offset of every character and the character index of
/// every line start, built once (scanning each line from its start per location is
/// quadratic: 5 x 10^11 character steps for a 1 MiB line of `;`s).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// The byte offset of each character, then of the end.
    char_bytes: Vec<usize>,
    /// The character index of each line's start.
    line_chars: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut char_bytes = Vec::with_capacity(text.len() + 1);
        let mut line_chars = vec![0];
        for (i, (byte, c)) in text.char_indices().enumerate() {
            char_bytes.push(byte);
            if c == '\n' {
                line_chars.push(i + 1);
            }
        }
        char_bytes.push(text.len());
        LineIndex {
            text,
            char_bytes,
            line_chars,
        }
    }

    /// The byte offset of a 1-based (line, column in characters) location.
    pub(crate) fn offset(&self, at: Location) -> usize {
        let Some(&start) = self.line_chars.get((at.line as usize).saturating_sub(1)) else {
            return self.text.len();
        };
        let char_index = start.saturating_add((at.column as usize).saturating_sub(1));
        self.char_bytes
            .get(char_index)
            .copied()
            .unwrap_or(self.text.len())
    }
}

/// A cursor over the significant tokens of one verb statement.
struct Cursor<'t, 's> {
    verb: &'static str,
    tokens: &'t [&'t TokenWithSpan],
    pos: usize,
    script: &'s str,
    lines: &'t LineIndex<'s>,
}

impl<'t, 's> Cursor<'t, 's> {
    fn peek(&self) -> Option<&'t TokenWithSpan> {
        self.tokens.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<&'t TokenWithSpan> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn error(&self, expected: &str) -> Error {
        let (found, at) = match self.peek() {
            Some(t) => (
                format!("'{}'", t.token),
                format!("line {}, column {}", t.span.start.line, t.span.start.column),
            ),
            None => (
                "the end of the statement".to_string(),
                "the end".to_string(),
            ),
        };
        Error::invalid(format!(
            "{}: expected {expected}, found {found} at {at}",
            self.verb
        ))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek().map(|t| &t.token), Some(Token::Word(w))
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
    }

    fn expect_keyword(&mut self, word: &str) -> Result<()> {
        if !self.keyword(word) {
            return Err(self.error(word));
        }
        self.pos += 1;
        Ok(())
    }

    /// A quoted string or a `$n` parameter, as SQL text.
    fn value(&mut self, what: &str) -> Result<String> {
        match self.peek().map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => {
                self.pos += 1;
                Ok(quote(s))
            }
            Some(Token::Placeholder(p)) => {
                self.pos += 1;
                Ok(p.clone())
            }
            _ => Err(self.error(what)),
        }
    }

    /// One or more comma-separated values.
    fn values(&mut self, what: &str) -> Result<Vec<String>> {
        let mut out = vec![self.value(what)?];
        while self.peek().map(|t| &t.token) == Some(&Token::Comma) {
            self.pos += 1;
            out.push(self.value(what)?);
        }
        Ok(out)
    }

    fn whole_number(&mut self, what: &str) -> Result<u64> {
        match self.peek().map(|t| &t.token) {
            Some(Token::Number(n, _)) => match n.parse::<u64>() {
                Ok(v) => {
                    self.pos += 1;
                    Ok(v)
                }
                Err(_) => Err(self.error(what)),
            },
            _ => Err(self.error(what)),
        }
    }

    fn end(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("the end of the statement")),
        }
    }

    /// The script's text from token `from` up to (not including) token `to`.
    fn text(&self, from: usize, to: usize) -> &'s str {
        let start = self.lines.offset(self.tokens[from].span.start);
        let end = self.lines.offset(self.tokens[to - 1].span.end);
        &self.script[start..end]
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn rewrite_statement(
    tokens: &[&TokenWithSpan],
    script: &str,
    lines: &LineIndex<'_>,
) -> Result<Option<String>> {
    let Some(Token::Word(first)) = tokens.first().map(|t| &t.token) else {
        return Ok(None);
    };
    if first.quote_style.is_some() {
        return Ok(None);
    }
    let verb = match first.value.to_ascii_uppercase().as_str() {
        "LOOKUP" => "LOOKUP",
        "TRAVERSE" => "TRAVERSE",
        "SEARCH" => "SEARCH",
        _ => return Ok(None),
    };
    let mut c = Cursor {
        verb,
        tokens,
        pos: 1,
        script,
        lines,
    };
    let sql = match verb {
        "LOOKUP" => {
            let keys = c.values("a quoted key")?;
            c.end()?;
            format!("SELECT * FROM lookup({})", keys.join(", "))
        }
        "TRAVERSE" => traverse(&mut c)?,
        _ => search(&mut c)?,
    };
    Ok(Some(sql))
}

fn traverse(c: &mut Cursor) -> Result<String> {
    c.expect_keyword("FROM")?;
    let start = c.value("the quoted id of the start entity")?;
    let (mut depth, mut direction, mut types) = (None, None, None);
    while c.peek().is_some() {
        if c.keyword("DEPTH") && depth.is_none() {
            c.pos += 1;
            depth = Some(c.whole_number("a whole number after DEPTH")?);
        } else if c.keyword("DIRECTION") && direction.is_none() {
            c.pos += 1;
            direction = Some(match c.peek().map(|t| &t.token) {
                Some(Token::Word(w))
                    if ["out", "in", "both"]
                        .iter()
                        .any(|d| w.value.eq_ignore_ascii_case(d)) =>
                {
                    let d = w.value.to_ascii_lowercase();
                    c.pos += 1;
                    d
                }
                _ => return Err(c.error("out, in or both after DIRECTION")),
            });
        } else if c.keyword("TYPE") && types.is_none() {
            c.pos += 1;
            types = Some(c.values("a quoted edge type")?);
        } else {
            return Err(c.error("DEPTH, DIRECTION or TYPE (each once)"));
        }
    }
    let mut sql = format!(
        "SELECT {TRAVERSE_COLUMNS} FROM traverse({start}, '{}', {}",
        direction.as_deref().unwrap_or("out"),
        depth.unwrap_or(1)
    );
    if let Some(types) = types {
        sql.push_str(&format!(", ARRAY[{}]", types.join(", ")));
    }
    sql.push(')');
    Ok(sql)
}

fn search(c: &mut Cursor) -> Result<String> {
    // The vector runs up to the first `IN` outside brackets.
    let from = c.pos;
    let mut depth = 0i32;
    while let Some(t) = c.peek() {
        match &t.token {
            Token::LBracket | Token::LParen => depth += 1,
            Token::RBracket | Token::RParen => depth -= 1,
            _ if depth == 0 && c.keyword("IN") => break,
            _ => {}
        }
        c.pos += 1;
    }
    if c.pos == from {
        c.pos = from;
        return Err(c.error("a query vector ([0.1, ...], ARRAY[...] or $1)"));
    }
    let vector = c.text(from, c.pos);
    let vector = if vector.starts_with('[') {
        format!("ARRAY{vector}")
    } else {
        vector.to_string()
    };
    c.expect_keyword("IN")?;
    let table = match c.next().map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.clone(),
        Some(Token::SingleQuotedString(s)) => s.clone(),
        _ => {
            c.pos -= 1;
            return Err(c.error("a table name after IN"));
        }
    };
    let mut filter = None;
    if c.keyword("WHERE") {
        c.pos += 1;
        let from = c.pos;
        // The condition runs to a LIMIT outside brackets (a subquery may have its own).
        let mut depth = 0i32;
        while let Some(t) = c.peek() {
            match &t.token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => depth -= 1,
                _ if depth == 0 && c.keyword("LIMIT") => break,
                _ => {}
            }
            c.pos += 1;
        }
        if c.pos == from {
            return Err(c.error("a condition after WHERE"));
        }
        filter = Some(c.text(from, c.pos).to_string());
    }
    let mut limit = 10;
    if c.keyword("LIMIT") {
        c.pos += 1;
        limit = c.whole_number("a whole number after LIMIT")?;
    }
    c.end()?;
    let mut sql = format!(
        "SELECT {SEARCH_COLUMNS} FROM vector_similar({}, {vector}, {limit})",
        quote(&table)
    );
    if let Some(filter) = filter {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    sql.push_str(&format!(" LIMIT {limit}"));
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> String {
        rewrite(s).unwrap().into_owned()
    }

    fn err(s: &str) -> String {
        rewrite(s).unwrap_err().to_string()
    }

    #[test]
    fn verbs_become_table_functions() {
        assert_eq!(
            sql("lookup 'alice', 'TAP-1234'"),
            "SELECT * FROM lookup('alice', 'TAP-1234')"
        );
        assert_eq!(sql("LOOKUP 'o''brien'"), "SELECT * FROM lookup('o''brien')");
        assert_eq!(
            sql("TRAVERSE FROM 'a' DEPTH 3 DIRECTION both TYPE 'knows', 'likes'"),
            "SELECT id, type, name, depth, edge_type, path FROM traverse('a', 'both', 3, ARRAY['knows', 'likes'])"
        );
        assert_eq!(
            sql("traverse from $1"),
            "SELECT id, type, name, depth, edge_type, path FROM traverse($1, 'out', 1)"
        );
        assert_eq!(
            sql("SEARCH [0.1, 0.2] IN resources WHERE metadata->>'lang' = 'en' LIMIT 5"),
            "SELECT id, uri, content, metadata, score FROM vector_similar('resources', ARRAY[0.1, 0.2], 5) WHERE metadata->>'lang' = 'en' LIMIT 5"
        );
        assert_eq!(
            sql("SEARCH $1 IN resources WHERE id IN (SELECT id FROM resources LIMIT 3) LIMIT 2"),
            "SELECT id, uri, content, metadata, score FROM vector_similar('resources', $1, 2) WHERE id IN (SELECT id FROM resources LIMIT 3) LIMIT 2"
        );
        assert_eq!(
            sql("SEARCH $1 IN resources"),
            "SELECT id, uri, content, metadata, score FROM vector_similar('resources', $1, 10) LIMIT 10"
        );
    }

    #[test]
    fn other_statements_are_kept_byte_for_byte() {
        let script = "SELECT 'it''s; lookup' AS x; -- search\nLOOKUP 'a';SELECT 1";
        assert_eq!(
            sql(script),
            "SELECT 'it''s; lookup' AS x; -- search\nSELECT * FROM lookup('a');SELECT 1"
        );
        let plain = "SELECT name FROM entities WHERE name = 'search'";
        assert!(matches!(rewrite(plain).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn malformed_verbs_say_where() {
        assert_eq!(
            err("LOOKUP alice"),
            "invalid argument: LOOKUP: expected a quoted key, found 'alice' at line 1, column 8"
        );
        assert!(err("TRAVERSE 'a'").contains("expected FROM"));
        assert!(err("TRAVERSE FROM 'a' DEPTH -1").contains("a whole number after DEPTH"));
        assert!(err("TRAVERSE FROM 'a' DIRECTION up").contains("out, in or both"));
        assert!(err("TRAVERSE FROM 'a' DEPTH 1 DEPTH 2").contains("each once"));
        assert!(err("SEARCH IN resources").contains("a query vector"));
        assert!(err("SEARCH [1, 2]").contains("expected IN"));
        assert!(err("SELECT 1;\n  LOOKUP").contains("the end of the statement"));
    }

    /// A 1 MiB script on one line with many statements is rewritten in time
    /// proportional to its length (quadratic, it takes minutes), its multibyte
    /// characters kept in place.
    #[test]
    fn a_long_line_is_rewritten_in_linear_time() {
        let many = "SELECT 'é';".repeat((1 << 20) / 12);
        let script = format!("{many}LOOKUP 'a';SELECT 'ü'");
        let started = std::time::Instant::now();
        let out = sql(&script);
        assert_eq!(out, format!("{many}SELECT * FROM lookup('a');SELECT 'ü'"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }
}
