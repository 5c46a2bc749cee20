//! Conversions between Python values and remdb's: statement parameters (with the
//! `Timestamp` class) and vectors, ids, row dicts, and the dicts that describe an index
//! or the vector options.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use remdb::{Edge, Entity, IndexKind, Moment, Param, Resource, Row, Table, VectorOptions};

use crate::invalid;

/// A timestamp parameter: microseconds since the epoch, UTC (the package converts
/// `datetime` values to it).
#[pyclass(frozen, module = "rem_db._rem_db")]
pub(crate) struct Timestamp {
    micros: i64,
}

#[pymethods]
impl Timestamp {
    #[new]
    fn new(micros: i64) -> Self {
        Timestamp { micros }
    }
    #[getter]
    fn micros(&self) -> i64 {
        self.micros
    }
}

/// A Python value as a `$n` parameter: None, bool, int, float, str, a `Timestamp`, or a
/// vector (a list or tuple of numbers, or a 1-d numpy array).
pub(crate) fn param(value: &Bound<'_, PyAny>) -> PyResult<Param> {
    if value.is_none() {
        Ok(Param::Null)
    } else if value.is_instance_of::<PyBool>() {
        Ok(Param::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        value
            .extract::<i64>()
            .map(Param::Int)
            .map_err(|_| invalid(format!("parameter {value} does not fit in 64 bits")))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(Param::Float(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(Param::Text(value.extract()?))
    } else if let Ok(t) = value.cast::<Timestamp>() {
        Ok(Param::Timestamp(t.get().micros))
    } else {
        to_vector(value).map(Param::Vector).map_err(|_| {
            invalid(format!(
                "cannot bind a parameter of type {} (None, bool, int, float, str, datetime, \
                 or a vector: a list of numbers or a 1-d numpy array)",
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })
    }
}

/// A vector from a list or tuple of numbers, or a 1-d array with `astype` (numpy).
pub(crate) fn to_vector(value: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        return value
            .extract::<Vec<f32>>()
            .map_err(|_| invalid("a vector must hold numbers only"));
    }
    if value.hasattr("astype")? && value.hasattr("ndim")? {
        let ndim: usize = value.getattr("ndim")?.extract()?;
        if ndim != 1 {
            return Err(invalid(format!(
                "a vector must be a 1-d array, got {ndim} dimensions"
            )));
        }
        let bytes = value
            .call_method1("astype", ("<f4",))?
            .call_method0("tobytes")?;
        let bytes = bytes
            .cast::<PyBytes>()
            .map_err(|_| invalid("tobytes() did not return bytes"))?;
        return Ok(bytes
            .as_bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    Err(invalid(format!(
        "a vector must be a list of numbers or a 1-d numpy array, got {}",
        value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

/// A new time-ordered id (UUID v7), as the storage gives rows inserted without one.
#[pyfunction]
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn row_id(row: &Row) -> String {
    match row {
        Row::Resource(r) => r.id.clone(),
        Row::Entity(e) => e.id.clone(),
        Row::Moment(m) => m.id.clone(),
        Row::Edge(e) => format!("{}|{}|{}", e.src, e.edge_type, e.dst),
    }
}

/// Reads the fields of a row dict; a missing or None field takes its default.
struct Fields<'a, 'py> {
    table: Table,
    dict: &'a Bound<'py, PyDict>,
}

impl<'py> Fields<'_, 'py> {
    fn value<T: FromPyObjectOwned<'py>>(&self, key: &str) -> PyResult<Option<T>> {
        match self.dict.get_item(key)? {
            Some(v) if !v.is_none() => v.extract::<T>().map(Some).map_err(|e| {
                let e: PyErr = e.into();
                invalid(format!("{}.{key}: {e}", self.table.name()))
            }),
            _ => Ok(None),
        }
    }
    fn text(&self, key: &str) -> PyResult<String> {
        Ok(self.value::<String>(key)?.unwrap_or_default())
    }
    fn int(&self, key: &str) -> PyResult<i64> {
        Ok(self.value::<i64>(key)?.unwrap_or_default())
    }
    fn list(&self, key: &str) -> PyResult<Vec<String>> {
        Ok(self.value::<Vec<String>>(key)?.unwrap_or_default())
    }
}

pub(crate) fn row_from_dict(table: Table, dict: &Bound<'_, PyDict>) -> PyResult<Row> {
    let f = Fields { table, dict };
    let known: &[&str] = match table {
        Table::Resources => &[
            "id",
            "uri",
            "chunk_index",
            "content",
            "metadata",
            "created_at",
            "updated_at",
            "embedding",
        ],
        Table::Entities => &[
            "id",
            "type",
            "name",
            "aliases",
            "properties",
            "created_at",
            "updated_at",
        ],
        Table::Edges => &["src", "dst", "edge_type", "properties", "created_at"],
        Table::Moments => &[
            "id",
            "timestamp",
            "end_timestamp",
            "type",
            "classifications",
            "resource_refs",
            "entity_refs",
            "metadata",
            "created_at",
        ],
    };
    for key in dict.keys() {
        let key: String = key.extract()?;
        if !known.contains(&key.as_str()) {
            return Err(invalid(format!(
                "{} has no field '{key}' (its fields: {})",
                table.name(),
                known.join(", ")
            )));
        }
    }
    Ok(match table {
        Table::Resources => Row::Resource(Resource {
            id: f.text("id")?,
            uri: f.value("uri")?,
            chunk_index: f.int("chunk_index")?,
            content: f.text("content")?,
            metadata: f.text("metadata")?,
            created_at: f.int("created_at")?,
            updated_at: f.int("updated_at")?,
            embedding: match dict.get_item("embedding")? {
                Some(v) if !v.is_none() => Some(to_vector(&v)?),
                _ => None,
            },
        }),
        Table::Entities => Row::Entity(Entity {
            id: f.text("id")?,
            entity_type: f.text("type")?,
            name: f.text("name")?,
            aliases: f.list("aliases")?,
            properties: f.text("properties")?,
            created_at: f.int("created_at")?,
            updated_at: f.int("updated_at")?,
        }),
        Table::Edges => Row::Edge(Edge {
            src: f.text("src")?,
            dst: f.text("dst")?,
            edge_type: f.text("edge_type")?,
            properties: f.text("properties")?,
            created_at: f.int("created_at")?,
        }),
        Table::Moments => Row::Moment(Moment {
            id: f.text("id")?,
            timestamp: f.int("timestamp")?,
            end_timestamp: f.value("end_timestamp")?,
            moment_type: f.text("type")?,
            classifications: f.list("classifications")?,
            resource_refs: f.list("resource_refs")?,
            entity_refs: f.list("entity_refs")?,
            metadata: f.text("metadata")?,
            created_at: f.int("created_at")?,
        }),
    })
}

pub(crate) fn row_to_dict<'py>(py: Python<'py>, row: &Row) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match row {
        Row::Resource(r) => {
            d.set_item("id", &r.id)?;
            d.set_item("uri", r.uri.as_deref())?;
            d.set_item("chunk_index", r.chunk_index)?;
            d.set_item("content", &r.content)?;
            d.set_item("metadata", &r.metadata)?;
            d.set_item("created_at", r.created_at)?;
            d.set_item("updated_at", r.updated_at)?;
            d.set_item("embedding", r.embedding.as_deref())?;
        }
        Row::Entity(e) => {
            d.set_item("id", &e.id)?;
            d.set_item("type", &e.entity_type)?;
            d.set_item("name", &e.name)?;
            d.set_item("aliases", &e.aliases)?;
            d.set_item("properties", &e.properties)?;
            d.set_item("created_at", e.created_at)?;
            d.set_item("updated_at", e.updated_at)?;
        }
        Row::Edge(e) => {
            d.set_item("src", &e.src)?;
            d.set_item("dst", &e.dst)?;
            d.set_item("edge_type", &e.edge_type)?;
            d.set_item("properties", &e.properties)?;
            d.set_item("created_at", e.created_at)?;
        }
        Row::Moment(m) => {
            d.set_item("id", &m.id)?;
            d.set_item("timestamp", m.timestamp)?;
            d.set_item("end_timestamp", m.end_timestamp)?;
            d.set_item("type", &m.moment_type)?;
            d.set_item("classifications", &m.classifications)?;
            d.set_item("resource_refs", &m.resource_refs)?;
            d.set_item("entity_refs", &m.entity_refs)?;
            d.set_item("metadata", &m.metadata)?;
            d.set_item("created_at", m.created_at)?;
        }
    }
    Ok(d)
}

pub(crate) fn index_dict<'py>(
    py: Python<'py>,
    def: &remdb::IndexDef,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &def.name)?;
    d.set_item("table", &def.table)?;
    d.set_item("column", &def.column)?;
    d.set_item("path", &def.path)?;
    d.set_item(
        "kind",
        match def.kind {
            IndexKind::Value => "value",
            IndexKind::List => "list",
        },
    )?;
    Ok(d)
}

pub(crate) fn vector_options_dict<'py>(
    py: Python<'py>,
    o: &VectorOptions,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dimensions", o.dimensions)?;
    d.set_item("metric", o.metric.name())?;
    d.set_item("connectivity", o.connectivity)?;
    d.set_item("ef_construction", o.ef_construction)?;
    d.set_item("ef_search", o.ef_search)?;
    d.set_item("precision", o.precision.name())?;
    d.set_item("rescore", o.rescore)?;
    Ok(d)
}
