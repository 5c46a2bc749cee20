//! Front end: the native module `rem_db._rem_db` of the Python package.
//!
//! A thin layer over the library API ([`remdb::Db`], [`remdb::Tenant`]): rows cross as
//! dicts of plain values (JSON columns as JSON text, timestamps as microseconds since the
//! epoch, UTC), results as Arrow through the C stream interface (`__arrow_c_stream__`),
//! so pyarrow takes the batches without a copy. The typed objects, the predicate builder
//! and the conversions of Python values live in the package's Python code (`rem_db/`).
//!
//! Every call that reads or writes releases the GIL while it runs. One [`remdb::Db`] is
//! open per database directory and process, shared by every `Database` opened on it
//! (RocksDB admits one opener per directory).

/// The extension's Rust allocations (the engine's rows, batches and plans) go to
/// mimalloc rather than the process's malloc, which the interpreter and pyarrow share:
/// the engine runs faster in a Python process with it (docs/BENCHMARKS.md, the Python
/// package). RocksDB's C++ allocations stay with the process's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use arrow::array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use remdb::{
    Batch, Db, DbOptions, Direction, Edge, Entity, Error, IndexKind, Metric, Moment, Param,
    Precision, PreparedStatement, Resource, Row, Table, Tenant, VectorOptions,
};

pyo3::create_exception!(
    _rem_db,
    RemDbError,
    PyException,
    "Base class of remdb's errors."
);
pyo3::create_exception!(
    _rem_db,
    InvalidArgument,
    RemDbError,
    "Bad input from the caller."
);
pyo3::create_exception!(
    _rem_db,
    NotFound,
    RemDbError,
    "The named tenant or row does not exist."
);
pyo3::create_exception!(
    _rem_db,
    AlreadyExists,
    RemDbError,
    "A create collided with an existing thing."
);
pyo3::create_exception!(
    _rem_db,
    QueryError,
    RemDbError,
    "A SQL statement could not be planned or run."
);
pyo3::create_exception!(
    _rem_db,
    StorageError,
    RemDbError,
    "RocksDB or the file system failed."
);
pyo3::create_exception!(
    _rem_db,
    CorruptionError,
    RemDbError,
    "Stored bytes could not be decoded."
);

pyo3::create_exception!(
    _rem_db,
    ResourcesExhausted,
    QueryError,
    "A statement needed more memory than its limit allows."
);
pyo3::create_exception!(
    _rem_db,
    Cancelled,
    QueryError,
    "The work was stopped before it finished."
);

/// remdb's error as the Python exception of its kind.
fn py_err(e: Error) -> PyErr {
    match e {
        Error::InvalidArgument(m) => InvalidArgument::new_err(m),
        Error::NotFound(m) => NotFound::new_err(m),
        Error::AlreadyExists(m) => AlreadyExists::new_err(m),
        Error::Query(m) => QueryError::new_err(m),
        Error::Storage(m) => StorageError::new_err(m),
        Error::Corruption(m) => CorruptionError::new_err(m),
        Error::ResourcesExhausted(m) => ResourcesExhausted::new_err(m),
        Error::Cancelled(m) => Cancelled::new_err(m),
    }
}

fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(msg.into())
}

trait OrPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for remdb::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
}

/// The process's runtime for the library's async calls (its workers follow the cores).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("rem_db")
            .enable_all()
            .build()
            .expect("the tokio runtime of rem_db could not start")
    })
}

/// Runs a call of the library to its end on this thread: the calling thread waits for
/// it anyway, so the engine's steps run here rather than on the blocking pool.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    remdb::query::lazy::polled_here(|| runtime().block_on(f))
}

/// The open databases of this process, by canonical directory.
fn open_dbs() -> &'static Mutex<HashMap<PathBuf, Weak<Db>>> {
    static DBS: OnceLock<Mutex<HashMap<PathBuf, Weak<Db>>>> = OnceLock::new();
    DBS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn share_db(path: &str) -> PyResult<Arc<Db>> {
    // Private, as the library makes the directories it creates (see `Db::open`).
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(|e| StorageError::new_err(format!("cannot create directory {path}: {e}")))?;
    let key = std::fs::canonicalize(path)
        .map_err(|e| StorageError::new_err(format!("cannot open directory {path}: {e}")))?;
    let mut dbs = open_dbs().lock();
    if let Some(db) = dbs.get(&key).and_then(Weak::upgrade) {
        return Ok(db);
    }
    let db = Arc::new(Db::open(&key, DbOptions::default()).map_err(|e| match e {
        // Most often RocksDB's LOCK file, held by another process.
        Error::Storage(m) => StorageError::new_err(format!(
            "cannot open the database at {path} (is another process using it?): {m}"
        )),
        other => py_err(other),
    })?);
    dbs.retain(|_, db| db.strong_count() > 0);
    dbs.insert(key, Arc::downgrade(&db));
    Ok(db)
}

fn table(name: &str) -> PyResult<Table> {
    Table::from_name(name).ok_or_else(|| {
        invalid(format!(
            "unknown table '{name}' (resources, entities, edges, moments)"
        ))
    })
}

/// A database directory, shared by every `Database` of this process opened on it.
#[pyclass(frozen, module = "rem_db._rem_db")]
struct Database {
    db: Mutex<Option<Arc<Db>>>,
}

impl Database {
    fn db(&self) -> PyResult<Arc<Db>> {
        self.db
            .lock()
            .clone()
            .ok_or_else(|| RemDbError::new_err("the database is closed"))
    }
}

#[pymethods]
impl Database {
    #[new]
    fn new(py: Python<'_>, path: &str) -> PyResult<Self> {
        let db = py.detach(|| share_db(path))?;
        Ok(Database {
            db: Mutex::new(Some(db)),
        })
    }

    /// The session of tenant `id`; with `create`, the tenant is created on first use.
    fn tenant(&self, py: Python<'_>, id: &str, create: bool) -> PyResult<TenantHandle> {
        let db = self.db()?;
        let tenant = py.detach(|| {
            if create && !db.has_tenant(id) {
                match db.create_tenant(id) {
                    Ok(t) => Ok(t),
                    // Created meanwhile by another thread.
                    Err(Error::AlreadyExists(_)) => db.tenant(id),
                    Err(e) => Err(e),
                }
            } else {
                db.tenant(id)
            }
        });
        Ok(TenantHandle::new(tenant.py()?))
    }

    fn list_tenants(&self) -> PyResult<Vec<String>> {
        Ok(self.db()?.list_tenants())
    }

    fn has_tenant(&self, id: &str) -> PyResult<bool> {
        Ok(self.db()?.has_tenant(id))
    }

    fn drop_tenant(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.drop_tenant(id)).py()
    }

    /// Lets go of the shared database; it closes when its last user lets go.
    fn close(&self) {
        self.db.lock().take();
    }
}

/// Most prepared statements one tenant handle keeps by SQL text.
const KEPT_STATEMENTS: usize = 256;

/// One tenant's session, with the prepared statements of the SQL texts it ran.
#[pyclass(frozen, name = "Tenant", module = "rem_db._rem_db")]
struct TenantHandle {
    tenant: Mutex<Option<Tenant>>,
    statements: Mutex<HashMap<String, Arc<PreparedStatement>>>,
    /// The statements handed out by `prepare`, emptied on close: each holds the
    /// tenant, and so the open database.
    handed_out: Mutex<Vec<Weak<Mutex<Option<PreparedStatement>>>>>,
}

impl TenantHandle {
    fn new(tenant: Tenant) -> Self {
        TenantHandle {
            tenant: Mutex::new(Some(tenant)),
            statements: Mutex::new(HashMap::new()),
            handed_out: Mutex::new(Vec::new()),
        }
    }

    fn get(&self) -> PyResult<Tenant> {
        self.tenant
            .lock()
            .clone()
            .ok_or_else(|| RemDbError::new_err("the database is closed"))
    }

    /// The prepared statement of `sql`, prepared on first use; `None` for statements
    /// that cannot be prepared (index commands), which run from their text.
    fn statement(&self, tenant: &Tenant, sql: &str) -> Option<Arc<PreparedStatement>> {
        if let Some(p) = self.statements.lock().get(sql) {
            return Some(Arc::clone(p));
        }
        let prepared = Arc::new(block_on(tenant.prepare(sql)).ok()?);
        let mut kept = self.statements.lock();
        if kept.len() >= KEPT_STATEMENTS {
            kept.clear();
        }
        kept.insert(sql.to_string(), Arc::clone(&prepared));
        Some(prepared)
    }
}

#[pymethods]
impl TenantHandle {
    #[getter]
    fn id(&self) -> PyResult<String> {
        Ok(self.get()?.id().to_string())
    }

    /// Runs one SQL statement with values for `$1`, `$2`, ...; the result as Arrow.
    fn sql(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<ArrowResult> {
        let tenant = self.get()?;
        let params = params.iter().map(param).collect::<PyResult<Vec<_>>>()?;
        py.detach(|| -> remdb::Result<ArrowResult> {
            match self.statement(&tenant, sql) {
                Some(prepared) => run_prepared(&prepared, &params),
                // Not preparable: the statement's own error, or an index command.
                None => {
                    let result = block_on(tenant.sql_with_params(sql, &params))?;
                    Ok(ArrowResult::new(result.schema, result.batches))
                }
            }
        })
        .py()
    }

    /// The physical plan the statement runs with these values, as EXPLAIN shows it.
    fn explain(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let tenant = self.get()?;
        let params = params.iter().map(param).collect::<PyResult<Vec<_>>>()?;
        py.detach(|| {
            let prepared = block_on(tenant.prepare(sql))?;
            block_on(prepared.explain(&params))
        })
        .py()
    }

    /// Applies writes atomically: `(op, table, value)` with op `insert`, `update` (value:
    /// a row dict) or `delete` (value: the key, a list of text). Returns the id of each
    /// write (generated for rows inserted without one; `src|edge_type|dst` for edges).
    fn write(
        &self,
        py: Python<'_>,
        ops: Vec<(String, String, Bound<'_, PyAny>)>,
    ) -> PyResult<Vec<String>> {
        let tenant = self.get()?;
        let mut batch = Batch::new();
        let mut ids = Vec::with_capacity(ops.len());
        for (op, table_name, value) in &ops {
            let table = table(table_name)?;
            match op.as_str() {
                "insert" | "update" => {
                    let dict = value
                        .cast::<PyDict>()
                        .map_err(|_| invalid("a row must be a dict"))?;
                    let row = row_from_dict(table, dict)?;
                    ids.push(row_id(&row));
                    batch = if op == "insert" {
                        batch.insert(row)
                    } else {
                        batch.update(row)
                    };
                }
                "delete" => {
                    let key: Vec<String> = value.extract()?;
                    let parts: Vec<&str> = key.iter().map(String::as_str).collect();
                    ids.push(key.join("|"));
                    batch = batch.delete(table, &parts);
                }
                other => {
                    return Err(invalid(format!(
                        "unknown write '{other}' (insert, update, delete)"
                    )));
                }
            }
        }
        py.detach(|| tenant.write(batch)).py()?;
        Ok(ids)
    }

    /// The row with this key (`[id]`, or `[src, edge_type, dst]` for edges), or None.
    fn get_row<'py>(
        &self,
        py: Python<'py>,
        table_name: &str,
        key: Vec<String>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let tenant = self.get()?;
        let table = table(table_name)?;
        let row = py
            .detach(|| -> remdb::Result<Option<Row>> {
                Ok(match (table, key.as_slice()) {
                    (Table::Resources, [id]) => tenant.get_resource(id)?.map(Row::Resource),
                    (Table::Entities, [id]) => tenant.get_entity(id)?.map(Row::Entity),
                    (Table::Moments, [id]) => tenant.get_moment(id)?.map(Row::Moment),
                    (Table::Edges, [src, edge_type, dst]) => {
                        tenant.get_edge(src, edge_type, dst)?.map(Row::Edge)
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "a key of {} has {} part(s), got {}",
                            table.name(),
                            if table == Table::Edges { 3 } else { 1 },
                            key.len()
                        )));
                    }
                })
            })
            .py()?;
        row.map(|r| row_to_dict(py, &r)).transpose()
    }

    /// Deletes the row with this key; false when there was none.
    fn delete_row(&self, py: Python<'_>, table_name: &str, key: Vec<String>) -> PyResult<bool> {
        let tenant = self.get()?;
        let table = table(table_name)?;
        py.detach(|| match (table, key.as_slice()) {
            (Table::Resources, [id]) => tenant.delete_resource(id),
            (Table::Entities, [id]) => tenant.delete_entity(id),
            (Table::Moments, [id]) => tenant.delete_moment(id),
            (Table::Edges, [src, edge_type, dst]) => tenant.delete_edge(src, edge_type, dst),
            _ => Err(Error::invalid(format!(
                "a key of {} has {} part(s), got {}",
                table.name(),
                if table == Table::Edges { 3 } else { 1 },
                key.len()
            ))),
        })
        .py()
    }

    /// Sets (or, with None, removes) a resource's embedding.
    fn set_embedding(
        &self,
        py: Python<'_>,
        id: &str,
        vector: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let tenant = self.get()?;
        let vector = vector.map(|v| to_vector(&v)).transpose()?;
        py.detach(|| tenant.set_embedding(id, vector)).py()
    }

    /// The `top_k` resources nearest to the query vector, best first, as `(row, score)`.
    #[pyo3(signature = (query, top_k, min_score=None))]
    fn search_similar<'py>(
        &self,
        py: Python<'py>,
        query: Bound<'py, PyAny>,
        top_k: usize,
        min_score: Option<f32>,
    ) -> PyResult<Vec<(Bound<'py, PyDict>, f32)>> {
        let tenant = self.get()?;
        if min_score.is_some_and(|m| !m.is_finite()) {
            return Err(invalid("min_score must be a finite number"));
        }
        let query = to_vector(&query)?;
        let hits = py
            .detach(|| tenant.search_similar(&query, top_k, min_score))
            .py()?;
        hits.into_iter()
            .map(|(r, score)| Ok((row_to_dict(py, &Row::Resource(r))?, score)))
            .collect()
    }

    /// Nodes reached from `start`: `(id, depth, edge_type, path, entity row or None)`.
    #[allow(clippy::type_complexity)]
    fn traverse<'py>(
        &self,
        py: Python<'py>,
        start: &str,
        direction: &str,
        max_depth: u32,
        edge_types: Vec<String>,
    ) -> PyResult<Vec<(String, u32, String, Vec<String>, Option<Bound<'py, PyDict>>)>> {
        let tenant = self.get()?;
        let direction = Direction::parse(direction).py()?;
        let types: Vec<&str> = edge_types.iter().map(String::as_str).collect();
        let hops = py
            .detach(|| tenant.traverse(start, direction, max_depth, &types))
            .py()?;
        hops.into_iter()
            .map(|(hop, entity)| {
                let entity = entity
                    .map(|e| row_to_dict(py, &Row::Entity(e)))
                    .transpose()?;
                Ok((hop.id, hop.depth, hop.edge_type, hop.path, entity))
            })
            .collect()
    }

    /// REM's LOOKUP: `(key, table, row)` for every entity or resource a key names.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Vec<(String, String, Bound<'py, PyDict>)>> {
        let tenant = self.get()?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = py.detach(|| tenant.lookup(&keys)).py()?;
        found
            .into_iter()
            .map(|f| {
                Ok((
                    f.key,
                    f.row.table().name().to_string(),
                    row_to_dict(py, &f.row)?,
                ))
            })
            .collect()
    }

    /// Declares an index on a JSON path of `column` (empty path: a whole column).
    fn create_index<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        table_name: &str,
        column: &str,
        path: Vec<String>,
        kind: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let tenant = self.get()?;
        let table = table(table_name)?;
        let kind = match kind {
            "value" => IndexKind::Value,
            "list" => IndexKind::List,
            other => {
                return Err(invalid(format!(
                    "unknown index kind '{other}' (value, list)"
                )));
            }
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let def = py
            .detach(|| tenant.create_index(name, table, column, &path, kind))
            .py()?;
        index_dict(py, &def)
    }

    fn drop_index(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let tenant = self.get()?;
        py.detach(|| tenant.drop_index(name)).py()
    }

    fn list_indexes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let defs = self.get()?.list_indexes().py()?;
        defs.iter().map(|d| index_dict(py, d)).collect()
    }

    /// Declares the vector index's options (before the first vector is stored, except
    /// `ef_search`); missing options keep their defaults.
    // One Python keyword argument per option.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dimensions=None, metric=None, connectivity=None, ef_construction=None, ef_search=None, precision=None))]
    fn configure_vectors(
        &self,
        py: Python<'_>,
        dimensions: Option<usize>,
        metric: Option<&str>,
        connectivity: Option<usize>,
        ef_construction: Option<usize>,
        ef_search: Option<usize>,
        precision: Option<&str>,
    ) -> PyResult<()> {
        let tenant = self.get()?;
        let mut options = tenant.vector_options().py()?.unwrap_or_default();
        if dimensions.is_some() {
            options.dimensions = dimensions;
        }
        if let Some(m) = metric {
            options.metric = Metric::parse(m).py()?;
        }
        if let Some(c) = connectivity {
            options.connectivity = c;
        }
        if let Some(e) = ef_construction {
            options.ef_construction = e;
        }
        if let Some(e) = ef_search {
            options.ef_search = e;
        }
        if let Some(p) = precision {
            options.precision = Precision::parse(p).py()?;
        }
        py.detach(|| tenant.configure_vectors(options)).py()
    }

    fn vector_options<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(o) = self.get()?.vector_options().py()? else {
            return Ok(None);
        };
        Some(vector_options_dict(py, &o)).transpose()
    }

    /// Appends the rows of an Arrow stream (anything with `__arrow_c_stream__`) to a
    /// table in one atomic write; returns the number of rows.
    fn insert_arrow(
        &self,
        py: Python<'_>,
        table_name: &str,
        data: Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let tenant = self.get()?;
        let table = table(table_name)?;
        let reader = import_stream(&data)?;
        py.detach(|| {
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid(format!("cannot read the Arrow stream: {e}")))?;
            block_on(tenant.insert_batches(table, batches))
        })
        .py()
    }

    fn count(&self, py: Python<'_>, table_name: &str) -> PyResult<u64> {
        let tenant = self.get()?;
        let table = table(table_name)?;
        py.detach(|| tenant.count(table)).py()
    }

    /// Saves the vector index to disk (it is also saved when the database closes).
    fn save_vectors(&self, py: Python<'_>) -> PyResult<()> {
        let tenant = self.get()?;
        py.detach(|| tenant.save_vectors()).py()
    }

    /// A statement planned once, for repeated runs with other values.
    fn prepare(&self, py: Python<'_>, sql: &str) -> PyResult<Prepared> {
        let tenant = self.get()?;
        let statement = py.detach(|| block_on(tenant.prepare(sql))).py()?;
        let statement = Arc::new(Mutex::new(Some(statement)));
        let mut handed_out = self.handed_out.lock();
        handed_out.retain(|s| s.strong_count() > 0);
        handed_out.push(Arc::downgrade(&statement));
        Ok(Prepared { statement })
    }

    fn close(&self) {
        self.tenant.lock().take();
        self.statements.lock().clear();
        for statement in self.handed_out.lock().drain(..) {
            if let Some(s) = statement.upgrade() {
                s.lock().take();
            }
        }
    }
}

/// A prepared statement (see `Tenant.prepare`).
#[pyclass(frozen, module = "rem_db._rem_db")]
struct Prepared {
    /// None once its tenant handle is closed.
    statement: Arc<Mutex<Option<PreparedStatement>>>,
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
fn run_prepared(statement: &PreparedStatement, params: &[Param]) -> remdb::Result<ArrowResult> {
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
struct ArrowResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
}

impl ArrowResult {
    fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
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

fn import_stream(data: &Bound<'_, PyAny>) -> PyResult<ArrowArrayStreamReader> {
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

/// A timestamp parameter: microseconds since the epoch, UTC (the package converts
/// `datetime` values to it).
#[pyclass(frozen, module = "rem_db._rem_db")]
struct Timestamp {
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
fn param(value: &Bound<'_, PyAny>) -> PyResult<Param> {
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
fn to_vector(value: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
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
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn row_id(row: &Row) -> String {
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

fn row_from_dict(table: Table, dict: &Bound<'_, PyDict>) -> PyResult<Row> {
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

fn row_to_dict<'py>(py: Python<'py>, row: &Row) -> PyResult<Bound<'py, PyDict>> {
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

fn index_dict<'py>(py: Python<'py>, def: &remdb::IndexDef) -> PyResult<Bound<'py, PyDict>> {
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

fn vector_options_dict<'py>(py: Python<'py>, o: &VectorOptions) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dimensions", o.dimensions)?;
    d.set_item("metric", o.metric.name())?;
    d.set_item("connectivity", o.connectivity)?;
    d.set_item("ef_construction", o.ef_construction)?;
    d.set_item("ef_search", o.ef_search)?;
    d.set_item(
        "precision",
        match o.precision {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        },
    )?;
    Ok(d)
}

#[pymodule]
fn _rem_db(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Database>()?;
    m.add_class::<TenantHandle>()?;
    m.add_class::<Prepared>()?;
    m.add_class::<ArrowResult>()?;
    m.add_class::<Timestamp>()?;
    m.add_function(wrap_pyfunction!(new_id, m)?)?;
    m.add("RemDbError", py.get_type::<RemDbError>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    m.add("ResourcesExhausted", py.get_type::<ResourcesExhausted>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    Ok(())
}
