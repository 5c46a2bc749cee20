//! The `Tenant` class: one tenant's session, with its SQL, row, graph, lookup, index
//! and vector calls, and the prepared statements of the SQL texts it ran.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use remdb::{
    Batch, Direction, Error, IndexKind, Metric, Precision, PreparedStatement, Row, Table, Tenant,
};

use crate::convert::{
    index_dict, param, row_from_dict, row_id, row_to_dict, to_vector, vector_options_dict,
};
use crate::results::{ArrowResult, Prepared, import_stream, run_prepared};
use crate::{OrPy, RemDbError, block_on, invalid, table};

/// Most prepared statements one tenant handle keeps by SQL text.
const KEPT_STATEMENTS: usize = 256;

/// One tenant's session, with the prepared statements of the SQL texts it ran.
#[pyclass(frozen, name = "Tenant", module = "rem_db._rem_db")]
pub(crate) struct TenantHandle {
    tenant: Mutex<Option<Tenant>>,
    statements: Mutex<HashMap<String, Arc<PreparedStatement>>>,
    /// The statements handed out by `prepare`, emptied on close: each holds the
    /// tenant, and so the open database.
    handed_out: Mutex<Vec<Weak<Mutex<Option<PreparedStatement>>>>>,
}

impl TenantHandle {
    pub(crate) fn new(tenant: Tenant) -> Self {
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
    /// `ef_search` and `rescore`); missing options keep their current values.
    // One Python keyword argument per option.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (dimensions=None, metric=None, connectivity=None, ef_construction=None, ef_search=None, precision=None, rescore=None))]
    fn configure_vectors(
        &self,
        py: Python<'_>,
        dimensions: Option<usize>,
        metric: Option<&str>,
        connectivity: Option<usize>,
        ef_construction: Option<usize>,
        ef_search: Option<usize>,
        precision: Option<&str>,
        rescore: Option<usize>,
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
        if rescore.is_some() {
            options.rescore = rescore;
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
