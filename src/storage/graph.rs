//! Storage layer: graph walks and key lookups over the built-in indexes (no DataFusion).
//!
//! Outgoing edges of a node are a prefix of the edges' primary key `(src, edge_type, dst)`,
//! incoming ones a prefix of the `edges_dst` index `(dst, edge_type, src)`: a neighbour is
//! read from the key alone, without reading the edge row. [`TenantStore::traverse`] walks
//! breadth-first from one node, visiting each node once, so cycles end the walk.
//! [`TenantStore::lookup`] finds rows by key: entities by id or by normalized name/alias,
//! resources by id or by uri (REM's LOOKUP).

use std::collections::{HashSet, VecDeque};

use super::keys::{self, decode_row_id, index_row_id};
use super::{Row, Table, TenantStore, normalize_name};
use crate::error::{Error, Result};
use crate::storage::{IndexId, KeyPart};

/// The deepest walk [`TenantStore::traverse`] accepts.
pub const MAX_TRAVERSE_DEPTH: u32 = 16;

/// Which edges a walk follows out of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From `src` to `dst`.
    Out,
    /// From `dst` back to `src`.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    pub fn parse(s: &str) -> Result<Direction> {
        match s.trim().to_ascii_lowercase().as_str() {
            "out" | "outgoing" => Ok(Direction::Out),
            "in" | "incoming" => Ok(Direction::In),
            "both" | "any" => Ok(Direction::Both),
            other => Err(Error::invalid(format!(
                "unknown direction '{other}' (out, in, both)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }
}

/// A node reached by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub id: String,
    /// Edges from the start (1 for a neighbour).
    pub depth: u32,
    /// The type of the edge that first reached the node.
    pub edge_type: String,
    /// The ids from the start to this node, both included.
    pub path: Vec<String>,
}

/// A row found by [`TenantStore::lookup`], with the key that found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: String,
    pub row: Row,
}

impl TenantStore {
    /// The edges at node `id` as `(edge_type, other end)`, in key order: outgoing ones
    /// first, then incoming ones. With `edge_types`, only edges of those types.
    pub fn neighbors(
        &self,
        id: &str,
        direction: Direction,
        edge_types: &[String],
    ) -> Result<Vec<(String, String)>> {
        let family = self.family()?;
        let node = KeyPart::from(id);
        let prefixes = |with_type: &dyn Fn(Vec<KeyPart>) -> Vec<u8>| -> Vec<Vec<u8>> {
            if edge_types.is_empty() {
                vec![with_type(vec![node.clone()])]
            } else {
                edge_types
                    .iter()
                    .map(|t| with_type(vec![node.clone(), KeyPart::from(t.as_str())]))
                    .collect()
            }
        };
        let mut out = Vec::new();
        if direction != Direction::In {
            let base = keys::primary_key(Table::Edges, &[]).len();
            for prefix in prefixes(&|parts| keys::primary_key(Table::Edges, &parts)) {
                for item in family.range(prefix.clone(), keys::prefix_successor(&prefix)) {
                    let (key, _) = item?;
                    let (_, edge_type, dst) = edge_parts(&key[base..])?;
                    out.push((edge_type, dst));
                }
            }
        }
        if direction != Direction::Out {
            let base = keys::index_prefix(IndexId::EdgeDst, &[]).len();
            for prefix in prefixes(&|parts| keys::index_prefix(IndexId::EdgeDst, &parts)) {
                for item in family.range(prefix.clone(), keys::prefix_successor(&prefix)) {
                    let (key, _) = item?;
                    let parts = key
                        .get(base..key.len().saturating_sub(8))
                        .ok_or_else(|| Error::Corruption("short edges_dst key".into()))?;
                    let (_, edge_type, src) = edge_parts(parts)?;
                    out.push((edge_type, src));
                }
            }
        }
        Ok(out)
    }

    /// Walks breadth-first from entity `start` up to `max_depth` edges away and returns
    /// every node reached, nearest first, each once (the start itself is not returned).
    /// A start that is not an entity gives an empty walk.
    pub fn traverse(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        edge_types: &[String],
    ) -> Result<Vec<Hop>> {
        self.traverse_until(start, direction, max_depth, edge_types, &|| false)
    }

    /// [`TenantStore::traverse`], given up with [`Error::Cancelled`] once `stop` says so
    /// (checked every few nodes: a deep walk of a large graph reads many edges).
    pub fn traverse_until(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        edge_types: &[String],
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<Hop>> {
        if max_depth > MAX_TRAVERSE_DEPTH {
            return Err(Error::invalid(format!(
                "traversal depth {max_depth} is over the maximum of {MAX_TRAVERSE_DEPTH}"
            )));
        }
        if self
            .row_id_of(Table::Entities, &[KeyPart::from(start)])?
            .is_none()
        {
            return Ok(vec![]);
        }
        let mut visited: HashSet<String> = HashSet::from([start.to_string()]);
        let mut hops: Vec<Hop> = Vec::new();
        // (node, index of its hop in `hops`, or None for the start)
        let mut frontier: VecDeque<(String, Option<usize>, u32)> =
            VecDeque::from([(start.to_string(), None, 0)]);
        let mut expanded = 0u32;
        while let Some((node, hop, depth)) = frontier.pop_front() {
            if depth == max_depth {
                continue;
            }
            expanded = expanded.wrapping_add(1);
            if expanded.is_multiple_of(64) && stop() {
                return Err(Error::Cancelled(format!(
                    "the traversal from {start} was stopped"
                )));
            }
            for (edge_type, next) in self.neighbors(&node, direction, edge_types)? {
                if !visited.insert(next.clone()) {
                    continue;
                }
                let mut path = match hop {
                    Some(i) => hops[i].path.clone(),
                    None => vec![start.to_string()],
                };
                path.push(next.clone());
                hops.push(Hop {
                    id: next.clone(),
                    depth: depth + 1,
                    edge_type,
                    path,
                });
                frontier.push_back((next, Some(hops.len() - 1), depth + 1));
            }
        }
        Ok(hops)
    }

    /// The entities with these ids, in the order asked (None where there is none).
    pub fn entities_by_id(&self, ids: &[&str]) -> Result<Vec<Option<Row>>> {
        let family = self.family()?;
        let pks: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| keys::primary_key(Table::Entities, &[KeyPart::from(*id)]))
            .collect();
        let row_ids = family.multi_get(&pks);
        let mut row_keys = Vec::with_capacity(ids.len());
        let mut at = Vec::with_capacity(ids.len());
        for value in row_ids {
            match value? {
                Some(v) => {
                    at.push(Some(row_keys.len()));
                    row_keys.push(keys::row_key(Table::Entities, decode_row_id(&v)?));
                }
                None => at.push(None),
            }
        }
        let rows: Vec<Option<Row>> = family
            .multi_get(&row_keys)
            .into_iter()
            .map(|v| match v? {
                Some(bytes) => Row::decode(Table::Entities, &bytes).map(Some),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(at
            .into_iter()
            .map(|i| i.and_then(|i| rows[i].clone()))
            .collect())
    }

    /// Rows found by each key: entities whose id is the key or whose name or an alias
    /// matches it ignoring case and spacing, and resources whose id or uri is the key.
    /// Each row is listed once per key, entities first.
    pub fn lookup(&self, lookup_keys: &[String]) -> Result<Vec<Found>> {
        let family = self.family()?;
        let mut out = Vec::new();
        for key in lookup_keys {
            for (table, index, indexed) in [
                (
                    Table::Entities,
                    IndexId::EntityName,
                    KeyPart::Str(normalize_name(key)),
                ),
                (
                    Table::Resources,
                    IndexId::ResourceUri,
                    KeyPart::from(key.as_str()),
                ),
            ] {
                let mut row_ids: Vec<u64> = Vec::new();
                if let Some(id) = self.row_id_of(table, &[KeyPart::from(key.as_str())])? {
                    row_ids.push(id);
                }
                let prefix = keys::index_prefix(index, &[indexed]);
                for item in family.range(prefix.clone(), keys::prefix_successor(&prefix)) {
                    let (k, _) = item?;
                    let id = index_row_id(&k)?;
                    if !row_ids.contains(&id) {
                        row_ids.push(id);
                    }
                }
                for row_id in row_ids {
                    if let Some(row) = self.get_row(table, row_id)? {
                        out.push(Found {
                            key: key.clone(),
                            row,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Decodes the three storekey strings of an edge key (after its tag bytes).
fn edge_parts(bytes: &[u8]) -> Result<(String, String, String)> {
    storekey::decode::<_, (String, String, String)>(bytes)
        .map_err(|e| Error::Corruption(format!("edge key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::{Storage, StorageOptions, WriteOp};
    use super::*;
    use crate::storage::{Edge, Entity};

    fn edge(src: &str, ty: &str, dst: &str) -> WriteOp {
        WriteOp::Insert(Row::Edge(Edge {
            src: src.into(),
            dst: dst.into(),
            edge_type: ty.into(),
            ..Default::default()
        }))
    }

    fn entity(id: &str, name: &str, aliases: &[&str]) -> WriteOp {
        WriteOp::Insert(Row::Entity(Entity {
            id: id.into(),
            entity_type: "person".into(),
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }))
    }

    #[test]
    fn walks_follow_direction_types_and_visit_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("g").unwrap();
        let t = storage.tenant("g").unwrap();
        let mut ops: Vec<WriteOp> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| entity(id, id, &[]))
            .collect();
        // a -> b -> c -> a (a cycle), b -likes-> d; names with a NUL survive the key codec.
        ops.extend([
            edge("a", "knows", "b"),
            edge("b", "knows", "c"),
            edge("c", "knows", "a"),
            edge("b", "likes", "d"),
            edge("d", "knows", "x\u{0}y"),
        ]);
        t.apply(ops).unwrap();

        assert_eq!(
            t.neighbors("b", Direction::Both, &[]).unwrap(),
            [
                ("knows".to_string(), "c".to_string()),
                ("likes".to_string(), "d".to_string()),
                ("knows".to_string(), "a".to_string()),
            ]
        );
        let ids = |hops: Vec<Hop>| -> Vec<(String, u32)> {
            hops.into_iter().map(|h| (h.id, h.depth)).collect()
        };
        let all = t.traverse("a", Direction::Out, 5, &[]).unwrap();
        assert_eq!(all[2].path, ["a", "b", "d"]);
        assert_eq!(
            ids(all),
            [
                ("b".into(), 1),
                ("c".into(), 2),
                ("d".into(), 2),
                ("x\u{0}y".into(), 3)
            ]
        );
        assert_eq!(
            ids(t
                .traverse("a", Direction::Out, 5, &["knows".into()])
                .unwrap()),
            [("b".into(), 1), ("c".into(), 2)]
        );
        assert_eq!(
            ids(t.traverse("a", Direction::In, 1, &[]).unwrap()),
            [("c".into(), 1)]
        );
        assert!(
            t.traverse("nobody", Direction::Out, 3, &[])
                .unwrap()
                .is_empty()
        );
        assert!(t.traverse("a", Direction::Out, 0, &[]).unwrap().is_empty());
        assert!(matches!(
            t.traverse("a", Direction::Out, MAX_TRAVERSE_DEPTH + 1, &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn lookup_by_id_name_alias_and_uri() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("g").unwrap();
        let t = storage.tenant("g").unwrap();
        t.apply(vec![
            entity("p1", "Alice  Smith", &["TAP-1234"]),
            entity("p2", "Bob", &[]),
            WriteOp::Insert(Row::Resource(crate::storage::Resource {
                id: "r1".into(),
                uri: Some("doc://TAP-1234".into()),
                ..Default::default()
            })),
        ])
        .unwrap();
        let found = |k: &str| -> Vec<String> {
            t.lookup(&[k.to_string()])
                .unwrap()
                .into_iter()
                .map(|f| match f.row {
                    Row::Entity(e) => e.id,
                    Row::Resource(r) => r.id,
                    other => panic!("lookup returned {other:?}"),
                })
                .collect()
        };
        assert_eq!(found(" alice smith "), ["p1"]);
        assert_eq!(found("tap-1234"), ["p1"]);
        assert_eq!(found("doc://TAP-1234"), ["r1"]);
        assert_eq!(found("p2"), ["p2"]);
        assert!(found("carol").is_empty());
    }
}
