use super::super::{Storage, StorageOptions, WriteOp};
use super::*;
use crate::storage::Resource;

fn resource(id: &str, metadata: &str) -> WriteOp {
    WriteOp::Insert(Row::Resource(Resource {
        id: id.into(),
        uri: Some(format!("doc://{id}")),
        metadata: metadata.into(),
        ..Default::default()
    }))
}

#[test]
fn values_of_paths() {
    let def = |kind| IndexDef {
        name: "i".into(),
        table: "resources".into(),
        column: "metadata".into(),
        path: vec!["a".into(), "b".into()],
        kind,
        id: 1,
    };
    let json: serde_json::Value =
        serde_json::from_str(r#"{"a": {"b": [1, "x", 1, null, {"c": true}]}}"#).unwrap();
    assert_eq!(
        def(IndexKind::List).values(&json),
        [
            IndexValue::Number(1.0),
            IndexValue::Text("x".into()),
            IndexValue::Null,
            IndexValue::Json(r#"{"c":true}"#.into())
        ]
    );
    assert_eq!(
        def(IndexKind::Value).values(&json),
        [IndexValue::Json(r#"[1,"x",1,null,{"c":true}]"#.into())]
    );
    let missing: serde_json::Value = serde_json::from_str(r#"{"a": 1}"#).unwrap();
    assert_eq!(def(IndexKind::Value).values(&missing), [IndexValue::Null]);
    assert!(def(IndexKind::List).values(&missing).is_empty());
    assert_eq!(def(IndexKind::Value).expression(), "metadata->'a'->>'b'");
    // On an array an integer key is a position, as datafusion-functions-json reads it.
    let first = IndexDef {
        path: vec!["a".into(), "b".into(), "-1".into(), "c".into()],
        ..def(IndexKind::Value)
    };
    assert_eq!(first.values(&json), [IndexValue::Bool(true)]);
}

#[test]
fn create_maintain_query_drop() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("t").unwrap();
    let t = storage.tenant("t").unwrap();
    t.apply(vec![
        resource("r1", r#"{"lang": "en", "tags": ["a", "b"], "n": 3}"#),
        resource("r2", r#"{"lang": "de", "tags": ["b"], "n": 10}"#),
        resource("r3", r#"{"n": -1}"#),
    ])
    .unwrap();
    let mut calls = vec![];
    let lang = t
        .create_index(
            "idx_lang",
            Table::Resources,
            "metadata",
            &["lang".into()],
            IndexKind::Value,
            &mut |done, total| {
                calls.push((done, total));
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(calls, [(0, 3), (3, 3)]);
    let tags = t
        .create_index(
            "idx_tags",
            Table::Resources,
            "metadata",
            &["tags".into()],
            IndexKind::List,
            &mut |_, _| Ok(()),
        )
        .unwrap();
    let n = t
        .create_index(
            "idx_n",
            Table::Resources,
            "metadata",
            &["n".into()],
            IndexKind::Value,
            &mut |_, _| Ok(()),
        )
        .unwrap();
    // Written after the index exists: maintained in the row's batch.
    t.apply(vec![resource(
        "r4",
        r#"{"lang": "en", "tags": ["a"], "n": 2.5}"#,
    )])
    .unwrap();
    let eq = |def: &IndexDef, v: IndexValue| {
        let set = RowSet::user(def, &[(Bound::Included(v.clone()), Bound::Included(v))]).unwrap();
        t.row_set(&set).unwrap()
    };
    assert_eq!(eq(&lang, IndexValue::Text("en".into())), [1, 4]);
    assert_eq!(eq(&lang, IndexValue::Null), [3]);
    assert_eq!(eq(&tags, IndexValue::Text("b".into())), [1, 2]);
    let between = RowSet::user(
        &n,
        &[(
            Bound::Included(IndexValue::Number(0.0)),
            Bound::Excluded(IndexValue::Number(10.0)),
        )],
    )
    .unwrap();
    assert_eq!(t.row_set(&between).unwrap(), [1, 4]);
    let both = RowSet::And(vec![
        between.clone(),
        RowSet::user(
            &tags,
            &[(
                Bound::Included(IndexValue::Text("a".into())),
                Bound::Included(IndexValue::Text("a".into())),
            )],
        )
        .unwrap(),
    ]);
    assert_eq!(t.row_set(&both).unwrap(), [1, 4]);

    // Updates and deletes move and remove entries.
    t.apply(vec![
        WriteOp::Update(Row::Resource(Resource {
            id: "r1".into(),
            uri: Some("doc://r1".into()),
            metadata: r#"{"lang": "fr"}"#.into(),
            ..Default::default()
        })),
        WriteOp::Delete {
            table: Table::Resources,
            key: vec!["r4".into()],
        },
    ])
    .unwrap();
    assert!(eq(&lang, IndexValue::Text("en".into())).is_empty());
    assert_eq!(eq(&tags, IndexValue::Text("b".into())), [2]);

    assert!(matches!(
        t.create_index(
            "idx_lang",
            Table::Resources,
            "metadata",
            &["x".into()],
            IndexKind::Value,
            &mut |_, _| Ok(())
        ),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        t.create_index(
            "bad",
            Table::Resources,
            "content",
            &["x".into()],
            IndexKind::Value,
            &mut |_, _| Ok(())
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        t.drop_index("entities_type"),
        Err(Error::InvalidArgument(_))
    ));
    let planned = RowSet::user(
        &lang,
        &[(
            Bound::Included(IndexValue::Text("en".into())),
            Bound::Included(IndexValue::Text("en".into())),
        )],
    )
    .unwrap();
    t.drop_index("idx_lang").unwrap();
    assert_eq!(t.user_indexes().unwrap().len(), 2);
    // A set planned before the drop is refused, naming the index, not read as empty.
    match t.row_set(&planned) {
        Err(Error::Query(message)) => assert!(message.contains("idx_lang"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(t.drop_index("idx_lang"), Err(Error::NotFound(_))));

    // Definitions survive a reopen.
    drop((t, storage));
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let t = storage.tenant("t").unwrap();
    let names: Vec<String> = t
        .user_indexes()
        .unwrap()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, ["idx_tags", "idx_n"]);
}
