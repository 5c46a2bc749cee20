//! The one error type of remdb, shared by every layer.
//!
//! Storage and session code return [`Error`]; the query layer converts it to and from
//! `DataFusionError` at its boundary (see `query.rs`), so an error raised deep in a scan
//! reaches the caller with its kind intact.

use std::fmt;

/// Result alias used across remdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, by kind. The message always names the offending thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad input from the caller: a malformed value, an unknown column, a bad tenant id.
    InvalidArgument(String),
    /// The named thing (tenant, row) does not exist.
    NotFound(String),
    /// A create collided with an existing thing (duplicate id, existing tenant).
    AlreadyExists(String),
    /// A SQL statement could not be planned or executed.
    Query(String),
    /// RocksDB or the file system failed.
    Storage(String),
    /// Stored bytes could not be decoded: the database is damaged or from another version.
    Corruption(String),
    /// A statement needed more memory than its limit allows.
    ResourcesExhausted(String),
    /// The work was stopped before it finished (its caller gave up: a timeout).
    Cancelled(String),
    /// A bug, in remdb or a library below it: code panicked while running a statement.
    /// The statement failed as a whole; the process and every other statement go on.
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The error a caught panic becomes: `doing` says what panicked, the payload why.
    pub fn from_panic(doing: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!("{doing} panicked: {why}");
        Error::Internal(format!(
            "{doing} failed on a bug in the engine (a panic: {why}); nothing else was affected"
        ))
    }

    /// The message without the kind in front of it.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::Query(m)
            | Error::Storage(m)
            | Error::Corruption(m)
            | Error::ResourcesExhausted(m)
            | Error::Cancelled(m)
            | Error::Internal(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::AlreadyExists(m) => write!(f, "already exists: {m}"),
            Error::Query(m) => write!(f, "query error: {m}"),
            Error::Storage(m) => write!(f, "storage error: {m}"),
            Error::Corruption(m) => write!(f, "corruption: {m}"),
            Error::ResourcesExhausted(m) => write!(f, "resources exhausted: {m}"),
            Error::Cancelled(m) => write!(f, "cancelled: {m}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.into_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
