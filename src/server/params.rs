//! Front end: rows of an Arrow parameter batch as statement parameters ([`Param`]).

use datafusion::arrow::array::{Array, Float32Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};
use crate::session::Param;

/// Converts a row of an Arrow parameter batch into statement parameters.
pub(super) fn params_of(batch: &RecordBatch, row: usize) -> Result<Vec<Param>> {
    batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let value = ScalarValue::try_from_array(column, row)?;
            param_of(&value).ok_or_else(|| {
                Error::invalid(format!(
                    "parameter ${} has a type remdb cannot bind: {}",
                    i + 1,
                    column.data_type()
                ))
            })?
        })
        .collect()
}

/// A timestamp in a unit of `per_micro` microseconds, as microseconds.
pub(super) fn micros(value: i64, per_micro: i64) -> Result<Param> {
    value
        .checked_mul(per_micro)
        .map(Param::Timestamp)
        .ok_or_else(|| Error::invalid(format!("timestamp parameter {value} is out of range")))
}

pub(super) fn param_of(value: &ScalarValue) -> Option<Result<Param>> {
    if value.is_null() {
        return Some(Ok(Param::Null));
    }
    let float_list = |values: datafusion::arrow::array::ArrayRef| -> Result<Param> {
        let floats = datafusion::arrow::compute::cast(&values, &DataType::Float32)
            .map_err(|e| Error::invalid(format!("vector parameter: {e}")))?;
        let floats = floats
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| Error::invalid("vector parameter is not a list of numbers"))?;
        if floats.null_count() > 0 {
            return Err(Error::invalid("vector parameter contains NULL"));
        }
        Ok(Param::Vector(floats.values().to_vec()))
    };
    Some(Ok(match value {
        ScalarValue::Boolean(Some(b)) => Param::Bool(*b),
        ScalarValue::Int8(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int16(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int32(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int64(Some(v)) => Param::Int(*v),
        ScalarValue::UInt8(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt16(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt32(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt64(Some(v)) => match i64::try_from(*v) {
            Ok(v) => Param::Int(v),
            Err(_) => return Some(Err(Error::invalid(format!("parameter {v} is too large")))),
        },
        ScalarValue::Float32(Some(v)) => Param::Float(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => Param::Float(*v),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Param::Text(s.clone()),
        ScalarValue::List(list) => return Some(float_list(list.value(0))),
        ScalarValue::LargeList(list) => return Some(float_list(list.value(0))),
        ScalarValue::FixedSizeList(list) => return Some(float_list(list.value(0))),
        // An instant, whatever its unit; a zone (or none, read as UTC) does not move it.
        ScalarValue::TimestampSecond(Some(v), _) => return Some(micros(*v, 1_000_000)),
        ScalarValue::TimestampMillisecond(Some(v), _) => return Some(micros(*v, 1_000)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Param::Timestamp(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Param::Timestamp(v.div_euclid(1_000)),
        ScalarValue::Date32(..) | ScalarValue::Date64(..) => Param::Text(value.to_string()),
        _ => return None,
    }))
}

pub(super) fn param_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Param>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(params_of(batch, row)?);
        }
    }
    Ok(rows)
}
