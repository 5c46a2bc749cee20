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
