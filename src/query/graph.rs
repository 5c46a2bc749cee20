//! Query layer: the REM graph and key verbs as table functions.
//!
//! * `traverse(start_id, direction, max_depth [, edge_types])`: the entities reached from
//!   `start_id` breadth-first over the edge indexes (`out`: the primary key
//!   `(src, edge_type, dst)`, `in`: `edges_dst`, `both`: the two), each once, with
//!   `depth`, the `edge_type` that first reached it and the `path` from the start. Its
//!   rows are the entities' columns, so it joins and filters like a table; a node an edge
//!   names but that has no entity row comes back with only its `id`.
//! * `lookup(key, ...)`: entities whose id, name or alias matches a key (names ignoring
//!   case and spacing, through `entities_name`) and resources whose id or uri is the key.
//!
//! Both run when their plan executes (`FunctionExec`, shown as `TraverseExec` and
//! `LookupExec`), so EXPLAIN only shows the walk they will do.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::EmissionType;

use super::convert::{rows_to_batch, table_schema};
use super::exec::external;
use super::lazy::Chunks;
use super::lazy::{Once, Stop};
use super::leaf::{Leaf, LeafExec};
use super::vector::constant;
use crate::storage::{Direction, MAX_TRAVERSE_DEPTH, Row, Table, TenantStore};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

fn text_arg(session: &dyn Session, expr: &Expr, func: &str, what: &str) -> DfResult<String> {
    match constant(session, expr, func, what)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(s),
        other => plan_err!("{func}: {what} must be text, got {other}"),
    }
}

/// Edge types: one text value, an array of them, or NULL for every type.
fn edge_types_arg(session: &dyn Session, expr: &Expr) -> DfResult<Vec<String>> {
    let value = constant(session, expr, "traverse", "edge_types")?;
    if value.is_null() {
        return Ok(vec![]);
    }
    if let ScalarValue::Utf8(Some(s))
    | ScalarValue::Utf8View(Some(s))
    | ScalarValue::LargeUtf8(Some(s)) = value
    {
        return Ok(vec![s]);
    }
    let list = match &value {
        ScalarValue::List(l) => l.value(0),
        ScalarValue::LargeList(l) => l.value(0),
        ScalarValue::FixedSizeList(l) => l.value(0),
        other => {
            return plan_err!(
                "traverse: edge_types must be text or an array of text, got {}",
                other.data_type()
            );
        }
    };
    (0..list.len())
        .map(|i| match ScalarValue::try_from_array(&list, i)? {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => Ok(s),
            other => plan_err!("traverse: edge_types must hold text, got {other}"),
        })
        .collect()
}

/// A table function's work: one batch of rows, computed when its plan runs.
trait Compute: fmt::Debug + Send + Sync + 'static {
    /// The exec node's name in EXPLAIN.
    const NAME: &str;
    /// The rows' schema.
    fn schema() -> SchemaRef;
    /// The rows; columns outside `projection` may be left NULL.
    /// `stop` is set when no one waits for the rows any more.
    fn run(&self, store: &TenantStore, projection: &[usize], stop: &Stop) -> DfResult<RecordBatch>;
    /// The arguments and indexes, for EXPLAIN.
    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result;
}

/// The table one call of a table function stands for.
#[derive(Debug)]
struct FunctionTable<C> {
    store: TenantStore,
    call: Arc<C>,
    schema: SchemaRef,
}

impl<C: Compute> FunctionTable<C> {
    fn new(store: TenantStore, call: C) -> Self {
        FunctionTable {
            store,
            call: Arc::new(call),
            schema: C::schema(),
        }
    }
}

#[async_trait]
impl<C: Compute> TableProvider for FunctionTable<C> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let schema = Arc::new(self.schema.project(&projection)?);
        let function = Function {
            store: self.store.clone(),
            call: Arc::clone(&self.call),
            projection,
        };
        Ok(Arc::new(LeafExec::new(function, schema)))
    }
}

/// Runs a table function's work when polled (`TraverseExec`, `LookupExec`).
#[derive(Debug)]
struct Function<C> {
    store: TenantStore,
    call: Arc<C>,
    projection: Vec<usize>,
}

impl<C> Clone for Function<C> {
    fn clone(&self) -> Self {
        Function {
            store: self.store.clone(),
            call: Arc::clone(&self.call),
            projection: self.projection.clone(),
        }
    }
}

impl<C: Compute> Leaf for Function<C> {
    const NAME: &'static str = C::NAME;
    const EMISSION: EmissionType = EmissionType::Final;

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.call.describe(f)
    }

    fn start(
        &self,
        _partition: usize,
        _context: &TaskContext,
        _schema: &SchemaRef,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn Chunks>> {
        let (store, call, projection) = (
            self.store.clone(),
            Arc::clone(&self.call),
            self.projection.clone(),
        );
        Ok(Box::new(Once::new(move |stop: &Stop| {
            Ok(call.run(&store, &projection, stop)?.project(&projection)?)
        })))
    }
}

/// `traverse(start_id, direction, max_depth [, edge_types])`.
#[derive(Debug)]
pub struct TraverseFunc {
    store: TenantStore,
}

impl TraverseFunc {
    pub fn new(store: TenantStore) -> Self {
        TraverseFunc { store }
    }
}

/// The arguments of one walk.
#[derive(Debug, Clone, PartialEq)]
struct Walk {
    start: String,
    direction: Direction,
    max_depth: u32,
    edge_types: Vec<String>,
}

impl TableFunctionImpl for TraverseFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=4).contains(&exprs.len()) {
            return plan_err!(
                "traverse(start_id, direction, max_depth [, edge_types]) takes 3 or 4 arguments, got {}",
                exprs.len()
            );
        }
        let session = args.session();
        let start = text_arg(session, &exprs[0], "traverse", "start_id")?;
        let direction = Direction::parse(&text_arg(session, &exprs[1], "traverse", "direction")?)
            .map_err(|e| DataFusionError::Plan(format!("traverse: {}", e.message())))?;
        let max_depth = match constant(session, &exprs[2], "traverse", "max_depth")?
            .cast_to(&DataType::Int64)
        {
            Ok(ScalarValue::Int64(Some(d))) if (0..=MAX_TRAVERSE_DEPTH as i64).contains(&d) => {
                d as u32
            }
            other => {
                let got = other
                    .map(|v| v.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return plan_err!(
                    "traverse: max_depth must be an integer within 0..={MAX_TRAVERSE_DEPTH}, got {got}"
                );
            }
        };
        let edge_types = match exprs.get(3) {
            Some(e) => edge_types_arg(session, e)?,
            None => vec![],
        };
        Ok(Arc::new(FunctionTable::new(
            self.store.clone(),
            Walk {
                start,
                direction,
                max_depth,
                edge_types,
            },
        )))
    }
}

/// Column positions after the entity columns.
const ENTITY_COLUMNS: usize = 7;

fn traverse_schema() -> SchemaRef {
    let mut fields: Vec<Field> = table_schema(Table::Entities)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    debug_assert_eq!(fields.len(), ENTITY_COLUMNS);
    fields.push(Field::new("depth", DataType::Int32, false));
    fields.push(Field::new("edge_type", DataType::Utf8, false));
    fields.push(Field::new(
        "path",
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        false,
    ));
    Arc::new(Schema::new(fields))
}

impl Compute for Walk {
    const NAME: &str = "TraverseExec";

    fn schema() -> SchemaRef {
        traverse_schema()
    }

    fn run(&self, store: &TenantStore, projection: &[usize], stop: &Stop) -> DfResult<RecordBatch> {
        let w = self;
        let hops = store
            .traverse_until(&w.start, w.direction, w.max_depth, &w.edge_types, &|| {
                stop.is_set()
            })
            .map_err(external)?;
        let ids: Vec<&str> = hops.iter().map(|h| h.id.as_str()).collect();
        // The entity rows are read only when an entity column (other than id) is wanted.
        let found = if projection.iter().any(|c| (1..ENTITY_COLUMNS).contains(c)) {
            store.entities_by_id(&ids).map_err(external)?
        } else {
            vec![None; ids.len()]
        };
        // Entity columns for the nodes that have a row; NULL for the others.
        let mut rows: Vec<Row> = Vec::new();
        let positions: UInt32Array = found
            .into_iter()
            .map(|row| {
                row.map(|r| {
                    rows.push(r);
                    (rows.len() - 1) as u32
                })
            })
            .collect();
        let all: Vec<usize> = (0..ENTITY_COLUMNS).collect();
        let entities = rows_to_batch(Table::Entities, &rows, &all).map_err(external)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ENTITY_COLUMNS + 3);
        columns.push(Arc::new(StringArray::from(ids.clone())));
        for column in entities.columns().iter().skip(1) {
            columns.push(take(column.as_ref(), &positions, None)?);
        }
        columns.push(Arc::new(Int32Array::from_iter_values(
            hops.iter().map(|h| h.depth as i32),
        )));
        columns.push(Arc::new(StringArray::from_iter_values(
            hops.iter().map(|h| h.edge_type.as_str()),
        )));
        let mut paths = ListBuilder::new(StringBuilder::new());
        for hop in &hops {
            for id in &hop.path {
                paths.values().append_value(id);
            }
            paths.append(true);
        }
        columns.push(Arc::new(paths.finish()));
        Ok(RecordBatch::try_new(traverse_schema(), columns)?)
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let w = self;
        let access = match w.direction {
            Direction::Out => "primary (src, edge_type, dst)",
            Direction::In => "index edges_dst",
            Direction::Both => "primary (src, edge_type, dst) + index edges_dst",
        };
        write!(
            f,
            "start='{}', direction={}, max_depth={}",
            w.start.replace('\'', "''"),
            w.direction.name(),
            w.max_depth
        )?;
        if !w.edge_types.is_empty() {
            write!(f, ", edge_types=[{}]", w.edge_types.join(", "))?;
        }
        write!(f, ", access={access}")
    }
}

/// `lookup(key, ...)`.
#[derive(Debug)]
pub struct LookupFunc {
    store: TenantStore,
}

impl LookupFunc {
    pub fn new(store: TenantStore) -> Self {
        LookupFunc { store }
    }
}

/// The most keys one `lookup` takes.
const MAX_LOOKUP_KEYS: usize = 1024;

impl TableFunctionImpl for LookupFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > MAX_LOOKUP_KEYS {
            return plan_err!(
                "lookup(key, ...) takes 1 to {MAX_LOOKUP_KEYS} keys, got {}",
                exprs.len()
            );
        }
        let keys = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| text_arg(args.session(), e, "lookup", &format!("key {}", i + 1)))
            .collect::<DfResult<Vec<String>>>()?;
        Ok(Arc::new(FunctionTable::new(
            self.store.clone(),
            LookupKeys(keys),
        )))
    }
}

fn lookup_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("key", false),
        text("table_name", false),
        text("id", false),
        text("type", true),
        text("name", true),
        text("uri", true),
        text("content", true),
        text("data", false),
    ]))
}

/// The keys of one `lookup`.
#[derive(Debug, Clone, PartialEq)]
struct LookupKeys(Vec<String>);

impl Compute for LookupKeys {
    const NAME: &str = "LookupExec";

    fn schema() -> SchemaRef {
        lookup_schema()
    }

    fn run(
        &self,
        store: &TenantStore,
        _projection: &[usize],
        _stop: &Stop,
    ) -> DfResult<RecordBatch> {
        let found = store.lookup(&self.0).map_err(external)?;
        let mut columns: [Vec<Option<&str>>; 8] = Default::default();
        for f in &found {
            let values: [Option<&str>; 8] = match &f.row {
                Row::Entity(e) => [
                    Some(f.key.as_str()),
                    Some("entities"),
                    Some(e.id.as_str()),
                    Some(e.entity_type.as_str()),
                    Some(e.name.as_str()),
                    None,
                    None,
                    Some(e.properties.as_str()),
                ],
                Row::Resource(r) => [
                    Some(f.key.as_str()),
                    Some("resources"),
                    Some(r.id.as_str()),
                    None,
                    None,
                    r.uri.as_deref(),
                    Some(r.content.as_str()),
                    Some(r.metadata.as_str()),
                ],
                // Lookups only return entities and resources.
                Row::Edge(_) | Row::Moment(_) => continue,
            };
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value);
            }
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect();
        Ok(RecordBatch::try_new(lookup_schema(), arrays)?)
    }

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .0
            .iter()
            .take(5)
            .map(|k| format!("'{}'", k.replace('\'', "''")))
            .collect();
        let more = if self.0.len() > 5 {
            format!(", ... {} keys", self.0.len())
        } else {
            String::new()
        };
        write!(
            f,
            "keys=[{}{more}], access=primary id + index entities_name + index resources_uri",
            keys.join(", ")
        )
    }
}
