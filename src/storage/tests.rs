use super::*;

fn entity(id: &str, ty: &str, name: &str) -> Row {
    Row::Entity(Entity {
        id: id.into(),
        entity_type: ty.into(),
        name: name.into(),
        ..Default::default()
    })
}

#[test]
fn tenant_ids_are_validated() {
    for bad in [
        "",
        "a/b",
        "..",
        "a..b",
        "nul\0",
        "tab\t",
        " pad",
        &"x".repeat(65),
    ] {
        assert!(
            matches!(validate_tenant_id(bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    for good in ["acme", "Acme-Corp_2", "ü.x", &"x".repeat(64)] {
        validate_tenant_id(good).unwrap();
    }
}

#[test]
fn write_index_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("a").unwrap();
    let t = storage.tenant("a").unwrap();
    t.apply(vec![
        WriteOp::Insert(entity("e1", "person", "Ada")),
        WriteOp::Insert(entity("e2", "project", "Remdb")),
        WriteOp::Insert(entity("e3", "person", "Bob")),
    ])
    .unwrap();
    let dup = t.apply(vec![
        WriteOp::Insert(entity("e4", "x", "y")),
        WriteOp::Insert(entity("e1", "x", "y")),
    ]);
    assert!(matches!(dup, Err(Error::AlreadyExists(_))));
    assert!(
        t.get(Table::Entities, &["e4".into()]).unwrap().is_none(),
        "nothing of a failed batch lands"
    );

    let path = AccessPath::IndexPrefix {
        index: IndexId::EntityType,
        prefixes: vec![vec!["person".into()]],
    };
    assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![1, 3]));
    let mut cursor = t
        .scan(Table::Entities, &AccessPath::FullScan, None)
        .unwrap();
    assert_eq!(cursor.next_chunk(2).unwrap().len(), 2);
    assert_eq!(cursor.next_chunk(2).unwrap().len(), 1);
    assert!(cursor.next_chunk(2).unwrap().is_empty());

    // Updating the type moves the index entry.
    t.apply(vec![WriteOp::Update(entity("e1", "robot", "Ada"))])
        .unwrap();
    assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![3]));
    assert_eq!(
        t.apply(vec![WriteOp::Delete {
            table: Table::Entities,
            key: vec!["e3".into()]
        }])
        .unwrap(),
        [1]
    );
    assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![]));
    assert_eq!(t.count(Table::Entities).unwrap(), 2);

    // Row ids keep growing across reopen.
    drop((t, cursor, storage));
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let t = storage.tenant("a").unwrap();
    t.apply(vec![WriteOp::Insert(entity("e5", "person", "Eve"))])
        .unwrap();
    assert_eq!(
        t.get(Table::Entities, &["e5".into()]).unwrap().unwrap().0,
        4
    );
}

#[test]
fn the_time_index_holds_current_rows() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("a").unwrap();
    let t = storage.tenant("a").unwrap();
    let moment = |id: &str, ts: i64, ty: &str| {
        Row::Moment(Moment {
            id: id.into(),
            timestamp: ts,
            moment_type: ty.into(),
            ..Default::default()
        })
    };
    t.apply(
        (1..=4)
            .map(|i| WriteOp::Insert(moment(&format!("m{i}"), i * 10, "note")))
            .collect(),
    )
    .unwrap();
    // An update keeps the copy current; one that moves the timestamp moves it.
    t.apply(vec![
        WriteOp::Update(moment("m2", 20, "chat")),
        WriteOp::Update(moment("m3", 50, "call")),
    ])
    .unwrap();
    // An entry written before the index held rows (an empty value) is read through
    // its row.
    let key = keys::index_key(IndexId::MomentTimestamp, &[KeyPart::I64(40)], 4);
    t.family().unwrap().put(&key, &[]).unwrap();
    let walk = |descending| AccessPath::IndexRange {
        index: IndexId::MomentTimestamp,
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
        descending,
    };
    let read = |descending| -> Vec<(String, i64, String)> {
        let mut cursor = t.scan(Table::Moments, &walk(descending), None).unwrap();
        cursor
            .next_chunk(100)
            .unwrap()
            .into_iter()
            .map(|(_, row)| match row {
                Row::Moment(m) => (m.id, m.timestamp, m.moment_type),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let expect = |id: &str, ts: i64, ty: &str| (id.to_string(), ts, ty.to_string());
    assert_eq!(
        read(true),
        [
            expect("m3", 50, "call"),
            expect("m4", 40, "note"),
            expect("m2", 20, "chat"),
            expect("m1", 10, "note"),
        ]
    );
    t.apply(vec![WriteOp::Delete {
        table: Table::Moments,
        key: vec!["m4".into()],
    }])
    .unwrap();
    assert_eq!(read(false).len(), 3);
    // Resolving ids does not need the rows.
    assert_eq!(
        t.resolve(Table::Moments, &walk(false)).unwrap(),
        Some(vec![1, 2, 3])
    );
}

#[test]
fn prefix_scans_read_only_what_a_limit_needs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("a").unwrap();
    let t = storage.tenant("a").unwrap();
    let ops = (0..500)
        .map(|i| {
            let ty = if i % 2 == 0 { "person" } else { "project" };
            WriteOp::Insert(entity(&format!("e{i:03}"), ty, &format!("n{i}")))
        })
        .collect();
    t.apply(ops).unwrap();

    // Two prefixes (an IN list), walked one after the other, 10 rows at a time.
    let path = AccessPath::IndexPrefix {
        index: IndexId::EntityType,
        prefixes: vec![vec!["project".into()], vec!["person".into()]],
    };
    let mut cursor = t.scan(Table::Entities, &path, Some(260)).unwrap();
    let first = cursor.next_chunk(10).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(
        cursor.index_keys_read(),
        10,
        "a chunk reads only its own keys"
    );
    assert!(
        first
            .iter()
            .all(|(_, r)| matches!(r, Row::Entity(e) if e.entity_type == "project"))
    );
    let mut all = first;
    loop {
        let chunk = cursor.next_chunk(64).unwrap();
        if chunk.is_empty() {
            break;
        }
        all.extend(chunk);
    }
    assert_eq!(
        all.len(),
        260,
        "the limit stops the walk in the second prefix"
    );
    let persons = all
        .iter()
        .filter(|(_, r)| matches!(r, Row::Entity(e) if e.entity_type == "person"))
        .count();
    assert_eq!(persons, 10);
    assert_eq!(cursor.index_keys_read(), 260);

    // The same prefix twice gives each row once; primary prefixes walk lazily too.
    let twice = AccessPath::IndexPrefix {
        index: IndexId::EntityType,
        prefixes: vec![vec!["person".into()], vec!["person".into()]],
    };
    assert_eq!(
        t.resolve(Table::Entities, &twice).unwrap().unwrap().len(),
        250
    );
    let ids = AccessPath::PrimaryPrefix {
        prefixes: vec![
            vec!["e007".into()],
            vec!["e003".into()],
            vec!["nope".into()],
        ],
    };
    let rows = t
        .scan(Table::Entities, &ids, None)
        .unwrap()
        .next_chunk(10)
        .unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|(_, r)| match r {
            Row::Entity(e) => e.name.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(names, ["n7", "n3"]);
}

#[test]
fn timestamp_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("a").unwrap();
    let t = storage.tenant("a").unwrap();
    let ops = (0..10)
        .map(|i| {
            WriteOp::Insert(Row::Moment(Moment {
                id: format!("m{i}"),
                timestamp: (i - 5) * 10,
                moment_type: "chat".into(),
                ..Default::default()
            }))
        })
        .collect();
    t.apply(ops).unwrap();
    let range = |lower, upper| {
        let path = AccessPath::IndexRange {
            index: IndexId::MomentTimestamp,
            lower,
            upper,
            descending: false,
        };
        t.resolve(Table::Moments, &path).unwrap().unwrap().len()
    };
    let ts = |v: i64| vec![KeyPart::I64(v)];
    assert_eq!(range(Bound::Included(ts(-20)), Bound::Excluded(ts(10))), 3);
    assert_eq!(range(Bound::Excluded(ts(-20)), Bound::Included(ts(10))), 3);
    assert_eq!(range(Bound::Unbounded, Bound::Excluded(ts(0))), 5);
    assert_eq!(range(Bound::Included(ts(100)), Bound::Unbounded), 0);
    assert_eq!(range(Bound::Included(ts(10)), Bound::Excluded(ts(0))), 0);
}

#[test]
fn a_stopped_vector_index_load_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    storage.create_tenant("a").unwrap();
    let t = storage.tenant("a").unwrap();
    let resource = |id: &str, x: f32| {
        WriteOp::Insert(Row::Resource(Resource {
            id: id.into(),
            content: id.into(),
            embedding: Some(vec![x, 1.0, 0.5, 0.25]),
            ..Default::default()
        }))
    };
    t.apply(vec![resource("r1", 0.1), resource("r2", 0.2)])
        .unwrap();
    let cancelled =
        |r: Result<Option<Arc<crate::vector::VectorIndex>>>| matches!(r, Err(Error::Cancelled(_)));
    // No saved file: a rebuild from the rows, stopped before its first chunk.
    assert!(cancelled(t.vector_index_until(&|| true)));
    assert!(!t.vector_index_loaded());
    assert_eq!(t.vector_index_until(&|| false).unwrap().unwrap().len(), 2);
    // A saved file and a change after it: the catch-up from the log is stopped.
    t.save_vectors().unwrap();
    t.apply(vec![resource("r3", 0.3)]).unwrap();
    t.state.vectors.forget();
    assert!(cancelled(t.vector_index_until(&|| true)));
    assert!(!t.vector_index_loaded());
    assert_eq!(t.vector_index().unwrap().unwrap().len(), 3);
}
