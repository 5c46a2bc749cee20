//! The catalog: the four REM tables, their columns, primary keys and built-in indexes,
//! written once. Storage reads it to check and index rows, the query layer to build the
//! Arrow schemas, plan access paths and list indexes; it depends on neither.

/// The four REM tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Resources,
    Entities,
    Edges,
    Moments,
}

/// What a column holds (its SQL type is the query layer's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Int64,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    TextList,
    /// A JSON object in text form.
    Json,
    /// A list of f32 (`resources.embedding`).
    Vector,
}

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// A user index may cover the column whole (`CREATE INDEX i ON entities (name)`);
    /// JSON columns are indexed by path instead.
    pub indexable: bool,
}

const fn col(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        indexable: false,
    }
}

const fn indexable(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        indexable: true,
    }
}

use ColumnType::{Int64, Json, Text, TextList, Timestamp, Vector};

const RESOURCES: [Column; 8] = [
    col("id", Text),
    indexable("uri", Text),
    col("chunk_index", Int64),
    col("content", Text),
    col("metadata", Json),
    indexable("created_at", Timestamp),
    indexable("updated_at", Timestamp),
    col("embedding", Vector),
];

const ENTITIES: [Column; 7] = [
    col("id", Text),
    col("type", Text),
    indexable("name", Text),
    col("aliases", TextList),
    col("properties", Json),
    indexable("created_at", Timestamp),
    indexable("updated_at", Timestamp),
];

const EDGES: [Column; 5] = [
    col("src", Text),
    col("dst", Text),
    col("edge_type", Text),
    col("properties", Json),
    col("created_at", Timestamp),
];

const MOMENTS: [Column; 9] = [
    col("id", Text),
    col("timestamp", Timestamp),
    col("end_timestamp", Timestamp),
    col("type", Text),
    col("classifications", TextList),
    col("resource_refs", TextList),
    col("entity_refs", TextList),
    col("metadata", Json),
    col("created_at", Timestamp),
];

impl Table {
    pub const ALL: [Table; 4] = [
        Table::Resources,
        Table::Entities,
        Table::Edges,
        Table::Moments,
    ];

    /// The byte that names the table inside keys (see `storage/keys.rs`).
    pub fn tag(self) -> u8 {
        match self {
            Table::Resources => 1,
            Table::Entities => 2,
            Table::Edges => 3,
            Table::Moments => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Resources => "resources",
            Table::Entities => "entities",
            Table::Edges => "edges",
            Table::Moments => "moments",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The columns, in schema order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Resources => &RESOURCES,
            Table::Entities => &ENTITIES,
            Table::Edges => &EDGES,
            Table::Moments => &MOMENTS,
        }
    }

    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }

    /// The columns a user index may cover whole (see [`Column::indexable`]).
    pub fn indexable_columns(self) -> Vec<&'static str> {
        self.columns()
            .iter()
            .filter(|c| c.indexable)
            .map(|c| c.name)
            .collect()
    }

    /// The JSON column: `metadata` of resources and moments, `properties` of entities
    /// and edges.
    pub fn json_column(self) -> &'static str {
        match self {
            Table::Resources | Table::Moments => "metadata",
            Table::Entities | Table::Edges => "properties",
        }
    }

    /// The primary key's columns in key order: `id`, or an edge's `(src, edge_type, dst)`.
    pub fn primary_key(self) -> &'static [&'static str] {
        match self {
            Table::Edges => &["src", "edge_type", "dst"],
            _ => &["id"],
        }
    }

    /// The built-in index whose key starts with `column`, if there is one.
    pub fn builtin_index(self, column: &str) -> Option<IndexId> {
        IndexId::ALL
            .into_iter()
            .find(|i| i.table() == self && i.columns()[0] == column)
    }
}

/// The built-in secondary indexes, maintained on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexId {
    /// entities by `type`
    EntityType,
    /// entities by normalized `name` and by each normalized alias
    EntityName,
    /// edges by `(dst, edge_type, src)`
    EdgeDst,
    /// moments by `timestamp`
    MomentTimestamp,
    /// moments by `type`
    MomentType,
    /// resources by `uri`
    ResourceUri,
}

impl IndexId {
    pub const ALL: [IndexId; 6] = [
        IndexId::EntityType,
        IndexId::EntityName,
        IndexId::EdgeDst,
        IndexId::MomentTimestamp,
        IndexId::MomentType,
        IndexId::ResourceUri,
    ];

    /// The byte that names the index inside keys (see `storage/keys.rs`).
    pub fn tag(self) -> u8 {
        match self {
            IndexId::EntityType => 1,
            IndexId::EntityName => 2,
            IndexId::EdgeDst => 3,
            IndexId::MomentTimestamp => 4,
            IndexId::MomentType => 5,
            IndexId::ResourceUri => 6,
        }
    }

    pub fn table(self) -> Table {
        match self {
            IndexId::EntityType | IndexId::EntityName => Table::Entities,
            IndexId::EdgeDst => Table::Edges,
            IndexId::MomentTimestamp | IndexId::MomentType => Table::Moments,
            IndexId::ResourceUri => Table::Resources,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IndexId::EntityType => "entities_type",
            IndexId::EntityName => "entities_name",
            IndexId::EdgeDst => "edges_dst",
            IndexId::MomentTimestamp => "moments_timestamp",
            IndexId::MomentType => "moments_type",
            IndexId::ResourceUri => "resources_uri",
        }
    }

    /// The columns of the key, in key order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            IndexId::EntityType | IndexId::MomentType => &["type"],
            IndexId::EntityName => &["name"],
            IndexId::EdgeDst => &["dst", "edge_type", "src"],
            IndexId::MomentTimestamp => &["timestamp"],
            IndexId::ResourceUri => &["uri"],
        }
    }

    /// What the key holds, as `list_indexes()` shows it.
    pub fn expression(self) -> &'static str {
        match self {
            IndexId::EntityName => "lower(name), lower(aliases)",
            IndexId::EdgeDst => "(dst, edge_type, src)",
            other => other.columns()[0],
        }
    }

    /// True for an index of one timestamp column (moments by `timestamp`): its keys are
    /// microseconds, so it answers ranges and walks rows in time order.
    pub fn is_time(self) -> bool {
        match self.columns() {
            [column] => self
                .table()
                .column(column)
                .is_some_and(|c| c.ty == ColumnType::Timestamp),
            _ => false,
        }
    }

    /// True when the key is the column's normalized form (lower case, collapsed
    /// spaces), so that an equality finds a superset the filter must re-check.
    pub fn normalized(self) -> bool {
        self == IndexId::EntityName
    }

    /// True when a key names a handful of rows at most (a name, a uri): an equality on
    /// it is read before any other index.
    pub fn near_unique(self) -> bool {
        matches!(self, IndexId::EntityName | IndexId::ResourceUri)
    }

    /// True when the index's entries hold a copy of their row (the encoded row is the
    /// entry's value): the time index of moments, so that a time window or a newest-n
    /// reads one key range instead of one random row read per moment.
    pub fn holds_rows(self) -> bool {
        matches!(self, IndexId::MomentTimestamp)
    }

    /// True for the built-in index of this name (user indexes may not take it).
    pub fn is_builtin_name(name: &str) -> bool {
        IndexId::ALL.iter().any(|i| i.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_column_is_a_column_of_its_table() {
        for index in IndexId::ALL {
            for column in index.columns() {
                assert!(index.table().column(column).is_some(), "{index:?} {column}");
            }
        }
        for table in Table::ALL {
            for column in table.primary_key() {
                assert!(table.column(column).is_some(), "{table:?} {column}");
            }
            let json = table.column(table.json_column()).map(|c| c.ty);
            assert_eq!(json, Some(ColumnType::Json), "{table:?}");
        }
    }

    #[test]
    fn tags_and_names_are_unique() {
        let mut tags: Vec<u8> = IndexId::ALL.iter().map(|i| i.tag()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), IndexId::ALL.len());
        assert_eq!(Table::from_name("moments"), Some(Table::Moments));
        assert_eq!(
            Table::Moments.builtin_index("timestamp"),
            Some(IndexId::MomentTimestamp)
        );
        assert_eq!(Table::Edges.builtin_index("src"), None);
        assert!(IndexId::is_builtin_name("edges_dst"));
    }
}
