//! Bounds on the SQL a statement may be, checked where its text enters (before any
//! planning): its size, and the depth of its expressions.
//!
//! The parser bounds nesting (parentheses, subqueries, unary operators) by its recursion
//! limit, but it builds a chain of operators (`1+1+...+1`, `a OR b OR ...`, `x::int::int`)
//! in a loop, so the chain's tree is as deep as the chain is long. DataFusion walks its
//! trees with stack protection, but its derived `Clone`, `Drop`, `PartialEq` and
//! `Display` recurse plainly: a 4 KB chain overflowed a 2 MiB worker's stack and aborted
//! the process for every tenant. A statement deeper than [`MAX_EXPR_DEPTH`] is refused
//! here, before DataFusion sees it.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, DFParser, Statement};
use datafusion::sql::sqlparser::ast::{Expr, SetExpr, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::error::{Error, Result};

/// The longest SQL text a statement (or a script) may have, in bytes. Bulk rows go
/// through `insert_batches` (the server's ingest), not through SQL text.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The deepest expression a statement may have: the number of expressions nested in one
/// another, counting every operator of a chain (`a OR b OR c` is 3 deep at `a`).
pub const MAX_EXPR_DEPTH: usize = 1_000;

/// The most values a list written in the statement may have: an array (`[...]`,
/// `ARRAY[...]`), an `IN (...)` list, a tuple or a function's arguments. Each value
/// costs about a kilobyte while the statement is planned (a 500,000-value array in a
/// 1 MiB text took 630 MB and 10 s in a debug build before anything ran), so a list is
/// refused before planning; a vector literal needs at most [`crate::vector::MAX_DIMENSIONS`].
pub const MAX_LIST_VALUES: usize = 65_536;

/// Texts longer than this are parsed on a stack of their own: a chain of operators is
/// at least 2 bytes a level, so a shorter text is at most [`MAX_EXPR_DEPTH`] deep, which
/// any thread's stack holds; a longer one may be deep enough that dropping its tree (the
/// parser does on a syntax error after the chain, and we do when refusing it) recurses
/// past the caller's stack.
const SHORT_TEXT_BYTES: usize = 2 * MAX_EXPR_DEPTH;

/// Stack bytes per byte of text for parsing a long text: the tree is at most half a
/// level deep per byte, and dropping a level takes well under 512 bytes of stack.
const STACK_PER_TEXT_BYTE: usize = 256;

/// Refuses a text longer than [`MAX_SQL_BYTES`].
pub fn check_size(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::invalid(format!(
            "the SQL text is {} bytes, more than the limit of {} (load rows with \
             insert_batches or the server's ingest instead)",
            sql.len(),
            MAX_SQL_BYTES
        )));
    }
    Ok(())
}

/// Parses `sql` (at most [`MAX_SQL_BYTES`]) and refuses statements with an expression
/// deeper than [`MAX_EXPR_DEPTH`]. A long text is parsed, checked and, when refused,
/// dropped on a stack of its own, reserved in proportion to its length and touched only
/// as deep as its trees go.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    check_size(sql)?;
    if sql.len() <= SHORT_TEXT_BYTES {
        return parse_checked(sql);
    }
    stacker::grow((1 << 20) + sql.len() * STACK_PER_TEXT_BYTE, || {
        parse_checked(sql)
    })
}

fn parse_checked(sql: &str) -> Result<Vec<Statement>> {
    let statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})?;
    let mut depth = Depth::default();
    for statement in &statements {
        let _ = visit(statement, &mut depth);
        if let Some(values) = depth.long_list {
            return Err(Error::invalid(format!(
                "the statement writes a list of {values} values, more than the limit of \
                 {MAX_LIST_VALUES} (bind a vector as one parameter; load many values into \
                 a table and join it)"
            )));
        }
        if depth.empty_subquery {
            // DataFusion 55 panics planning `(SELECT FROM t)` as a value.
            return Err(Error::invalid(
                "a subquery used as a value selects no column: name the column it returns",
            ));
        }
    }
    if depth.deepest <= MAX_EXPR_DEPTH {
        return Ok(statements.into_iter().collect());
    }
    Err(Error::invalid(format!(
        "the statement nests expressions more than {MAX_EXPR_DEPTH} deep (a long chain of \
         operators such as a OR b OR ...; for a list of values use IN (...))"
    )))
}

fn visit(statement: &Statement, depth: &mut Depth) -> ControlFlow<()> {
    match statement {
        Statement::Statement(s) => s.visit(depth),
        Statement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => query.visit(depth),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        Statement::Explain(explain) => visit(&explain.statement, depth),
        Statement::CreateExternalTable(table) => {
            table.columns.visit(depth)?;
            table.order_exprs.visit(depth)?;
            table.constraints.visit(depth)
        }
        Statement::Reset(_) => ControlFlow::Continue(()),
    }
}

/// What a walk over a statement's expressions finds: the depth of the deepest one
/// (counted up to one past the limit), whether a subquery used as a value (scalar,
/// IN, a comparison with ANY/ALL) selects no column, and the length of a list longer
/// than [`MAX_LIST_VALUES`].
#[derive(Default)]
struct Depth {
    current: usize,
    deepest: usize,
    empty_subquery: bool,
    long_list: Option<usize>,
}

/// The number of values of the list `expr` writes, if it is one.
fn list_len(expr: &Expr) -> Option<usize> {
    use datafusion::sql::sqlparser::ast::FunctionArguments;
    match expr {
        Expr::Array(array) => Some(array.elem.len()),
        Expr::InList { list, .. } | Expr::Tuple(list) => Some(list.len()),
        Expr::Function(f) => match &f.args {
            FunctionArguments::List(list) => Some(list.args.len()),
            _ => None,
        },
        _ => None,
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        let subquery = match expr {
            Expr::Subquery(q) | Expr::InSubquery { subquery: q, .. } => Some(q),
            _ => None,
        };
        if let Some(q) = subquery
            && let SetExpr::Select(select) = q.body.as_ref()
            && select.projection.is_empty()
        {
            self.empty_subquery = true;
            return ControlFlow::Break(());
        }
        if let Some(n) = list_len(expr)
            && n > MAX_LIST_VALUES
        {
            self.long_list = Some(n);
            return ControlFlow::Break(());
        }
        self.current += 1;
        self.deepest = self.deepest.max(self.current);
        if self.current > MAX_EXPR_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.current -= 1;
        ControlFlow::Continue(())
    }
}

/// The tokens of `sql` (PostgreSQL dialect, as the statements are parsed), each with the
/// byte range of the text it was read from.
pub(super) fn tokens_with_ranges(sql: &str) -> Result<Vec<(Token, std::ops::Range<usize>)>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let lines = crate::query::verbs::LineIndex::new(sql);
    Ok(tokens
        .into_iter()
        .map(|t| {
            let range = lines.offset(t.span.start)..lines.offset(t.span.end);
            (t.token, range)
        })
        .collect())
}

/// The texts between the top-level semicolons of `script` (string literals, quoted
/// names and comments are the tokenizer's, so a `;` inside them does not cut), trimmed,
/// without the pieces that hold only whitespace and comments.
pub fn split_at_semicolons(script: &str) -> Result<Vec<String>> {
    check_size(script)?;
    let mut pieces = Vec::new();
    let (mut start, mut has_code) = (0, false);
    for (token, range) in tokens_with_ranges(script)? {
        match &token {
            Token::SemiColon => {
                if has_code {
                    pieces.push(script[start..range.start].trim().to_string());
                }
                start = range.end;
                has_code = false;
            }
            Token::Whitespace(
                Whitespace::Space
                | Whitespace::Newline
                | Whitespace::Tab
                | Whitespace::SingleLineComment { .. }
                | Whitespace::MultiLineComment(_),
            )
            | Token::EOF => {}
            _ => has_code = true,
        }
    }
    if has_code {
        pieces.push(script[start..].trim().to_string());
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::split_at_semicolons;

    #[test]
    fn splits_at_semicolons_outside_literals_and_comments() {
        let script = "SELECT 'a;b' AS x; -- one; two\nCOPY (SELECT 1) TO 'out/é.csv';\n\n;/* c; */ SELECT \"q;\"";
        assert_eq!(
            split_at_semicolons(script).unwrap(),
            [
                "SELECT 'a;b' AS x",
                "-- one; two\nCOPY (SELECT 1) TO 'out/é.csv'",
                "/* c; */ SELECT \"q;\""
            ]
        );
    }

    /// A statement of 1 MiB on one line is split in time proportional to its length
    /// (quadratic, it takes minutes).
    #[test]
    fn a_long_line_is_split_in_linear_time() {
        let values = vec!["0"; (super::MAX_SQL_BYTES - 64) / 2].join(",");
        let script = format!("SELECT [{values}]; SELECT 'é;' AS x");
        let started = std::time::Instant::now();
        let pieces = split_at_semicolons(&script).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].len(), values.len() + 9);
        assert_eq!(pieces[1], "SELECT 'é;' AS x");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }

    /// A list of more values than the limit is refused before planning, in each form a
    /// statement can write one; a list at the limit parses.
    #[test]
    fn lists_longer_than_the_limit_are_refused() {
        let values = |n: usize| vec!["0"; n].join(",");
        let over = values(super::MAX_LIST_VALUES + 1);
        for sql in [
            format!("SELECT [{over}]"),
            format!("SELECT ARRAY[{over}]"),
            format!("SELECT 1 WHERE 0 IN ({over})"),
            format!("SELECT ({over})"),
            format!("SELECT make_array({over})"),
            format!("SELECT * FROM entities WHERE vector_similar(embedding, [{over}], 10)"),
        ] {
            let err = super::parse(&sql).unwrap_err().to_string();
            assert!(err.contains("a list of 65537 values"), "{err}");
        }
        let at = values(super::MAX_LIST_VALUES);
        super::parse(&format!("SELECT 1 WHERE 0 IN ({at})")).unwrap();
    }
}
