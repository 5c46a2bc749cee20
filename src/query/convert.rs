//! Query layer: the Arrow schemas of the REM tables and row <-> RecordBatch conversion.
//!
//! Every column is declared nullable, so that `INSERT` may omit the ones the engine fills
//! (generated `id`, timestamps, empty JSON and lists) and so that a NULL in a required
//! column reaches [`batch_to_rows`], which refuses it naming the column
//! (`entities.type must not be NULL`) instead of Arrow's positional `column2` message.
//! Only `moments.end_timestamp` is ever NULL when read.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, Int64Array, ListArray, ListBuilder, RecordBatch,
    RecordBatchOptions, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};

use crate::catalog::ColumnType;
use crate::error::{Error, Result};
use crate::storage::{Edge, Entity, Moment, Resource, Row, Table};

/// The SQL type of every timestamp column: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The SQL type of `resources.embedding`: a list of f32 (its length is fixed per tenant
/// by the first vector, or declared).
pub fn vector_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The Arrow schema of a table, from its catalog columns.
fn build_schema(table: Table) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Text | ColumnType::Json => DataType::Utf8,
                ColumnType::Int64 => DataType::Int64,
                ColumnType::Timestamp => timestamp_type(),
                ColumnType::TextList => text_list(),
                ColumnType::Vector => vector_type(),
            };
            Field::new(c.name, ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

static SCHEMAS: LazyLock<[SchemaRef; 4]> = LazyLock::new(|| Table::ALL.map(build_schema));

/// The full Arrow schema of a table.
pub fn table_schema(table: Table) -> SchemaRef {
    Arc::clone(&SCHEMAS[table.tag() as usize - 1])
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

fn lists<'a>(values: impl Iterator<Item = &'a Vec<String>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for list in values {
        for item in list {
            builder.values().append_value(item);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

macro_rules! typed_rows {
    ($rows:expr, $variant:ident) => {
        $rows
            .iter()
            .filter_map(|row| match row {
                Row::$variant(r) => Some(r),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

fn resource_column(rows: &[&Resource], col: usize) -> ArrayRef {
    let it = rows.iter();
    match col {
        0 => strings(it.map(|r| r.id.as_str())),
        1 => Arc::new(StringArray::from_iter(it.map(|r| r.uri.as_deref()))),
        2 => Arc::new(Int64Array::from_iter_values(it.map(|r| r.chunk_index))),
        3 => strings(it.map(|r| r.content.as_str())),
        4 => strings(it.map(|r| r.metadata.as_str())),
        5 => timestamps(it.map(|r| Some(r.created_at))),
        6 => timestamps(it.map(|r| Some(r.updated_at))),
        _ => vectors(it.map(|r| r.embedding.as_deref())),
    }
}

fn vectors<'a>(values: impl Iterator<Item = Option<&'a [f32]>>) -> ArrayRef {
    let mut builder = ListBuilder::new(Float32Builder::new());
    for v in values {
        match v {
            Some(v) => {
                builder.values().append_slice(v);
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

/// The index of `resources.embedding` in the table schema.
pub const EMBEDDING_COLUMN: usize = 7;

fn entity_column(rows: &[&Entity], col: usize) -> ArrayRef {
    let it = rows.iter();
    match col {
        0 => strings(it.map(|e| e.id.as_str())),
        1 => strings(it.map(|e| e.entity_type.as_str())),
        2 => strings(it.map(|e| e.name.as_str())),
        3 => lists(it.map(|e| &e.aliases)),
        4 => strings(it.map(|e| e.properties.as_str())),
        5 => timestamps(it.map(|e| Some(e.created_at))),
        _ => timestamps(it.map(|e| Some(e.updated_at))),
    }
}

fn edge_column(rows: &[&Edge], col: usize) -> ArrayRef {
    let it = rows.iter();
    match col {
        0 => strings(it.map(|e| e.src.as_str())),
        1 => strings(it.map(|e| e.dst.as_str())),
        2 => strings(it.map(|e| e.edge_type.as_str())),
        3 => strings(it.map(|e| e.properties.as_str())),
        _ => timestamps(it.map(|e| Some(e.created_at))),
    }
}

fn moment_column(rows: &[&Moment], col: usize) -> ArrayRef {
    let it = rows.iter();
    match col {
        0 => strings(it.map(|m| m.id.as_str())),
        1 => timestamps(it.map(|m| Some(m.timestamp))),
        2 => timestamps(it.map(|m| m.end_timestamp)),
        3 => strings(it.map(|m| m.moment_type.as_str())),
        4 => lists(it.map(|m| &m.classifications)),
        5 => lists(it.map(|m| &m.resource_refs)),
        6 => lists(it.map(|m| &m.entity_refs)),
        7 => strings(it.map(|m| m.metadata.as_str())),
        _ => timestamps(it.map(|m| Some(m.created_at))),
    }
}

/// Builds a batch of the `projection` columns (indexes into the table schema) of `rows`.
pub fn rows_to_batch(table: Table, rows: &[Row], projection: &[usize]) -> Result<RecordBatch> {
    let schema = table_schema(table);
    let projected = Arc::new(
        schema
            .project(projection)
            .map_err(|e| Error::Query(e.to_string()))?,
    );
    let columns: Vec<ArrayRef> = match table {
        Table::Resources => {
            let rows = typed_rows!(rows, Resource);
            projection
                .iter()
                .map(|c| resource_column(&rows, *c))
                .collect()
        }
        Table::Entities => {
            let rows = typed_rows!(rows, Entity);
            projection
                .iter()
                .map(|c| entity_column(&rows, *c))
                .collect()
        }
        Table::Edges => {
            let rows = typed_rows!(rows, Edge);
            projection.iter().map(|c| edge_column(&rows, *c)).collect()
        }
        Table::Moments => {
            let rows = typed_rows!(rows, Moment);
            projection
                .iter()
                .map(|c| moment_column(&rows, *c))
                .collect()
        }
    };
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(projected, columns, &options)
        .map_err(|e| Error::Query(e.to_string()))
}

/// Reads the rows of a batch that has the table's full schema (as `INSERT` delivers it).
/// NULL in a defaultable column means "let the engine fill it".
pub fn batch_to_rows(table: Table, batch: &RecordBatch) -> Result<Vec<Row>> {
    let cols = Columns { table, batch };
    let n = batch.num_rows();
    let mut out = Vec::with_capacity(n);
    match table {
        Table::Resources => {
            let (id, uri, chunk, content, meta) = (
                cols.text("id")?,
                cols.text("uri")?,
                cols.int("chunk_index")?,
                cols.text("content")?,
                cols.text("metadata")?,
            );
            let (created, updated) = (cols.ts("created_at")?, cols.ts("updated_at")?);
            let embedding = cols.list("embedding")?;
            for i in 0..n {
                out.push(Row::Resource(Resource {
                    embedding: vector_value(embedding, i)?,
                    id: opt_text(id, i),
                    uri: uri.is_valid(i).then(|| uri.value(i).to_string()),
                    chunk_index: if chunk.is_valid(i) { chunk.value(i) } else { 0 },
                    content: req_text(table, "content", content, i)?,
                    metadata: opt_text(meta, i),
                    created_at: opt_ts(created, i),
                    updated_at: opt_ts(updated, i),
                }));
            }
        }
        Table::Entities => {
            let (id, ty, name, aliases, props) = (
                cols.text("id")?,
                cols.text("type")?,
                cols.text("name")?,
                cols.list("aliases")?,
                cols.text("properties")?,
            );
            let (created, updated) = (cols.ts("created_at")?, cols.ts("updated_at")?);
            for i in 0..n {
                out.push(Row::Entity(Entity {
                    id: opt_text(id, i),
                    entity_type: req_text(table, "type", ty, i)?,
                    name: req_text(table, "name", name, i)?,
                    aliases: list_values(aliases, i)?,
                    properties: opt_text(props, i),
                    created_at: opt_ts(created, i),
                    updated_at: opt_ts(updated, i),
                }));
            }
        }
        Table::Edges => {
            let (src, dst, ty, props, created) = (
                cols.text("src")?,
                cols.text("dst")?,
                cols.text("edge_type")?,
                cols.text("properties")?,
                cols.ts("created_at")?,
            );
            for i in 0..n {
                out.push(Row::Edge(Edge {
                    src: req_text(table, "src", src, i)?,
                    dst: req_text(table, "dst", dst, i)?,
                    edge_type: req_text(table, "edge_type", ty, i)?,
                    properties: opt_text(props, i),
                    created_at: opt_ts(created, i),
                }));
            }
        }
        Table::Moments => {
            let (id, ts, end, ty, class, rrefs, erefs, meta, created) = (
                cols.text("id")?,
                cols.ts("timestamp")?,
                cols.ts("end_timestamp")?,
                cols.text("type")?,
                cols.list("classifications")?,
                cols.list("resource_refs")?,
                cols.list("entity_refs")?,
                cols.text("metadata")?,
                cols.ts("created_at")?,
            );
            for i in 0..n {
                if ts.is_null(i) {
                    return Err(Error::invalid("moments.timestamp must not be NULL"));
                }
                out.push(Row::Moment(Moment {
                    id: opt_text(id, i),
                    timestamp: ts.value(i),
                    end_timestamp: end.is_valid(i).then(|| end.value(i)),
                    moment_type: req_text(table, "type", ty, i)?,
                    classifications: list_values(class, i)?,
                    resource_refs: list_values(rrefs, i)?,
                    entity_refs: list_values(erefs, i)?,
                    metadata: opt_text(meta, i),
                    created_at: opt_ts(created, i),
                }));
            }
        }
    }
    Ok(out)
}

struct Columns<'a> {
    table: Table,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn column(&self, name: &str) -> Result<&'a ArrayRef> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| Error::Query(format!("{}.{name} missing from batch", self.table.name())))
    }

    fn wrong_type(&self, name: &str, array: &ArrayRef) -> Error {
        Error::invalid(format!(
            "{}.{name} has type {}, expected {}",
            self.table.name(),
            array.data_type(),
            table_schema(self.table)
                .field_with_name(name)
                .map(|f| f.data_type().to_string())
                .unwrap_or_default()
        ))
    }

    fn text(&self, name: &str) -> Result<&'a StringArray> {
        let array = self.column(name)?;
        array
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong_type(name, array))
    }

    fn int(&self, name: &str) -> Result<&'a Int64Array> {
        let array = self.column(name)?;
        array
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .ok_or_else(|| self.wrong_type(name, array))
    }

    fn ts(&self, name: &str) -> Result<&'a TimestampMicrosecondArray> {
        let array = self.column(name)?;
        array
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| self.wrong_type(name, array))
    }

    fn list(&self, name: &str) -> Result<&'a ListArray> {
        let array = self.column(name)?;
        array
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong_type(name, array))
    }
}

fn opt_text(array: &StringArray, i: usize) -> String {
    if array.is_valid(i) {
        array.value(i).to_string()
    } else {
        String::new()
    }
}

fn req_text(table: Table, column: &str, array: &StringArray, i: usize) -> Result<String> {
    if array.is_null(i) {
        return Err(Error::invalid(format!(
            "{}.{column} must not be NULL",
            table.name()
        )));
    }
    Ok(array.value(i).to_string())
}

fn opt_ts(array: &TimestampMicrosecondArray, i: usize) -> i64 {
    if array.is_valid(i) { array.value(i) } else { 0 }
}

fn vector_value(array: &ListArray, i: usize) -> Result<Option<Vec<f32>>> {
    if array.is_null(i) {
        return Ok(None);
    }
    let values = array.value(i);
    let floats = values
        .as_primitive_opt::<datafusion::arrow::datatypes::Float32Type>()
        .ok_or_else(|| {
            Error::invalid(format!(
                "resources.embedding must be a list of floats, got {}",
                values.data_type()
            ))
        })?;
    if floats.null_count() > 0 {
        return Err(Error::invalid(
            "resources.embedding must not contain NULL values",
        ));
    }
    Ok(Some(floats.values().to_vec()))
}

fn list_values(array: &ListArray, i: usize) -> Result<Vec<String>> {
    if array.is_null(i) {
        return Ok(vec![]);
    }
    let values = array.value(i);
    let strings = values.as_string_opt::<i32>().ok_or_else(|| {
        Error::invalid(format!(
            "list of {} where a list of text was expected",
            values.data_type()
        ))
    })?;
    Ok(strings
        .iter()
        .map(|s| s.unwrap_or_default().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_batch_round_trip() {
        let rows = vec![Row::Entity(Entity {
            id: "e1".into(),
            entity_type: "person".into(),
            name: "Ada".into(),
            aliases: vec!["A".into(), "Countess".into()],
            properties: r#"{"role":"engineer"}"#.into(),
            created_at: 5,
            updated_at: 6,
        })];
        let all: Vec<usize> = (0..7).collect();
        let res = vec![Row::Resource(Resource {
            id: "r".into(),
            embedding: Some(vec![0.5, 1.0]),
            ..Default::default()
        })];
        let full: Vec<usize> = (0..8).collect();
        let batch = rows_to_batch(Table::Resources, &res, &full).unwrap();
        assert_eq!(batch_to_rows(Table::Resources, &batch).unwrap(), res);
        let batch = rows_to_batch(Table::Entities, &rows, &all).unwrap();
        assert_eq!(batch_to_rows(Table::Entities, &batch).unwrap(), rows);
        let names = rows_to_batch(Table::Entities, &rows, &[2]).unwrap();
        assert_eq!(names.schema().field(0).name(), "name");
        let none = rows_to_batch(Table::Entities, &rows, &[]).unwrap();
        assert_eq!((none.num_columns(), none.num_rows()), (0, 1));
    }
}
