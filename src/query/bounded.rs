//! Query: functions whose result size is an argument, bounded before they run.
//!
//! `repeat('x', 1500000000)` is 27 bytes of SQL and 1.5 GB of result, allocated in one
//! call that no memory pool sees (DataFusion accounts the state of sorts, joins and
//! aggregates, not the arrays a scalar function returns). The functions that grow a
//! value by an argument (`repeat`, `lpad`, `rpad`, `array_repeat`, `range`,
//! `generate_series`, `replace`, `regexp_replace`) or join many values into one
//! (`concat`, `concat_ws`, `array_concat`) are wrapped: from the sizes of their
//! arguments the wrapper bounds what the call would make, and refuses a call over
//! [`MAX_FUNCTION_RESULT_BYTES`] before it allocates. Constant folding runs them
//! through the wrapper too, so such a literal fails at planning.
//!
//!
//! The concatenation operator (`a || b` on text or binary) is bounded the same way: an
//! analyzer rule, run after type coercion, puts [`ConcatOperator`] in place of each
//! `||`, so a chain `x || x || ...` of values each under the bound is refused at the
//! link where it passes it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::concat_elements::concat_elements_dyn;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The most one call of a bounded function may produce, for all rows of its batch.
pub const MAX_FUNCTION_RESULT_BYTES: u64 = 256 << 20;

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `n` copies of `s`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters, up to 4 bytes each.
    Pad,
    /// `array_repeat(x, n)`: `n` copies of `x`.
    ArrayRepeat,
    /// `range([start,] stop [, step])`, `generate_series`: one 8-byte value per step.
    Range,
    /// `replace(s, from, to)`: every `from` of `s` becomes `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: at most one match per byte
    /// of `s`, each replaced by the replacement, whose references copy the match.
    RegexpReplace,
    /// `concat(...)`, `concat_ws`, `array_concat`: the sum of the arguments.
    Sum,
}

const BOUNDED: [(&str, Growth); 11] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("concat", Growth::Sum),
    ("concat_ws", Growth::Sum),
    ("array_concat", Growth::Sum),
];

/// Replaces the functions of [`BOUNDED`] in `state` by their bounded form, each call
/// at most `max_bytes` ([`MAX_FUNCTION_RESULT_BYTES`] in every tenant's session).
pub fn bound_functions(state: &mut SessionState, max_bytes: u64) -> DfResult<()> {
    for (name, growth) in BOUNDED {
        let Some(inner) = state.scalar_functions().get(name).cloned() else {
            continue;
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(Bounded {
            inner,
            growth,
            max_bytes,
        })))?;
    }
    state.add_analyzer_rule(Arc::new(BoundConcatOperator {
        function: Arc::new(ScalarUDF::new_from_impl(ConcatOperator {
            signature: Signature::any(2, Volatility::Immutable),
            max_bytes,
        })),
    }));
    Ok(())
}

/// Puts [`ConcatOperator`] in place of every `a || b` left after type coercion (on
/// lists, `||` is planned as `array_concat`, already bounded). The function is named as
/// the operator is ([`ConcatOperator::schema_name`]), so columns keep their names.
#[derive(Debug)]
struct BoundConcatOperator {
    function: Arc<ScalarUDF>,
}

impl AnalyzerRule for BoundConcatOperator {
    fn name(&self) -> &str {
        "bound_concat_operator"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr {
                        left,
                        op: Operator::StringConcat,
                        right,
                    }) => Ok(Transformed::yes(Expr::ScalarFunction(
                        ScalarFunction::new_udf(Arc::clone(&self.function), vec![*left, *right]),
                    ))),
                    e => Ok(Transformed::no(e)),
                })
            })
        })
        .map(|t| t.data)
    }
}

/// `a || b` on two values of one text or binary type (what type coercion leaves), with
/// the bound of the functions above; NULL when either side is.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperator {
    signature: Signature,
    max_bytes: u64,
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        "concat_operator"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        arg_types.first().cloned().ok_or_else(|| {
            DataFusionError::Internal("the concatenation operator takes two values".into())
        })
    }

    /// Named as the operator is, so that columns keep their names.
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        match args {
            [left, right] => Ok(format!("{} || {}", left.schema_name(), right.schema_name())),
            _ => Err(DataFusionError::Internal(
                "the concatenation operator takes two values".into(),
            )),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [left, right] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(
                "the concatenation operator takes two values".into(),
            ));
        };
        let scalars = matches!(
            (left, right),
            (ColumnarValue::Scalar(_), ColumnarValue::Scalar(_))
        );
        let rows = if scalars { 1 } else { args.number_rows };
        let estimate = byte_lengths(left, rows)?
            .into_iter()
            .chain(byte_lengths(right, rows)?)
            .fold(0u64, u64::saturating_add);
        if estimate > self.max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "a || b would make up to {} KiB in one call; a function's result is \
                 bounded at {} KiB",
                estimate >> 10,
                self.max_bytes >> 10
            )));
        }
        let joined = concat_elements_dyn(&left.to_array(rows)?, &right.to_array(rows)?)?;
        if scalars {
            ScalarValue::try_from_array(&joined, 0).map(ColumnarValue::Scalar)
        } else {
            Ok(ColumnarValue::Array(joined))
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: u64,
}

impl Bounded {
    /// An upper bound of the bytes the call would produce.
    fn estimate(&self, args: &ScalarFunctionArgs) -> DfResult<u64> {
        let rows = args.number_rows.max(1);
        let arg = |i: usize| args.args.get(i);
        let mut total: u64 = 0;
        match self.growth {
            Growth::Repeat | Growth::ArrayRepeat => {
                let (Some(value), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let sizes = if self.growth == Growth::Repeat {
                    byte_lengths(value, rows)?
                } else {
                    value_sizes(value, rows)
                };
                for (size, n) in sizes.iter().zip(ints(n, rows)?) {
                    total = total.saturating_add(size.saturating_mul(n.max(0) as u64));
                }
            }
            Growth::Pad => {
                let Some(n) = arg(1) else { return Ok(0) };
                for n in ints(n, rows)? {
                    total = total.saturating_add((n.max(0) as u64).saturating_mul(4));
                }
            }
            Growth::Range => {
                if args.args.iter().any(|a| !a.data_type().is_integer()) {
                    // Dates and timestamps by intervals: not estimated.
                    return Ok(0);
                }
                let values = args
                    .args
                    .iter()
                    .map(|a| ints(a, rows))
                    .collect::<DfResult<Vec<_>>>()?;
                for row in 0..rows {
                    let v = |i: usize| values.get(i).map(|v| v[row]);
                    let (start, stop, step) = match values.len() {
                        1 => (0, v(0).unwrap_or(0), 1),
                        _ => (v(0).unwrap_or(0), v(1).unwrap_or(0), v(2).unwrap_or(1)),
                    };
                    let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
                    let steps = span / i128::from(step).unsigned_abs().max(1) + 1;
                    total = total
                        .saturating_add(u64::try_from(steps.saturating_mul(8)).unwrap_or(u64::MAX));
                }
            }
            Growth::Replace | Growth::RegexpReplace => {
                let (Some(s), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                    return Ok(0);
                };
                let (s, from, to) = (
                    byte_lengths(s, rows)?,
                    byte_lengths(from, rows)?,
                    byte_lengths(to, rows)?,
                );
                for row in 0..rows {
                    let (s, from, to) = (s[row], from[row], to[row]);
                    let grown = if self.growth == Growth::Replace {
                        s.saturating_add((s / from.max(1)).saturating_mul(to))
                    } else {
                        (s + 1).saturating_mul(to.saturating_mul(2) + 1)
                    };
                    total = total.saturating_add(grown);
                }
            }
            Growth::Sum => {
                for a in &args.args {
                    total = total.saturating_add(value_sizes(a, rows).iter().sum());
                }
            }
        }
        Ok(total)
    }
}

/// Per row, the byte length of a text or binary argument (0 for NULL or other types).
fn byte_lengths(value: &ColumnarValue, rows: usize) -> DfResult<Vec<u64>> {
    let array = value.to_array(if matches!(value, ColumnarValue::Scalar(_)) {
        1
    } else {
        rows
    })?;
    let lengths = match length(array.as_ref()) {
        Ok(lengths) => cast(&lengths, &DataType::Int64)?,
        Err(_) => return Ok(vec![0; rows]),
    };
    let lengths = lengths.as_primitive::<Int64Type>();
    Ok(broadcast(lengths.len(), rows, |i| {
        if lengths.is_null(i) {
            0
        } else {
            lengths.value(i).max(0) as u64
        }
    }))
}

/// Per row, an integer argument (0 for NULL or a value that is not an integer).
fn ints(value: &ColumnarValue, rows: usize) -> DfResult<Vec<i64>> {
    let array = value.to_array(if matches!(value, ColumnarValue::Scalar(_)) {
        1
    } else {
        rows
    })?;
    let Ok(array) = cast(&array, &DataType::Int64) else {
        return Ok(vec![0; rows]);
    };
    let array = array.as_primitive::<Int64Type>();
    Ok(broadcast(array.len(), rows, |i| {
        if array.is_null(i) { 0 } else { array.value(i) }
    }))
}

/// Per row, about the bytes a value takes (a column's memory shared out evenly).
fn value_sizes(value: &ColumnarValue, rows: usize) -> Vec<u64> {
    match value {
        ColumnarValue::Scalar(s) => vec![s.size() as u64; rows],
        ColumnarValue::Array(a) => {
            let each = (a.get_array_memory_size() / a.len().max(1)) as u64;
            vec![each; rows]
        }
    }
}

/// `rows` values from an array of `len` (1: the same value for every row).
fn broadcast<T: Copy>(len: usize, rows: usize, at: impl Fn(usize) -> T) -> Vec<T> {
    (0..rows)
        .map(|i| at(if len == 1 { 0 } else { i }))
        .collect()
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    // No `simplify`: a function's own rewrite (concat merging its literal arguments)
    // would run the unbounded work, or return the unwrapped function.

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let estimate = self.estimate(&args)?;
        if estimate > self.max_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}(...) would make up to {} KiB in one call; a function's result is \
                 bounded at {} KiB",
                self.name(),
                estimate >> 10,
                self.max_bytes >> 10
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::ArrayRef;
    use datafusion::prelude::SessionContext;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<ArrayRef>, String> {
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| Arc::clone(b.column(0))).collect())
    }

    #[tokio::test]
    async fn calls_over_the_bound_fail_before_they_allocate_and_others_run() {
        let ctx = SessionContext::new();
        let mut state = ctx.state();
        // 1 MiB here, so that the calls under the bound are quick to make.
        bound_functions(&mut state, 1 << 20).unwrap();
        let ctx = SessionContext::new_with_state(state);
        for sql in [
            "SELECT repeat('x', 1500000000)",
            "SELECT repeat('x', 2000000)",
            "SELECT lpad('x', 2000000000)",
            "SELECT rpad('x', 2000000000, 'ab')",
            "SELECT array_repeat(1, 1000000000)",
            "SELECT range(1, 100000000000)",
            "SELECT generate_series(1, 100000000000, 2)",
            "SELECT replace(repeat('x', 1000), 'x', repeat('y', 2000))",
            "SELECT regexp_replace(repeat('x', 1000), '', repeat('y', 1000), 'g')",
            "SELECT concat(repeat('x', 600000), repeat('y', 600000))",
            "SELECT concat_ws(',', repeat('x', 600000), repeat('y', 600000))",
            // A chain of operators, each side under the bound.
            "SELECT repeat('x', 400000) || repeat('y', 400000) || repeat('z', 400000)",
            "SELECT s || s || s FROM (VALUES (repeat('x', 400000))) AS t(s)",
            // Per row too: the values come from a column.
            "SELECT repeat('x', n) FROM (VALUES (2000000), (1)) AS t(n)",
        ] {
            let err = run(&ctx, sql).await.unwrap_err();
            assert!(err.contains("bounded at 1024 KiB"), "{sql}: {err}");
        }
        for (sql, expected) in [
            ("SELECT length(repeat('ab', 1000))", 2000),
            ("SELECT length(repeat('x', 1000000))", 1_000_000),
            ("SELECT length(lpad('x', 10))", 10),
            ("SELECT cardinality(range(1, 1001))", 1000),
            ("SELECT length(replace('aaa', 'a', 'bb'))", 6),
            ("SELECT length(concat('a', 'bc', NULL))", 3),
            ("SELECT length('ab' || 'cd' || repeat('x', 1000))", 1004),
            (
                "SELECT sum(length(s || '!' || s)) FROM (VALUES ('a'), ('bc')) AS t(s)",
                8,
            ),
        ] {
            let got = run(&ctx, sql).await.unwrap();
            let got = cast(&got[0], &DataType::Int64).unwrap();
            assert_eq!(got.as_primitive::<Int64Type>().value(0), expected, "{sql}");
        }
        let dates =
            "SELECT cardinality(range(DATE '2024-01-01', DATE '2024-01-11', INTERVAL '1' DAY))";
        assert!(run(&ctx, dates).await.is_ok());
        // The operator keeps SQL's NULL and the column's name.
        let nulls = run(&ctx, "SELECT 'a' || NULL IS NULL").await.unwrap();
        assert!(nulls[0].as_boolean().value(0));
        let sql = "SELECT s || 'x', s FROM (VALUES ('a')) AS t(s) WHERE s || 'y' = 'ay'";
        let name = |ctx: SessionContext| async move {
            let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            batches[0].schema().field(0).name().clone()
        };
        assert_eq!(name(ctx.clone()).await, name(SessionContext::new()).await);
    }
}
