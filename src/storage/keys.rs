//! Storage layer: the key layout of a tenant's column family.
//!
//! Every key lives inside one tenant's column family, so no key names its tenant: the
//! column family *is* the tenant. Keys are order-preserving (memcomparable): variable
//! parts are encoded with [`storekey`] (strings: bytes with `0x00`/`0x01` escaped by a
//! `0x01`, then a `0x00` terminator; `i64`: big-endian with the sign bit flipped), fixed
//! parts are raw big-endian. A prefix of parts is therefore a prefix of bytes, and range
//! scans over index keys follow SQL order of the indexed values.
//!
//! | kind      | key bytes                                              | value                    |
//! |-----------|--------------------------------------------------------|--------------------------|
//! | meta      | `0x01` · name (storekey str)                           | meta value (e.g. u64 BE) |
//! | row       | `0x02` · table tag (u8) · row id (u64 BE)              | the encoded row          |
//! | primary   | `0x03` · table tag · key parts (storekey)              | row id (u64 BE)          |
//! | index     | `0x04` · table tag · index tag (u8) · parts · row id   | empty; the time index of moments holds the encoded row |
//! | vector    | `0x05` · table tag · row id (u64 BE)                   | f32 little-endian values |
//! | vector log| `0x06` · table tag · change number (u64 BE)            | row id (u64 BE) · op (u8: 1 upsert, 0 remove) |
//! | user index| `0x07` · table tag · index id (u32 BE) · value · row id | empty                    |
//!
//! A user-index value is a type tag and its payload, so that values of one JSON type sort
//! in SQL order and types never interleave: `0x00` null or missing; `0x01` · `0|1`
//! boolean; `0x02` · 8 bytes number (f64, sign bit flipped for positives, all bits
//! inverted for negatives, big-endian); `0x03` · storekey string; `0x04` · storekey
//! string of an object's or array's compact JSON text.
//!
//! The vector log records every change to a table's vectors in commit order; the HNSW
//! index file says which change number it covers, and on open the entries after it are
//! replayed. Entries the saved index covers are deleted.
//!
//! Table tags: resources 1, entities 2, edges 3, moments 4. Primary key parts: `id` for
//! resources, entities and moments; `(src, edge_type, dst)` for edges, which makes the
//! primary key of edges also their by-source index. Index tags are listed on
//! [`IndexId`](super::rows::IndexId). The exact bytes are pinned by the tests below:
//! changing them is a change of on-disk format.

use super::rows::{IndexId, KeyPart, Table};
use crate::error::{Error, Result};

pub const META: u8 = 0x01;
pub const ROW: u8 = 0x02;
pub const PRIMARY: u8 = 0x03;
pub const INDEX: u8 = 0x04;

pub const VECTOR: u8 = 0x05;
pub const VECTOR_LOG: u8 = 0x06;
pub const USER_INDEX: u8 = 0x07;

/// Meta key holding the next free row id of the tenant (u64 BE).
pub const META_NEXT_ROW_ID: &str = "next_row_id";
/// Meta key holding the next vector change number (u64 BE).
pub const META_NEXT_VECTOR_CHANGE: &str = "next_vector_change";
/// Meta key holding the last vector change number deleted from the log (u64 BE).
pub const META_VECTOR_LOG_TRIMMED: &str = "vector_log_trimmed";
/// Meta key holding the vector options (JSON) of the resources table.
pub const META_VECTOR_OPTIONS: &str = "vector_options";
/// Meta key holding the user-declared indexes (JSON list of definitions).
pub const META_USER_INDEXES: &str = "user_indexes";
/// Meta key holding the next user index id (u64 BE); ids are never reused.
pub const META_NEXT_USER_INDEX: &str = "next_user_index";

/// A value as a user index holds it: a JSON scalar, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// JSON null, or no value at the path.
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    /// An object or array, as its compact JSON text (what `->>` returns for it).
    Json(String),
}

impl IndexValue {
    /// The order-preserving bytes of the value (see the table above).
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            IndexValue::Null => buf.push(0x00),
            IndexValue::Bool(b) => buf.extend_from_slice(&[0x01, u8::from(*b)]),
            IndexValue::Number(n) => {
                // -0.0 and 0.0 are one value.
                let n = if *n == 0.0 { 0.0 } else { *n };
                let bits = n.to_bits();
                let ordered = if bits >> 63 == 1 {
                    !bits
                } else {
                    bits | 1 << 63
                };
                buf.push(0x02);
                buf.extend_from_slice(&ordered.to_be_bytes());
            }
            IndexValue::Text(s) | IndexValue::Json(s) => {
                buf.push(if matches!(self, IndexValue::Text(_)) {
                    0x03
                } else {
                    0x04
                });
                // Writing into a Vec cannot fail.
                let _ = storekey::encode(&mut *buf, s.as_str());
            }
        }
    }
}

/// The prefix of all entries of user index `id` of `table`.
pub fn user_index_prefix(table: Table, id: u32) -> Vec<u8> {
    let mut buf = vec![USER_INDEX, table.tag()];
    buf.extend_from_slice(&id.to_be_bytes());
    buf
}

/// The prefix of the entries of user index `id` that hold `value`.
pub fn user_index_value_prefix(table: Table, id: u32, value: &IndexValue) -> Vec<u8> {
    let mut buf = user_index_prefix(table, id);
    value.encode(&mut buf);
    buf
}

pub fn user_index_key(table: Table, id: u32, value: &IndexValue, row_id: u64) -> Vec<u8> {
    let mut buf = user_index_value_prefix(table, id, value);
    buf.extend_from_slice(&row_id.to_be_bytes());
    buf
}

pub fn vector_key(table: Table, row_id: u64) -> Vec<u8> {
    let mut buf = vec![VECTOR, table.tag()];
    buf.extend_from_slice(&row_id.to_be_bytes());
    buf
}

pub fn vector_prefix(table: Table) -> Vec<u8> {
    vec![VECTOR, table.tag()]
}

pub fn vector_log_key(table: Table, change: u64) -> Vec<u8> {
    let mut buf = vec![VECTOR_LOG, table.tag()];
    buf.extend_from_slice(&change.to_be_bytes());
    buf
}

fn push_parts(buf: &mut Vec<u8>, parts: &[KeyPart]) {
    for part in parts {
        // Writing into a Vec cannot fail: storekey only reports I/O errors of its writer.
        let _ = match part {
            KeyPart::Str(s) => storekey::encode(&mut *buf, s.as_str()),
            KeyPart::I64(v) => storekey::encode(&mut *buf, v),
        };
    }
}

pub fn meta_key(name: &str) -> Vec<u8> {
    let mut buf = vec![META];
    push_parts(&mut buf, &[KeyPart::Str(name.to_string())]);
    buf
}

/// All row keys of one table share this prefix; they sort by row id.
pub fn row_prefix(table: Table) -> Vec<u8> {
    vec![ROW, table.tag()]
}

pub fn row_key(table: Table, row_id: u64) -> Vec<u8> {
    let mut buf = row_prefix(table);
    buf.extend_from_slice(&row_id.to_be_bytes());
    buf
}

/// Decodes the row id at the end of a row or index key.
pub fn trailing_row_id(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The key of a primary-key entry, or (with fewer parts) the prefix of several.
pub fn primary_key(table: Table, parts: &[KeyPart]) -> Vec<u8> {
    let mut buf = vec![PRIMARY, table.tag()];
    push_parts(&mut buf, parts);
    buf
}

/// The prefix of all entries of one secondary index whose leading values are `parts`.
pub fn index_prefix(index: IndexId, parts: &[KeyPart]) -> Vec<u8> {
    let mut buf = vec![INDEX, index.table().tag(), index.tag()];
    push_parts(&mut buf, parts);
    buf
}

pub fn index_key(index: IndexId, parts: &[KeyPart], row_id: u64) -> Vec<u8> {
    let mut buf = index_prefix(index, parts);
    buf.extend_from_slice(&row_id.to_be_bytes());
    buf
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no
/// such key exists (the prefix is all `0xFF`). Used as an exclusive upper bound.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The row id at the end of a secondary index key.
pub fn index_row_id(key: &[u8]) -> Result<u64> {
    trailing_row_id(key).ok_or_else(|| Error::Corruption("short index key".into()))
}

/// A row id stored as a value (of a primary-key entry, a counter).
pub fn decode_row_id(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corruption(format!("row id of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> KeyPart {
        KeyPart::Str(v.to_string())
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(
            row_key(Table::Entities, 258),
            [0x02, 2, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            primary_key(Table::Resources, &[s("ab")]),
            [0x03, 1, b'a', b'b', 0]
        );
        // 0x00 and 0x01 inside a string are escaped with 0x01.
        assert_eq!(
            primary_key(Table::Resources, &[s("a\u{0}\u{1}")]),
            [0x03, 1, b'a', 1, 0, 1, 1, 0]
        );
        assert_eq!(
            primary_key(Table::Edges, &[s("a"), s("knows"), s("b")]),
            [0x03, 3, b'a', 0, b'k', b'n', b'o', b'w', b's', 0, b'b', 0]
        );
        assert_eq!(
            index_key(IndexId::EntityType, &[s("person")], 7),
            [
                0x04, 2, 1, b'p', b'e', b'r', b's', b'o', b'n', 0, 0, 0, 0, 0, 0, 0, 0, 7
            ]
        );
        // i64: big-endian with the sign bit flipped, so negatives sort first.
        assert_eq!(
            index_key(IndexId::MomentTimestamp, &[KeyPart::I64(1)], 1),
            [
                0x04, 4, 4, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1
            ]
        );
        assert_eq!(meta_key("n"), [0x01, b'n', 0]);
        assert_eq!(
            vector_key(Table::Resources, 3),
            [0x05, 1, 0, 0, 0, 0, 0, 0, 0, 3]
        );
        assert_eq!(
            vector_log_key(Table::Resources, 256),
            [0x06, 1, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(
            user_index_key(Table::Resources, 2, &IndexValue::Text("en".into()), 5),
            [
                0x07, 1, 0, 0, 0, 2, 0x03, b'e', b'n', 0, 0, 0, 0, 0, 0, 0, 0, 5
            ]
        );
        assert_eq!(
            user_index_value_prefix(Table::Entities, 1, &IndexValue::Number(1.0)),
            [0x07, 2, 0, 0, 0, 1, 0x02, 0xBF, 0xF0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            user_index_value_prefix(Table::Entities, 1, &IndexValue::Bool(true)),
            [0x07, 2, 0, 0, 0, 1, 0x01, 1]
        );
        assert_eq!(
            user_index_value_prefix(Table::Entities, 1, &IndexValue::Null),
            [0x07, 2, 0, 0, 0, 1, 0x00]
        );
    }

    #[test]
    fn index_values_sort_by_type_then_value() {
        let key = |v: IndexValue| user_index_key(Table::Resources, 1, &v, 0);
        let ordered = [
            IndexValue::Null,
            IndexValue::Bool(false),
            IndexValue::Bool(true),
            IndexValue::Number(f64::MIN),
            IndexValue::Number(-2.5),
            IndexValue::Number(-1.0),
            IndexValue::Number(-0.0),
            IndexValue::Number(0.5),
            IndexValue::Number(2.0),
            IndexValue::Number(10.0),
            IndexValue::Number(f64::MAX),
            IndexValue::Text(String::new()),
            IndexValue::Text("a".into()),
            IndexValue::Text("a\u{0}".into()),
            IndexValue::Text("b".into()),
            IndexValue::Json("[1]".into()),
        ];
        for pair in ordered.windows(2) {
            assert!(
                key(pair[0].clone()) < key(pair[1].clone()),
                "{:?} < {:?}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(key(IndexValue::Number(-0.0)), key(IndexValue::Number(0.0)));
    }

    #[test]
    fn order_follows_values() {
        let ts = |v: i64| index_key(IndexId::MomentTimestamp, &[KeyPart::I64(v)], 0);
        assert!(ts(-5) < ts(-1) && ts(-1) < ts(0) && ts(0) < ts(1) && ts(1) < ts(i64::MAX));
        let name = |v: &str| index_key(IndexId::EntityName, &[s(v)], u64::MAX);
        assert!(
            name("a") < name("a\u{0}") && name("a\u{0}") < name("ab") && name("ab") < name("b")
        );
        // A string's prefix does not match a longer string: the terminator separates them.
        let p = index_prefix(IndexId::EntityType, &[s("per")]);
        assert!(!index_key(IndexId::EntityType, &[s("person")], 1).starts_with(&p));
        assert!(row_key(Table::Entities, 1) < row_key(Table::Entities, 256));
    }

    #[test]
    fn successor_bounds_a_prefix() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
        let p = index_prefix(IndexId::EntityType, &[s("ab")]);
        let succ = prefix_successor(&p).unwrap();
        for longer in ["ab\u{0}", "ab\u{1}", "abc", "ab\u{ff}"] {
            let k = index_key(IndexId::EntityType, &[s(longer)], 0);
            assert!(k > p && (k < succ) == k.starts_with(&p), "{longer:?}");
        }
        assert_eq!(trailing_row_id(&row_key(Table::Edges, 99)), Some(99));
    }
}
