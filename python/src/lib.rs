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

mod convert;
mod results;
mod tenant;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use remdb::{Db, DbOptions, Error, Table};

use tenant::TenantHandle;

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
    InternalError,
    RemDbError,
    "A bug: the engine panicked running the call; the call failed, nothing else did."
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
        Error::Internal(m) => InternalError::new_err(m),
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

#[pymodule]
fn _rem_db(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Database>()?;
    m.add_class::<TenantHandle>()?;
    m.add_class::<results::Prepared>()?;
    m.add_class::<results::ArrowResult>()?;
    m.add_class::<convert::Timestamp>()?;
    m.add_function(wrap_pyfunction!(convert::new_id, m)?)?;
    m.add("RemDbError", py.get_type::<RemDbError>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("AlreadyExists", py.get_type::<AlreadyExists>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    m.add("ResourcesExhausted", py.get_type::<ResourcesExhausted>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
