//! Front end: the Flight SQL metadata calls a driver's `DatabaseMetaData` makes beyond
//! catalogs, schemas and tables: table types, primary keys (from the catalog), foreign
//! keys (remdb declares none: empty answers of the right shape), and the SQL types.

use std::sync::{Arc, LazyLock};

use arrow::array::{Int32Array, RecordBatch, StringArray, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetPrimaryKeys, Nullable, Searchable, SqlInfo, XdbcDataType, XdbcDatetimeSubcode,
};

use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
use tonic::{Request, Response, Status};

use super::replies::{flight_info, one_batch};
use super::{DoGetStream, RemFlightSql};
use crate::catalog::Table;

impl RemFlightSql {
    /// The FlightInfo of a metadata command: its schema and a ticket that repeats it.
    pub(super) async fn metadata_info(
        &self,
        ticket: Vec<u8>,
        schema: SchemaRef,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        flight_info(&schema, ticket, request.into_inner())
    }

    /// The answer of a metadata command, one batch.
    pub(super) async fn metadata_batch(
        &self,
        request: &Request<Ticket>,
        batch: Result<RecordBatch, impl std::fmt::Display>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request).await?;
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        Ok(one_batch(batch.schema(), Ok(batch)))
    }
}

/// The catalog and schema every tenant's tables are in.
pub(super) const CATALOG: &str = "datafusion";
pub(super) const SCHEMA: &str = "public";

/// The table types a tenant's session has, named as `information_schema.tables` does.
pub(super) const TABLE_TYPES: [&str; 2] = ["BASE TABLE", "VIEW"];

/// What `GetSqlInfo` answers: every id of the Flight SQL specification a driver's
/// `DatabaseMetaData` reads (the JDBC driver reads each as a boolean, a string, a list,
/// an `i64` limit or an `i32` bitmask of the option enums, and fails on an absent one).
static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    use arrow_flight::sql::{
        SqlNullOrdering, SqlOuterJoinsSupportLevel as Joins, SqlSupportedCaseSensitivity as Case,
        SqlSupportedGroupBy as GroupBy, SqlSupportedResultSetConcurrency as Concurrency,
        SqlSupportedResultSetType as ResultSetType, SqlSupportedSubqueries as Subqueries,
        SqlSupportedUnions as Unions, SqlTransactionIsolationLevel as Isolation,
        SupportedSqlGrammar as Grammar,
    };
    /// A bitmask of enum options, as the specification encodes a set of them.
    fn mask(options: &[i32]) -> i32 {
        options.iter().fold(0, |m, o| m | (1 << o))
    }
    let names = |udfs: Vec<Arc<datafusion::logical_expr::ScalarUDF>>| {
        let mut names: Vec<String> = udfs.iter().map(|f| f.name().to_string()).collect();
        names.sort();
        names
    };
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "remdb");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    // No CREATE TABLE / SCHEMA / CATALOG from a client (see the statement policy).
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Unquoted names are folded to lower case; quoted ones are kept as written.
    b.append(
        SqlInfo::SqlIdentifierCase,
        Case::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        Case::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // DataFusion's default: NULL is the largest value (last ascending, first descending).
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    let keywords: Vec<String> = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(
        SqlInfo::SqlNumericFunctions,
        names(datafusion::functions::math::functions()),
    );
    let mut strings = names(datafusion::functions::string::functions());
    strings.extend(names(datafusion::functions::unicode::functions()));
    strings.sort();
    b.append(SqlInfo::SqlStringFunctions, strings);
    // DataFusion's core functions, and remdb's own (vector_similar, traverse, the JSON
    // functions, ...).
    let mut system = names(datafusion::functions::core::functions());
    system.extend(crate::query::extension_function_names().map_err(|e| e.to_string())?);
    system.sort();
    system.dedup();
    b.append(SqlInfo::SqlSystemFunctions, system);
    b.append(
        SqlInfo::SqlDatetimeFunctions,
        names(datafusion::functions::datetime::functions()),
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, supports_convert());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        mask(&[
            GroupBy::SqlGroupByUnrelated as i32,
            GroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        mask(&[
            Grammar::SqlMinimumGrammar as i32,
            Grammar::SqlCoreGrammar as i32,
        ]),
    );
    // ANSI92_ENTRY_SQL (0) and ANSI92_INTERMEDIATE_SQL (1); arrow-flight does not
    // export that enum.
    b.append(SqlInfo::SqlAnsi92SupportedLevel, mask(&[0, 1]));
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        mask(&[
            Joins::SqlLimitedOuterJoins as i32,
            Joins::SqlFullOuterJoins as i32,
        ]),
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        mask(&[
            Subqueries::SqlSubqueriesInComparisons as i32,
            Subqueries::SqlSubqueriesInExists as i32,
            Subqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        mask(&[Unions::SqlUnion as i32, Unions::SqlUnionAll as i32]),
    );
    // Limits, 0 where there is none (as JDBC reads 0). SQL text is bounded as a whole.
    let sql_bytes = crate::session::MAX_SQL_BYTES as i64;
    for (info, limit) in [
        (SqlInfo::SqlMaxBinaryLiteralLength, sql_bytes),
        (SqlInfo::SqlMaxCharLiteralLength, sql_bytes),
        (SqlInfo::SqlMaxColumnNameLength, 0),
        (SqlInfo::SqlMaxColumnsInGroupBy, 0),
        (SqlInfo::SqlMaxColumnsInIndex, 0),
        (SqlInfo::SqlMaxColumnsInOrderBy, 0),
        (SqlInfo::SqlMaxColumnsInSelect, 0),
        (SqlInfo::SqlMaxColumnsInTable, 0),
        (SqlInfo::SqlMaxConnections, 0),
        (SqlInfo::SqlMaxCursorNameLength, 0),
        (SqlInfo::SqlMaxIndexLength, 0),
        (SqlInfo::SqlDbSchemaNameLength, 0),
        (SqlInfo::SqlMaxProcedureNameLength, 0),
        (SqlInfo::SqlMaxCatalogNameLength, 0),
        (SqlInfo::SqlMaxRowSize, 0),
        (SqlInfo::SqlMaxStatementLength, sql_bytes),
        (SqlInfo::SqlMaxStatements, 0),
        (SqlInfo::SqlMaxTableNameLength, 0),
        (SqlInfo::SqlMaxTablesInSelect, 0),
        (SqlInfo::SqlMaxUsernameLength, 0),
    ] {
        b.append(info, limit);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    // Each statement is atomic on its own; there are no transactions.
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        Isolation::SqlTransactionNone as i64,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
        mask(&[Isolation::SqlTransactionNone as i32]),
    );
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        mask(&[ResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    let read_only = mask(&[Concurrency::SqlResultSetConcurrencyReadOnly as i32]);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    // `executemany`: every parameter row runs.
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build().map_err(|e| e.to_string())
});

/// Which SQL types `CAST` turns into which (`SqlSupportsConvert`): numbers into one
/// another and text, text into every type, dates and timestamps into each other and text.
fn supports_convert() -> std::collections::BTreeMap<i32, Vec<i32>> {
    use arrow_flight::sql::SqlSupportsConvert as C;
    let numbers = [
        C::SqlConvertBigint,
        C::SqlConvertBit,
        C::SqlConvertDecimal,
        C::SqlConvertFloat,
        C::SqlConvertInteger,
        C::SqlConvertNumeric,
        C::SqlConvertReal,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
    ];
    let text = [
        C::SqlConvertChar,
        C::SqlConvertVarchar,
        C::SqlConvertLongvarchar,
    ];
    let times = [C::SqlConvertDate, C::SqlConvertTimestamp];
    let binary = [
        C::SqlConvertBinary,
        C::SqlConvertVarbinary,
        C::SqlConvertLongvarbinary,
    ];
    let ids = |groups: &[&[C]]| -> Vec<i32> {
        let mut ids: Vec<i32> = groups
            .iter()
            .flat_map(|g| g.iter().map(|c| *c as i32))
            .collect();
        ids.sort();
        ids
    };
    let mut map = std::collections::BTreeMap::new();
    for from in numbers {
        map.insert(from as i32, ids(&[&numbers, &text]));
    }
    for from in text {
        map.insert(from as i32, ids(&[&numbers, &text, &times, &binary]));
    }
    for from in times {
        map.insert(from as i32, ids(&[&text, &times]));
    }
    for from in binary {
        map.insert(from as i32, ids(&[&text, &binary]));
    }
    map
}

/// The `GetSqlInfo` table.
pub(super) fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().map_err(|e| Status::internal(e.clone()))
}

/// The `GetXdbcTypeInfo` table.
pub(super) fn xdbc_types() -> Result<&'static XdbcTypeInfoData, Status> {
    XDBC_TYPES.as_ref().map_err(|e| Status::internal(e.clone()))
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// The schema of a `GetPrimaryKeys` answer (FlightSql.proto).
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("catalog_name", true),
        text("db_schema_name", true),
        text("table_name", false),
        text("column_name", false),
        text("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The primary key columns of the tables the query names (`catalog` and `db_schema`, when
/// given, must be ours).
pub(super) fn primary_keys(query: &CommandGetPrimaryKeys) -> arrow::error::Result<RecordBatch> {
    let ours = query.catalog.as_deref().is_none_or(|c| c == CATALOG)
        && query.db_schema.as_deref().is_none_or(|s| s == SCHEMA);
    let mut rows: Vec<(&str, &str, i32)> = Vec::new();
    if let Some(table) = Table::from_name(&query.table).filter(|_| ours) {
        for (i, column) in table.primary_key().iter().enumerate() {
            rows.push((table.name(), column, i as i32 + 1));
        }
    }
    let n = rows.len();
    RecordBatch::try_new(
        primary_keys_schema(),
        vec![
            Arc::new(StringArray::from(vec![CATALOG; n])),
            Arc::new(StringArray::from(vec![SCHEMA; n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("{}_pkey", r.0)),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
}

/// The schema of a `GetExportedKeys`, `GetImportedKeys` or `GetCrossReference` answer.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// remdb declares no foreign keys (an edge may name an entity that is not there): every
/// foreign-key answer is empty.
pub(super) fn no_foreign_keys() -> arrow::error::Result<RecordBatch> {
    let schema = foreign_keys_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Int32 => Arc::new(Int32Array::from(Vec::<i32>::new())) as _,
            DataType::UInt8 => Arc::new(UInt8Array::from(Vec::<u8>::new())) as _,
            _ => Arc::new(StringArray::from(Vec::<&str>::new())) as _,
        })
        .collect();
    RecordBatch::try_new(schema, columns)
}

fn xdbc(
    type_name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    quoted: bool,
    subcode: Option<XdbcDatetimeSubcode>,
) -> XdbcTypeInfo {
    let quote = quoted.then(|| "'".to_string());
    XdbcTypeInfo {
        type_name: type_name.into(),
        data_type,
        column_size,
        literal_prefix: quote.clone(),
        literal_suffix: quote,
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: (!quoted).then_some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(type_name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: subcode,
        num_prec_radix: (!quoted).then_some(10),
        interval_precision: None,
    }
}

/// The SQL types of remdb's columns and literals, for `GetXdbcTypeInfo`. Lists
/// (`aliases`, `embedding`) have no xdbc type; drivers see them as Arrow lists.
static XDBC_TYPES: LazyLock<Result<XdbcTypeInfoData, String>> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(xdbc("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false, None));
    b.append(xdbc(
        "INTEGER",
        XdbcDataType::XdbcInteger,
        Some(10),
        false,
        None,
    ));
    b.append(xdbc(
        "BIGINT",
        XdbcDataType::XdbcBigint,
        Some(19),
        false,
        None,
    ));
    b.append(xdbc("REAL", XdbcDataType::XdbcReal, Some(7), false, None));
    b.append(xdbc(
        "DOUBLE",
        XdbcDataType::XdbcDouble,
        Some(15),
        false,
        None,
    ));
    b.append(xdbc("VARCHAR", XdbcDataType::XdbcVarchar, None, true, None));
    let timestamp = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone);
    b.append(xdbc(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(32),
        true,
        timestamp,
    ));
    b.append(xdbc("DATE", XdbcDataType::XdbcDate, Some(10), true, None));
    b.build().map_err(|e| e.to_string())
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_keys_come_from_the_catalog() {
        let keys = |table: &str, catalog: Option<&str>| {
            let batch = primary_keys(&CommandGetPrimaryKeys {
                catalog: catalog.map(str::to_string),
                db_schema: None,
                table: table.into(),
            })
            .unwrap();
            let columns = batch
                .column(3)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            columns
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("entities", None), ["id"]);
        assert_eq!(keys("edges", Some(CATALOG)), ["src", "edge_type", "dst"]);
        assert!(keys("edges", Some("other")).is_empty());
        assert!(keys("nope", None).is_empty());
        assert_eq!(no_foreign_keys().unwrap().num_rows(), 0);
        let types = XDBC_TYPES.as_ref().unwrap();
        assert!(types.record_batch(None).unwrap().num_rows() >= 8);
    }
}
