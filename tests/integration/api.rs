//! The library API: typed round trips for every table, batches, reopen, bad input.

use remdb::{Batch, Db, Edge, Entity, Error, Moment, Policy, Resource, Table};

use super::{fresh, rows};

fn person(id: &str, name: &str) -> Entity {
    Entity {
        id: id.into(),
        entity_type: "person".into(),
        name: name.into(),
        properties: r#"{"role":"engineer"}"#.into(),
        ..Default::default()
    }
}

#[test]
fn entity_round_trip() {
    let (_dir, _db, t) = fresh("acme");
    let id = t.create_entity(person("", "Ada")).unwrap();
    assert_eq!(id.len(), 36, "generated ids are UUIDs: {id}");
    let got = t.get_entity(&id).unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.properties.as_str()),
        ("Ada", r#"{"role":"engineer"}"#)
    );
    assert!(got.created_at > 0 && got.updated_at == got.created_at);

    let mut changed = got.clone();
    changed.name = "Ada Lovelace".into();
    changed.aliases = vec!["Countess".into()];
    t.update_entity(changed).unwrap();
    let after = t.get_entity(&id).unwrap().unwrap();
    assert_eq!(after.name, "Ada Lovelace");
    assert_eq!(
        after.created_at, got.created_at,
        "created_at survives an update"
    );
    assert!(after.updated_at >= got.updated_at);

    assert!(t.delete_entity(&id).unwrap());
    assert!(!t.delete_entity(&id).unwrap());
    assert!(t.get_entity(&id).unwrap().is_none());
}

#[test]
fn resource_edge_moment_round_trips() {
    let (_dir, _db, t) = fresh("acme");
    let r = Resource {
        id: "r1".into(),
        uri: Some("doc://a".into()),
        chunk_index: 2,
        content: "hello".into(),
        metadata: r#"{"language":"en"}"#.into(),
        ..Default::default()
    };
    t.create_resource(r.clone()).unwrap();
    let got = t.get_resource("r1").unwrap().unwrap();
    assert_eq!(
        (got.uri.as_deref(), got.chunk_index, got.content.as_str()),
        (Some("doc://a"), 2, "hello")
    );
    t.update_resource(Resource {
        content: "bye".into(),
        ..r
    })
    .unwrap();
    assert_eq!(t.get_resource("r1").unwrap().unwrap().content, "bye");
    assert!(t.delete_resource("r1").unwrap());

    let e = Edge {
        src: "a".into(),
        dst: "b".into(),
        edge_type: "knows".into(),
        properties: r#"{"since":2020}"#.into(),
        ..Default::default()
    };
    t.create_edge(e.clone()).unwrap();
    assert!(matches!(
        t.create_edge(e.clone()),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        t.get_edge("a", "knows", "b").unwrap().unwrap().properties,
        r#"{"since":2020}"#
    );
    t.update_edge(Edge {
        properties: r#"{"since":2021}"#.into(),
        ..e
    })
    .unwrap();
    assert_eq!(
        t.get_edge("a", "knows", "b").unwrap().unwrap().properties,
        r#"{"since":2021}"#
    );
    assert!(t.delete_edge("a", "knows", "b").unwrap());
    assert!(t.get_edge("a", "knows", "b").unwrap().is_none());

    let m = Moment {
        id: "m1".into(),
        timestamp: 1_000,
        end_timestamp: Some(2_000),
        moment_type: "meeting".into(),
        classifications: vec!["work".into()],
        resource_refs: vec!["r1".into()],
        entity_refs: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    t.create_moment(m.clone()).unwrap();
    let got = t.get_moment("m1").unwrap().unwrap();
    assert_eq!(got.entity_refs, ["a", "b"]);
    assert_eq!(got.end_timestamp, Some(2_000));
    t.update_moment(Moment {
        moment_type: "call".into(),
        ..m
    })
    .unwrap();
    assert_eq!(t.get_moment("m1").unwrap().unwrap().moment_type, "call");
    assert!(t.delete_moment("m1").unwrap());
}

#[tokio::test]
async fn batch_is_atomic_and_visible_to_sql() {
    let (_dir, _db, t) = fresh("acme");
    let mut batch = Batch::new();
    for i in 0..3000 {
        batch = batch.insert(person(&format!("p{i}"), &format!("Person {i}")));
    }
    t.write(batch).unwrap();
    assert_eq!(rows(&t, "SELECT count(*) FROM entities").await, ["3000"]);

    // One bad row fails the whole batch: nothing of it lands.
    let bad = Batch::new()
        .insert(person("new1", "x"))
        .insert(person("p5", "duplicate"));
    assert!(matches!(t.write(bad), Err(Error::AlreadyExists(m)) if m.contains("'p5'")));
    assert!(t.get_entity("new1").unwrap().is_none());
    let bad = Batch::new().insert(person("new2", "x")).insert(Entity {
        properties: "{oops".into(),
        ..person("new3", "y")
    });
    assert!(matches!(t.write(bad), Err(Error::InvalidArgument(m)) if m.contains("malformed JSON")));
    assert_eq!(t.count(Table::Entities).unwrap(), 3000);
}

#[tokio::test]
async fn a_result_without_rows_has_its_columns() {
    let (_dir, _db, t) = fresh("acme");
    for sql in [
        "SELECT id, name FROM entities WHERE type = 'nobody'",
        "SELECT id, name FROM entities WHERE id = 'none'",
        "SELECT id, name FROM entities LIMIT 0",
    ] {
        let result = t.sql(sql).await.unwrap();
        assert_eq!(result.num_rows(), 0, "{sql}");
        let names: Vec<&str> = result
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["id", "name"], "{sql}");
    }
    // A write returns its count; an index command nothing.
    let count = t
        .sql("INSERT INTO entities (id, type, name) VALUES ('e1', 'person', 'Ada')")
        .await
        .unwrap();
    assert_eq!(count.schema.field(0).name(), "count");
    let created = t
        .sql("CREATE INDEX idx_role ON entities ((properties->>'role'))")
        .await
        .unwrap();
    assert!(created.schema.fields().is_empty() && created.is_empty());
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.create_tenant("acme").unwrap();
        t.create_entity(person("e1", "Ada")).unwrap();
        t.sql("INSERT INTO entities (id, type, name) VALUES ('e2', 'person', 'Bob')")
            .await
            .unwrap();
        db.create_tenant("other").unwrap();
    }
    let db = Db::open(dir.path(), Default::default()).unwrap();
    assert_eq!(db.list_tenants(), ["acme", "other"]);
    let t = db.tenant("acme").unwrap();
    assert_eq!(
        rows(&t, "SELECT id FROM entities ORDER BY id").await,
        ["e1", "e2"]
    );
    // Row ids continue after reopen: a new row does not collide with an old one.
    t.create_entity(person("e3", "Cy")).unwrap();
    assert_eq!(
        rows(&t, "SELECT count(*) FROM entities WHERE type = 'person'").await,
        ["3"]
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let (_dir, db, t) = fresh("acme");
    t.create_entity(person("e1", "Ada")).unwrap();
    let cases: &[(&str, &str)] = &[
        ("SELECT * FROM nope", "nope"),
        ("SELECT nope FROM entities", "nope"),
        (
            "INSERT INTO entities (id, type, name, properties) VALUES ('x', 'person', 'X', '{bad json')",
            "malformed JSON in entities.properties",
        ),
        (
            "INSERT INTO entities (id, type, name, properties) VALUES ('x', 'person', 'X', '[1,2]')",
            "must be a JSON object",
        ),
        (
            "INSERT INTO entities (id, type, name) VALUES ('e1', 'person', 'Dup')",
            "already exists",
        ),
        (
            "INSERT INTO moments (id, timestamp, type) VALUES ('m', 'not a time', 'x')",
            "not a time",
        ),
        (
            "INSERT INTO entities (id, type, name) VALUES ('y', NULL, 'Y')",
            "type",
        ),
        ("SELEC 1", "SELEC"),
        ("CREATE TABLE t (a int)", "DDL"),
        (
            "DELETE FROM entities WHERE id IN (SELECT src FROM edges)",
            "subquery or join",
        ),
        ("UPDATE entities SET nope = 1", "nope"),
    ];
    for (sql, needle) in cases {
        let err = t.sql(sql).await.expect_err(sql).to_string();
        assert!(
            err.contains(needle),
            "{sql}: error {err:?} should mention {needle:?}"
        );
    }
    // Nothing was written, and the database still answers.
    assert_eq!(rows(&t, "SELECT id, name FROM entities").await, ["e1|Ada"]);

    // Tenants: unknown, hostile, duplicate.
    assert!(matches!(db.tenant("ghost"), Err(Error::NotFound(_))));
    // "." named the directory of every tenant's vector index files.
    for bad in ["", ".", "../etc", "a/b", "nul\0", &"x".repeat(65)] {
        assert!(
            matches!(db.create_tenant(bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        db.create_tenant("acme"),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(db.list_tenants(), ["acme"]);
}

#[tokio::test]
async fn drop_tenant_removes_its_data() {
    let (_dir, db, t) = fresh("acme");
    t.create_entity(person("e1", "Ada")).unwrap();
    db.drop_tenant("acme").unwrap();
    assert!(db.tenant("acme").is_err());
    assert!(
        t.get_entity("e1").is_err(),
        "a dropped tenant's old session fails instead of reading"
    );
    let again = db.create_tenant("acme").unwrap();
    assert_eq!(rows(&again, "SELECT count(*) FROM entities").await, ["0"]);

    // The old handle does not reach the new tenant of the same name (its column family
    // has the same name), neither to read nor to write.
    again.create_entity(person("e2", "Bea")).unwrap();
    assert!(matches!(t.get_entity("e2"), Err(Error::NotFound(_))));
    assert!(t.sql("SELECT id FROM entities").await.is_err());
    assert!(t.create_entity(person("e3", "Cy")).is_err());
    assert_eq!(rows(&again, "SELECT id FROM entities").await, ["e2"]);
}

/// RocksDB writes its files with the umask (usually world-readable): the directory a
/// database creates keeps other users out of them.
#[cfg(unix)]
#[test]
fn a_new_database_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let db = Db::open(&path, Default::default()).unwrap();
    db.create_tenant("acme").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "mode {:o}", mode & 0o777);
}

/// One statement policy per entry point: SQL from an application reaches neither files
/// nor settings, wherever the statement hides it (a script, parameters, a prepared
/// statement, below EXPLAIN ANALYZE); the operator's handle may COPY to any path and SET;
/// no one creates tables.
#[tokio::test]
async fn each_entry_point_runs_under_its_statement_policy() {
    let (dir, _db, t) = fresh("p");
    let out = dir.path().join("out.d").join("rows.v1.csv");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let copy = format!("COPY (SELECT 1 AS x) TO '{}' STORED AS CSV", out.display());
    let refused = [
        copy.clone(),
        format!("EXPLAIN ANALYZE {copy}"),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "PREPARE q AS SELECT 1".to_string(),
        "CREATE TABLE x (a INT)".to_string(),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_string(),
    ];
    assert_eq!(t.policy(), Policy::Application);
    for sql in &refused {
        let err = t.sql(sql).await.unwrap_err().to_string();
        assert!(
            err.contains("not allowed") || err.contains("DDL"),
            "{sql}: {err}"
        );
        assert!(
            t.sql_script(&format!("SELECT 1; {sql}")).await.is_err(),
            "{sql}"
        );
        assert!(t.sql_with_params(sql, &[]).await.is_err(), "{sql}");
        assert!(t.prepare(sql).await.is_err(), "{sql}");
    }
    let err = t.sql(&copy).await.unwrap_err().to_string();
    assert!(err.contains("COPY") && err.contains("application"), "{err}");
    assert!(!out.exists());
    let batch_size = "SELECT value FROM information_schema.df_settings \
                      WHERE name = 'datafusion.execution.batch_size'";
    assert_eq!(rows(&t, batch_size).await, ["8192"]);

    let operator = t.with_policy(Policy::Operator);
    operator.sql(&copy).await.unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().contains('1'));
    operator
        .sql("SET datafusion.execution.batch_size = 100")
        .await
        .unwrap();
    // The session is the tenant's: every handle sees the setting.
    assert_eq!(rows(&t, batch_size).await, ["100"]);
    for sql in &refused[4..] {
        let err = operator.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains("DDL"), "{sql}: {err}");
    }
}
