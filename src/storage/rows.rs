//! Storage layer: the typed rows of the four REM tables, their keys and index entries.
//!
//! A row is validated and normalized once, by [`Row::prepare`], before it is written:
//! JSON fields are parsed and stored in compact form, an empty `id` becomes a time-ordered
//! UUID (v7), and a zero timestamp becomes "now". Rows are encoded with `postcard`.

use serde::{Deserialize, Serialize};

pub use crate::catalog::{IndexId, Table};
use crate::error::{Error, Result};

/// Microseconds since the Unix epoch, UTC: the unit of every timestamp in remdb.
pub type Micros = i64;

/// The current time in microseconds since the epoch.
pub fn now_micros() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// One component of a key: the storage layer indexes text and integers (timestamps).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPart {
    Str(String),
    I64(i64),
}

impl From<&str> for KeyPart {
    fn from(s: &str) -> Self {
        KeyPart::Str(s.to_string())
    }
}

/// Lower-cases and collapses whitespace: the form names and aliases are indexed under, so
/// that `lookup`-style matches ignore case and spacing.
pub fn normalize_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A chunk of content. `metadata` is a JSON object in text form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Resource {
    /// Empty on create means "generate a time-ordered UUID".
    pub id: String,
    /// Where the chunk comes from; optional. Stored as text, with the empty text for
    /// none (the row encoding predates optional uris), so `Some("")` is refused.
    #[serde(with = "empty_is_none")]
    pub uri: Option<String>,
    pub chunk_index: i64,
    pub content: String,
    pub metadata: String,
    /// Zero on create means "now".
    pub created_at: Micros,
    pub updated_at: Micros,
    /// Stored apart from the row (under its own key) and indexed in HNSW. In an update
    /// through the API, `None` keeps the stored vector; use `set_embedding` to change it.
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

/// A typed graph node. `properties` is a JSON object in text form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Entity {
    pub id: String,
    pub entity_type: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub properties: String,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A typed, directed relation, identified by `(src, edge_type, dst)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    pub edge_type: String,
    pub properties: String,
    pub created_at: Micros,
}

/// A time-stamped classification pointing at resources and entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Moment {
    pub id: String,
    pub timestamp: Micros,
    pub end_timestamp: Option<Micros>,
    pub moment_type: String,
    pub classifications: Vec<String>,
    pub resource_refs: Vec<String>,
    pub entity_refs: Vec<String>,
    pub metadata: String,
    pub created_at: Micros,
}

/// A row of any table.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Resource(Resource),
    Entity(Entity),
    Edge(Edge),
    Moment(Moment),
}

/// Parses a JSON object and returns its compact text; empty text means `{}`.
pub fn normalize_json(table: Table, column: &str, text: &str) -> Result<String> {
    if text.trim().is_empty() {
        return Ok("{}".to_string());
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("malformed JSON in {}.{column}: {e}", table.name())))?;
    if !value.is_object() {
        return Err(Error::invalid(format!(
            "{}.{column} must be a JSON object, got: {text}",
            table.name()
        )));
    }
    Ok(value.to_string())
}

fn require(table: Table, column: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!(
            "{}.{column} must not be empty",
            table.name()
        )));
    }
    Ok(())
}

/// `Option<String>` as the text it was stored as before it was optional: `""` is none.
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        Ok((!text.is_empty()).then_some(text))
    }
}

fn fill_id(id: &mut String) {
    if id.is_empty() {
        *id = uuid::Uuid::now_v7().to_string();
    }
}

fn fill_time(t: &mut Micros, now: Micros) {
    if *t == 0 {
        *t = now;
    }
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Resource(_) => Table::Resources,
            Row::Entity(_) => Table::Entities,
            Row::Edge(_) => Table::Edges,
            Row::Moment(_) => Table::Moments,
        }
    }

    /// Validates the row and fills engine-provided values (ids, timestamps, JSON form).
    pub fn prepare(&mut self, now: Micros) -> Result<()> {
        let table = self.table();
        match self {
            Row::Resource(r) => {
                fill_id(&mut r.id);
                if let Some(uri) = &r.uri {
                    require(table, "uri", uri)?;
                }
                r.metadata = normalize_json(table, "metadata", &r.metadata)?;
                fill_time(&mut r.created_at, now);
                fill_time(&mut r.updated_at, r.created_at);
            }
            Row::Entity(e) => {
                fill_id(&mut e.id);
                require(table, "type", &e.entity_type)?;
                require(table, "name", &e.name)?;
                e.properties = normalize_json(table, "properties", &e.properties)?;
                fill_time(&mut e.created_at, now);
                fill_time(&mut e.updated_at, e.created_at);
            }
            Row::Edge(e) => {
                require(table, "src", &e.src)?;
                require(table, "dst", &e.dst)?;
                require(table, "edge_type", &e.edge_type)?;
                e.properties = normalize_json(table, "properties", &e.properties)?;
                fill_time(&mut e.created_at, now);
            }
            Row::Moment(m) => {
                fill_id(&mut m.id);
                require(table, "type", &m.moment_type)?;
                m.metadata = normalize_json(table, "metadata", &m.metadata)?;
                fill_time(&mut m.created_at, now);
                if let Some(end) = m.end_timestamp
                    && end < m.timestamp
                {
                    return Err(Error::invalid(format!(
                        "moments.end_timestamp ({end}) is before timestamp ({}) for moment '{}'",
                        m.timestamp, m.id
                    )));
                }
            }
        }
        Ok(())
    }

    /// The parts of the row's unique key.
    pub fn primary_key(&self) -> Vec<KeyPart> {
        match self {
            Row::Resource(r) => vec![r.id.as_str().into()],
            Row::Entity(e) => vec![e.id.as_str().into()],
            Row::Edge(e) => vec![
                e.src.as_str().into(),
                e.edge_type.as_str().into(),
                e.dst.as_str().into(),
            ],
            Row::Moment(m) => vec![m.id.as_str().into()],
        }
    }

    /// A readable form of the primary key, for error messages.
    pub fn key_display(&self) -> String {
        match self {
            Row::Edge(e) => format!("({}, {}, {})", e.src, e.edge_type, e.dst),
            Row::Resource(Resource { id, .. })
            | Row::Entity(Entity { id, .. })
            | Row::Moment(Moment { id, .. }) => format!("'{id}'"),
        }
    }

    /// The secondary-index entries this row owns (without the row id).
    pub fn index_entries(&self) -> Vec<(IndexId, Vec<KeyPart>)> {
        match self {
            // A resource without a uri has no entry in `resources_uri`.
            Row::Resource(r) => match &r.uri {
                Some(uri) => vec![(IndexId::ResourceUri, vec![uri.as_str().into()])],
                None => vec![],
            },
            Row::Entity(e) => {
                let mut out = vec![(IndexId::EntityType, vec![e.entity_type.as_str().into()])];
                let mut names: Vec<String> = std::iter::once(&e.name)
                    .chain(e.aliases.iter())
                    .map(|n| normalize_name(n))
                    .filter(|n| !n.is_empty())
                    .collect();
                names.sort();
                names.dedup();
                out.extend(
                    names
                        .into_iter()
                        .map(|n| (IndexId::EntityName, vec![KeyPart::Str(n)])),
                );
                out
            }
            Row::Edge(e) => vec![(
                IndexId::EdgeDst,
                vec![
                    e.dst.as_str().into(),
                    e.edge_type.as_str().into(),
                    e.src.as_str().into(),
                ],
            )],
            Row::Moment(m) => vec![
                (IndexId::MomentTimestamp, vec![KeyPart::I64(m.timestamp)]),
                (IndexId::MomentType, vec![m.moment_type.as_str().into()]),
            ],
        }
    }

    /// Keeps the creation time of `old` when a row is replaced, and stamps the update.
    pub fn carry_over(&mut self, old: &Row, now: Micros) {
        match (self, old) {
            (Row::Resource(new), Row::Resource(old)) => {
                new.created_at = old.created_at;
                new.updated_at = now;
            }
            (Row::Entity(new), Row::Entity(old)) => {
                new.created_at = old.created_at;
                new.updated_at = now;
            }
            (Row::Edge(new), Row::Edge(old)) => new.created_at = old.created_at,
            (Row::Moment(new), Row::Moment(old)) => new.created_at = old.created_at,
            _ => {}
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes = match self {
            Row::Resource(r) => postcard::to_stdvec(r),
            Row::Entity(e) => postcard::to_stdvec(e),
            Row::Edge(e) => postcard::to_stdvec(e),
            Row::Moment(m) => postcard::to_stdvec(m),
        };
        bytes.map_err(|e| Error::Storage(format!("cannot encode row: {e}")))
    }

    pub fn decode(table: Table, bytes: &[u8]) -> Result<Row> {
        let corrupt = |e: postcard::Error| {
            Error::Corruption(format!("undecodable row in table {}: {e}", table.name()))
        };
        Ok(match table {
            Table::Resources => Row::Resource(postcard::from_bytes(bytes).map_err(corrupt)?),
            Table::Entities => Row::Entity(postcard::from_bytes(bytes).map_err(corrupt)?),
            Table::Edges => Row::Edge(postcard::from_bytes(bytes).map_err(corrupt)?),
            Table::Moments => Row::Moment(postcard::from_bytes(bytes).map_err(corrupt)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_fills_and_validates() {
        let mut row = Row::Entity(Entity {
            entity_type: "person".into(),
            name: "Ada  Lovelace".into(),
            aliases: vec!["ADA".into(), "ada".into()],
            properties: r#"{ "role" : "engineer" }"#.into(),
            ..Default::default()
        });
        row.prepare(42).unwrap();
        let Row::Entity(e) = &row else { unreachable!() };
        assert_eq!(e.id.len(), 36);
        assert_eq!(e.properties, r#"{"role":"engineer"}"#);
        assert_eq!((e.created_at, e.updated_at), (42, 42));
        let names: Vec<_> = row
            .index_entries()
            .into_iter()
            .filter(|(i, _)| *i == IndexId::EntityName)
            .collect();
        assert_eq!(
            names.len(),
            2,
            "aliases dedup after normalization: {names:?}"
        );

        let mut bad = Row::Entity(Entity {
            entity_type: "person".into(),
            name: "x".into(),
            properties: "{not json".into(),
            ..Default::default()
        });
        let err = bad.prepare(1).unwrap_err().to_string();
        assert!(
            err.contains("malformed JSON in entities.properties"),
            "{err}"
        );
    }

    #[test]
    fn rows_round_trip() {
        let row = Row::Moment(Moment {
            id: "m1".into(),
            timestamp: 5,
            end_timestamp: Some(9),
            moment_type: "meeting".into(),
            classifications: vec!["work".into()],
            resource_refs: vec!["r1".into()],
            entity_refs: vec![],
            metadata: "{}".into(),
            created_at: 1,
        });
        let bytes = row.encode().unwrap();
        assert_eq!(Row::decode(Table::Moments, &bytes).unwrap(), row);
        assert!(matches!(
            Row::decode(Table::Moments, &[0xFF]),
            Err(Error::Corruption(_))
        ));
    }
}
