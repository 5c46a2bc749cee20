//! Session: statement parameters (`$1`, ...) and how they are bound into a parsed
//! statement before planning.

use super::{Error, VECTOR_PARAM_FUNC, encode_vector_param};
use crate::error::Result;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Value, visit_expressions_mut,
};

/// A value for a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Microseconds since the Unix epoch, UTC (the type of every timestamp column).
    Timestamp(i64),
    Vector(Vec<f32>),
}

pub(super) fn param_expr(param: &Param) -> Result<SqlExpr> {
    let number = |s: String| SqlExpr::value(Value::Number(s, false));
    Ok(match param {
        Param::Null => SqlExpr::value(Value::Null),
        Param::Bool(b) => SqlExpr::value(Value::Boolean(*b)),
        Param::Int(i) => number(i.to_string()),
        Param::Float(f) if f.is_finite() => number(format!("{f:?}")),
        Param::Float(f) => {
            return Err(Error::invalid(format!(
                "parameter {f} is not a finite number"
            )));
        }
        Param::Text(s) => SqlExpr::value(Value::SingleQuotedString(s.clone())),
        // A constant the simplifier folds, so that timestamp indexes still see a literal.
        Param::Timestamp(t) => call("to_timestamp_micros", number(t.to_string())),
        Param::Vector(v) => {
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(Error::invalid(format!("vector parameter contains {x}")));
            }
            // One literal, not an array of numbers: see `VectorParamFunc`.
            call(
                VECTOR_PARAM_FUNC,
                SqlExpr::value(Value::SingleQuotedString(encode_vector_param(v))),
            )
        }
    })
}

/// `name(arg)` as SQL.
pub(super) fn call(name: &str, arg: SqlExpr) -> SqlExpr {
    SqlExpr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

pub(super) fn bind_params(statement: &mut Statement, params: &[Param]) -> Result<()> {
    let inner = match statement {
        Statement::Statement(inner) => inner,
        // EXPLAIN [ANALYZE] of a statement with parameters.
        Statement::Explain(explain) => return bind_params(&mut explain.statement, params),
        _ => {
            return Err(Error::invalid(
                "parameters are only supported in SQL statements",
            ));
        }
    };
    let mut error = None;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let SqlExpr::Value(v) = expr
            && let Value::Placeholder(name) = &v.value
        {
            let index = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
            match index
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| params.get(i))
            {
                Some(param) => match param_expr(param) {
                    Ok(e) => *expr = e,
                    Err(e) => error = Some(e),
                },
                None => {
                    error = Some(Error::invalid(format!(
                        "no value for parameter {name} ({} given)",
                        params.len()
                    )))
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Numbers the `?` placeholders of a statement (JDBC's and ODBC's form) `$1`, `$2`, ...
/// in the order they are written, so that they bind by position exactly as `$n` do.
///
/// The PostgreSQL dialect reads `?` as an operator too (`properties ? 'key'`, JSON key
/// presence): a `?` is a placeholder where an operand starts (at the start, after
/// another operator, `(`, `,`, or a keyword such as `WHERE`, `AND`, `LIMIT`), and the
/// operator after an operand (a name, a literal, `)`, `]`). Mixing `?` with `$n` is
/// refused, as the positions would be ambiguous.
pub(super) fn number_question_marks(sql: &str) -> Result<std::borrow::Cow<'_, str>> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::Token;
    if !sql.contains('?') {
        return Ok(sql.into());
    }
    let (mut out, mut copied, mut count) = (String::with_capacity(sql.len() + 8), 0, 0);
    let mut dollar = false;
    // Whether the last significant token ends an operand.
    let mut after_operand = false;
    for (token, range) in super::limits::tokens_with_ranges(sql)? {
        match &token {
            Token::Whitespace(_) => continue,
            Token::Question if !after_operand => {
                count += 1;
                out.push_str(&sql[copied..range.start]);
                out.push_str(&format!("${count}"));
                copied = range.end;
                after_operand = true;
                continue;
            }
            Token::Placeholder(p) if p.starts_with('$') => dollar = true,
            _ => {}
        }
        after_operand = match &token {
            Token::Word(w) => {
                w.quote_style.is_some()
                    || !matches!(
                        w.keyword,
                        Keyword::SELECT
                            | Keyword::WHERE
                            | Keyword::AND
                            | Keyword::OR
                            | Keyword::NOT
                            | Keyword::LIMIT
                            | Keyword::OFFSET
                            | Keyword::CASE
                            | Keyword::WHEN
                            | Keyword::THEN
                            | Keyword::ELSE
                            | Keyword::BETWEEN
                            | Keyword::LIKE
                            | Keyword::ILIKE
                            | Keyword::ON
                            | Keyword::HAVING
                            | Keyword::DISTINCT
                            | Keyword::ALL
                            | Keyword::ANY
                            | Keyword::SOME
                            | Keyword::RETURNING
                            | Keyword::IS
                            | Keyword::FROM
                            | Keyword::BY
                            | Keyword::IN
                            | Keyword::SEARCH
                    )
            }
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
            | Token::RParen
            | Token::RBracket => true,
            _ => false,
        };
    }
    if count == 0 {
        return Ok(sql.into());
    }
    if dollar {
        return Err(Error::invalid(
            "a statement takes either ? or $1, $2, ... placeholders, not both",
        ));
    }
    out.push_str(&sql[copied..]);
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::number_question_marks;

    #[test]
    fn question_marks_become_numbered_placeholders_and_the_json_operator_stays() {
        for (sql, expected) in [
            ("SELECT 1", "SELECT 1"),
            (
                "SELECT name FROM entities WHERE type = ? AND name <> ? LIMIT ?",
                "SELECT name FROM entities WHERE type = $1 AND name <> $2 LIMIT $3",
            ),
            (
                "INSERT INTO entities (id, type, name) VALUES (?, ?,?)",
                "INSERT INTO entities (id, type, name) VALUES ($1, $2,$3)",
            ),
            (
                "SELECT id FROM entities WHERE properties ? 'role' AND type IN (?, 'x')",
                "SELECT id FROM entities WHERE properties ? 'role' AND type IN ($1, 'x')",
            ),
            (
                "SELECT '?', \"a?\" FROM t WHERE x = ? -- why?\n",
                "SELECT '?', \"a?\" FROM t WHERE x = $1 -- why?\n",
            ),
            ("SELECT ?", "SELECT $1"),
            (
                "SELECT vector_similar(embedding, ?, 5)",
                "SELECT vector_similar(embedding, $1, 5)",
            ),
            ("SELECT ? + ?", "SELECT $1 + $2"),
            ("SELECT ?, 'é' || ?", "SELECT $1, 'é' || $2"),
        ] {
            assert_eq!(number_question_marks(sql).unwrap(), expected, "{sql}");
        }
        let err = number_question_marks("SELECT $1 WHERE x = ?").unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }
}
