//! Query layer: `CREATE INDEX`, `DROP INDEX`, `list_indexes()` and `json_array_contains`.
//!
//! DataFusion has no indexes, so these statements are read from the parsed SQL before
//! planning:
//!
//! ```sql
//! CREATE INDEX idx_lang ON resources ((metadata->>'language'));     -- the value at a path
//! CREATE INDEX idx_tags ON resources USING gin ((metadata->'tags')); -- each array element
//! CREATE INDEX idx_name ON entities (name);     -- a text column: ORDER BY name LIMIT n
//! DROP INDEX [IF EXISTS] idx_lang;
//! SELECT * FROM list_indexes();                                     -- built-in ones too
//! ```
//!
//! A list index answers `json_array_contains(metadata, 'tags', 'urgent')`, a scalar
//! function registered here: true when the JSON array at the path holds the value.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, IndexType, ObjectName, ObjectNamePart, ObjectType,
    Statement as SqlStatement, Value,
};

use crate::error::{Error, Result};
use crate::storage::{
    IndexId, IndexKind, IndexValue, Table, TenantStore, index_column, index_value,
};

/// An index statement, read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexCommand {
    Create {
        name: String,
        table: Table,
        column: String,
        path: Vec<String>,
        kind: IndexKind,
        if_not_exists: bool,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
}

/// The index command a statement is, if it is one.
pub fn index_command(statement: &Statement) -> Result<Option<IndexCommand>> {
    let Statement::Statement(inner) = statement else {
        return Ok(None);
    };
    match inner.as_ref() {
        SqlStatement::CreateIndex(create) => {
            let name = create
                .name
                .as_ref()
                .map(plain_name)
                .ok_or_else(|| Error::invalid("CREATE INDEX needs a name"))?;
            let table_name = plain_name(&create.table_name);
            let table = Table::from_name(&table_name).ok_or_else(|| {
                Error::invalid(format!("CREATE INDEX on unknown table {table_name}"))
            })?;
            let kind = match &create.using {
                None | Some(IndexType::BTree) => IndexKind::Value,
                Some(IndexType::GIN) => IndexKind::List,
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "CREATE INDEX ... USING {other} is not supported (btree: a value, gin: list elements)"
                    )));
                }
            };
            if create.unique || create.predicate.is_some() || !create.include.is_empty() {
                return Err(Error::invalid(
                    "CREATE INDEX supports no UNIQUE, INCLUDE or WHERE clause",
                ));
            }
            let [column] = create.columns.as_slice() else {
                return Err(Error::invalid(format!(
                    "CREATE INDEX {name} takes one expression, like ((metadata->>'key')), got {}",
                    create.columns.len()
                )));
            };
            let (column, path) = json_path(&column.column.expr)
                .filter(|(column, path)| !path.is_empty() || index_column(table, column))
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "CREATE INDEX {name}: index a JSON path such as (({}->>'key')){}, got {}",
                        table.json_column(),
                        match table.indexable_columns().as_slice() {
                            [] => String::new(),
                            columns => format!(" or a column: ({})", columns.join("), (")),
                        },
                        column.column.expr
                    ))
                })?;
            Ok(Some(IndexCommand::Create {
                name,
                table,
                column,
                path,
                kind,
                if_not_exists: create.if_not_exists,
            }))
        }
        SqlStatement::Drop {
            object_type: ObjectType::Index,
            if_exists,
            names,
            ..
        } => Ok(Some(IndexCommand::Drop {
            names: names.iter().map(plain_name).collect(),
            if_exists: *if_exists,
        })),
        _ => Ok(None),
    }
}

/// A name as written, without the quotes of a quoted identifier.
fn plain_name(name: &ObjectName) -> String {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => id.value.clone(),
            other => other.to_string(),
        })
        .collect();
    parts.join(".")
}

/// `column->'a'->>'b'` as (column, [a, b]).
fn json_path(expr: &SqlExpr) -> Option<(String, Vec<String>)> {
    match expr {
        SqlExpr::Nested(inner) => json_path(inner),
        SqlExpr::Identifier(id) => Some((id.value.clone(), vec![])),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Arrow | BinaryOperator::LongArrow,
            right,
        } => {
            let (column, mut path) = json_path(left)?;
            match right.as_ref() {
                SqlExpr::Value(v) => match &v.value {
                    Value::SingleQuotedString(key) => {
                        path.push(key.clone());
                        Some((column, path))
                    }
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// `list_indexes()`: every index of the tenant, built-in and declared.
#[derive(Debug)]
pub struct ListIndexesFunc {
    store: TenantStore,
}

impl ListIndexesFunc {
    pub fn new(store: TenantStore) -> Self {
        ListIndexesFunc { store }
    }
}

impl TableFunctionImpl for ListIndexesFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if !args.exprs().is_empty() {
            return plan_err!("list_indexes() takes no arguments");
        }
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("expression", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
        ]));
        let mut rows: Vec<[String; 4]> = IndexId::ALL
            .iter()
            .map(|index| {
                [
                    index.name().to_string(),
                    index.table().name().to_string(),
                    index.expression().to_string(),
                    "built-in".to_string(),
                ]
            })
            .collect();
        for def in self.store.user_indexes()?.iter() {
            rows.push([
                def.name.clone(),
                def.table.clone(),
                def.expression(),
                match def.kind {
                    IndexKind::Value => "value",
                    IndexKind::List => "list",
                }
                .to_string(),
            ]);
        }
        let columns: Vec<ArrayRef> = (0..4)
            .map(|i| {
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r[i].clone()),
                )) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

/// `json_array_contains(json, 'key', ..., value)`: whether the JSON array at the path
/// holds `value` (NULL for NULL JSON, false when there is no array there).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonArrayContains {
    signature: Signature,
}

impl Default for JsonArrayContains {
    fn default() -> Self {
        JsonArrayContains {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonArrayContains {
    fn name(&self) -> &str {
        "json_array_contains"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        if arg_types.len() < 3 {
            return plan_err!(
                "json_array_contains(json, key, ..., value) takes at least 3 arguments, got {}",
                arg_types.len()
            );
        }
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.args.len();
        let mut path = Vec::with_capacity(n - 2);
        for arg in &args.args[1..n - 1] {
            match arg {
                ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::Utf8View(Some(k))
                    | ScalarValue::LargeUtf8(Some(k)),
                ) => path.push(k.clone()),
                _ => return exec_err!("json_array_contains: the path keys must be constant text"),
            }
        }
        let needle = match &args.args[n - 1] {
            ColumnarValue::Scalar(v) => needle(v)?,
            ColumnarValue::Array(_) => {
                return exec_err!("json_array_contains: the value must be a constant");
            }
        };
        let json = args.args[0].to_array(args.number_rows)?;
        let json = datafusion::arrow::compute::cast(&json, &DataType::Utf8)?;
        let texts = json.as_string::<i32>();
        let out: BooleanArray = texts
            .iter()
            .map(|text| {
                let value: serde_json::Value = serde_json::from_str(text?).ok()?;
                let mut at = Some(&value);
                for key in &path {
                    at = at.and_then(|v| v.get(key));
                }
                Some(match at {
                    Some(serde_json::Value::Array(items)) => {
                        items.iter().any(|i| index_value(i) == needle)
                    }
                    _ => false,
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn needle(v: &ScalarValue) -> DfResult<IndexValue> {
    Ok(match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => IndexValue::Text(s.clone()),
        ScalarValue::Boolean(Some(b)) => IndexValue::Bool(*b),
        v if v.data_type().is_numeric() && !v.is_null() => match v.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(f)) => IndexValue::Number(f),
            _ => return exec_err!("json_array_contains: cannot compare {v}"),
        },
        other => {
            return exec_err!(
                "json_array_contains: the value must be text, a number or a boolean, got {other}"
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    fn command(sql: &str) -> Result<Option<IndexCommand>> {
        let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).unwrap();
        index_command(&statements.pop_front().unwrap())
    }

    #[test]
    fn index_statements() {
        assert_eq!(
            command("CREATE INDEX idx_lang ON resources ((metadata->>'language'))").unwrap(),
            Some(IndexCommand::Create {
                name: "idx_lang".into(),
                table: Table::Resources,
                column: "metadata".into(),
                path: vec!["language".into()],
                kind: IndexKind::Value,
                if_not_exists: false,
            })
        );
        assert_eq!(
            command(
                "CREATE INDEX IF NOT EXISTS t ON entities USING gin ((properties->'a'->'tags'))"
            )
            .unwrap(),
            Some(IndexCommand::Create {
                name: "t".into(),
                table: Table::Entities,
                column: "properties".into(),
                path: vec!["a".into(), "tags".into()],
                kind: IndexKind::List,
                if_not_exists: true,
            })
        );
        assert_eq!(
            command("DROP INDEX IF EXISTS a, b").unwrap(),
            Some(IndexCommand::Drop {
                names: vec!["a".into(), "b".into()],
                if_exists: true
            })
        );
        assert_eq!(command("SELECT 1").unwrap(), None);
        assert!(command("CREATE INDEX x ON nowhere ((metadata->>'a'))").is_err());
        // A text column is indexed whole; other plain columns are refused.
        assert_eq!(
            command("CREATE INDEX x ON resources (uri)").unwrap(),
            Some(IndexCommand::Create {
                name: "x".into(),
                table: Table::Resources,
                column: "uri".into(),
                path: vec![],
                kind: IndexKind::Value,
                if_not_exists: false,
            })
        );
        assert!(command("CREATE INDEX x ON resources (content)").is_err());
        assert!(command("CREATE INDEX x ON resources USING hash ((metadata->>'a'))").is_err());
    }
}
