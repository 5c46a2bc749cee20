//! Tenant isolation: nothing tenant B can write in SQL sees or changes tenant A's rows.

use remdb::Entity;

use super::{fresh, rows};

#[tokio::test]
async fn another_tenant_cannot_reach_rows() {
    let (_dir, db, a) = fresh("a");
    let b = db.create_tenant("b").unwrap();
    for i in 0..5 {
        a.create_entity(Entity {
            id: format!("secret{i}"),
            entity_type: "person".into(),
            name: format!("A{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    a.sql("INSERT INTO edges (src, dst, edge_type) VALUES ('secret0', 'secret1', 'knows')")
        .await
        .unwrap();
    b.create_entity(Entity {
        id: "mine".into(),
        entity_type: "person".into(),
        name: "B".into(),
        ..Default::default()
    })
    .unwrap();

    let reads = [
        "SELECT count(*) FROM entities",
        "SELECT count(*) FROM entities WHERE id = 'secret0'",
        "SELECT count(*) FROM entities WHERE id IN ('secret1', 'secret2')",
        "SELECT count(*) FROM entities WHERE type = 'person' AND name LIKE 'A%'",
        "SELECT count(*) FROM edges",
        "SELECT count(*) FROM entities e JOIN edges x ON x.src = e.id",
        "SELECT count(*) FROM entities WHERE id IN (SELECT src FROM edges)",
        "SELECT count(*) FROM (SELECT id FROM entities UNION ALL SELECT src FROM edges) s WHERE id LIKE 'secret%'",
        "WITH x AS (SELECT * FROM entities) SELECT count(*) FROM x WHERE id LIKE 'secret%'",
        "SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('information_schema')",
    ];
    let expected = ["1", "0", "0", "0", "0", "0", "0", "0", "0", "4"];
    for (sql, want) in reads.iter().zip(expected) {
        assert_eq!(rows(&b, sql).await, [want], "{sql}");
    }
    // Naming another tenant's catalog or schema fails.
    for sql in [
        "SELECT * FROM a.public.entities",
        "SELECT * FROM a.entities",
        "SELECT * FROM \"t:a\".entities",
    ] {
        assert!(b.sql(sql).await.is_err(), "{sql}");
    }
    // Writes from b touch nothing of a.
    for sql in [
        "DELETE FROM entities WHERE id = 'secret0'",
        "DELETE FROM entities",
        "UPDATE entities SET name = 'pwned' WHERE id = 'secret1'",
        "UPDATE entities SET name = 'pwned'",
        "DELETE FROM edges WHERE src = 'secret0'",
    ] {
        b.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(
        rows(&a, "SELECT count(*) FROM entities WHERE name LIKE 'A%'").await,
        ["5"]
    );
    assert_eq!(rows(&a, "SELECT count(*) FROM edges").await, ["1"]);
    assert_eq!(rows(&b, "SELECT count(*) FROM entities").await, ["0"]);
    // The same id can exist in both tenants.
    b.create_entity(Entity {
        id: "secret0".into(),
        entity_type: "x".into(),
        name: "mine".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(a.get_entity("secret0").unwrap().unwrap().name, "A0");
}
