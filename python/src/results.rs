//! Statement results: prepared statements (`Prepared`), the batches of a result
//! (`ArrowResult`, handed out as an Arrow C stream or read as row dicts), and the
//! reading of Arrow streams that Python hands in.

use std::ffi::CStr;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyCapsule, PyDict, PyFloat, PyList, PyString};

use remdb::{Error, Param, PreparedStatement};

use crate::convert::param;
use crate::{OrPy, RemDbError, block_on, invalid};

/// A prepared statement (see `Tenant.prepare`).
#[pyclass(frozen, module = "rem_db._rem_db")]
pub(crate) struct Prepared {
    /// None once its tenant handle is closed.
    pub(crate) statement: Arc<Mutex<Option<PreparedStatement>>>,
}

impl Prepared {
    /// Runs `f` on the statement with the GIL released, keeping the statement open for
    /// the call (a close waits for it).
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        params: Vec<Bound<'_, PyAny>>,
        f: impl FnOnce(&PreparedStatement, &[Param]) -> remdb::Result<T> + Send,
    ) -> PyResult<T> {
        let params = params.iter().map(param).collect::<PyResult<Vec<_>>>()?;
        let done = py.detach(|| {
            let guard = self.statement.lock();
            guard.as_ref().map(|statement| f(statement, &params))
        });
        match done {
            Some(result) => result.py(),
            None => Err(RemDbError::new_err("the database is closed")),
        }
    }
}

#[pymethods]
impl Prepared {
    fn execute(&self, py: Python<'_>, params: Vec<Bound<'_, PyAny>>) -> PyResult<ArrowResult> {
        self.with(py, params, run_prepared)
    }

    fn explain(&self, py: Python<'_>, params: Vec<Bound<'_, PyAny>>) -> PyResult<String> {
        self.with(py, params, |s, p| block_on(s.explain(p)))
    }
}

/// Runs a prepared statement and collects its batches with their schema (which an
/// empty result keeps).
pub(crate) fn run_prepared(
    statement: &PreparedStatement,
    params: &[Param],
) -> remdb::Result<ArrowResult> {
    block_on(async {
        use futures::TryStreamExt;
        let stream = statement.execute_stream(params).await?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok::<_, Error>(ArrowResult::new(schema, batches))
    })
}

/// The batches of a result: handed to Arrow consumers through `__arrow_c_stream__`
/// (without a copy; as often as asked), or read as row dicts by `rows()`.
#[pyclass(frozen, module = "rem_db._rem_db")]
pub(crate) struct ArrowResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl ArrowResult {
    pub(crate) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        ArrowResult {
            schema,
            batches,
            rows,
        }
    }
}

const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

#[pymethods]
impl ArrowResult {
    #[getter]
    fn num_rows(&self) -> usize {
        self.rows
    }

    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The batches are offered in their own schema; a consumer casts if it must.
        let _ = requested_schema;
        let batches = self.batches.clone();
        let reader =
            RecordBatchIterator::new(batches.into_iter().map(Ok), Arc::clone(&self.schema));
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(reader);
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), STREAM_CAPSULE)
    }

    /// The rows as dicts of plain values (timestamps as microseconds, UTC): what the
    /// package's typed objects are built from, without going through pyarrow.
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let mut out = Vec::with_capacity(self.rows);
        for batch in &self.batches {
            let names: Vec<Bound<'py, PyString>> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| PyString::new(py, f.name()))
                .collect();
            let columns = batch
                .columns()
                .iter()
                .map(|c| column_values(py, c.as_ref()))
                .collect::<PyResult<Vec<_>>>()?;
            for row in 0..batch.num_rows() {
                let dict = PyDict::new(py);
                for (name, values) in names.iter().zip(&columns) {
                    dict.set_item(name, &values[row])?;
                }
                out.push(dict);
            }
        }
        Ok(out)
    }
}

/// The values of a column as Python objects, for the types the tables and their
/// functions produce (text, integers, floats, booleans, timestamps, lists of those).
fn column_values<'py>(py: Python<'py>, array: &dyn Array) -> PyResult<Vec<Bound<'py, PyAny>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, TimeUnit, UInt64Type};
    let n = array.len();
    let none = || py.None().into_bound(py);
    macro_rules! each {
        ($get:expr) => {
            (0..n)
                .map(|i| {
                    if array.is_null(i) {
                        Ok(none())
                    } else {
                        Ok($get(i)?.into_any())
                    }
                })
                .collect::<PyResult<Vec<_>>>()
        };
    }
    match array.data_type() {
        DataType::Null => Ok((0..n).map(|_| none()).collect()),
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            each!(|i| Ok::<_, PyErr>(PyString::new(py, a.value(i))))
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            each!(|i| Ok::<_, PyErr>(PyString::new(py, a.value(i))))
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            each!(|i| Ok::<_, PyErr>(PyString::new(py, a.value(i))))
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            each!(|i| Ok::<_, PyErr>(PyBool::new(py, a.value(i)).to_owned()))
        }
        DataType::Int64 => {
            let a = array.as_primitive::<Int64Type>();
            each!(|i| a.value(i).into_pyobject(py))
        }
        DataType::UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            each!(|i| a.value(i).into_pyobject(py))
        }
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            each!(|i| Ok::<_, PyErr>(PyFloat::new(py, f64::from(a.value(i)))))
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            each!(|i| Ok::<_, PyErr>(PyFloat::new(py, a.value(i))))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            each!(|i| a.value(i).into_pyobject(py))
        }
        DataType::List(_) => {
            let a = array.as_list::<i32>();
            each!(|i| {
                let values = column_values(py, a.value(i).as_ref())?;
                PyList::new(py, values)
            })
        }
        other => Err(invalid(format!(
            "cannot read a column of type {other} as Python values (use to_arrow())"
        ))),
    }
}

pub(crate) fn import_stream(data: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
    if !data.hasattr("__arrow_c_stream__")? {
        return Err(invalid(
            "insert_arrow takes an Arrow table or stream (an object with __arrow_c_stream__)",
        ));
    }
    let capsule = data.call_method0("__arrow_c_stream__")?;
    let capsule = capsule
        .cast::<PyCapsule>()
        .map_err(|_| invalid("__arrow_c_stream__ did not return a capsule"))?;
    let pointer = capsule.pointer_checked(Some(STREAM_CAPSULE))?;
    // SAFETY: the capsule is an Arrow C stream (checked by its name); `from_raw` moves
    // the stream out and leaves a released one behind, which the capsule's destructor
    // then ignores, as the C stream interface specifies.
    unsafe { ArrowArrayStreamReader::from_raw(pointer.as_ptr().cast()) }
        .map_err(|e| invalid(format!("cannot read the Arrow stream: {e}")))
}
