//! Concurrent writers: many threads, thousands of rows, nothing lost, no row id reused.

use std::collections::HashSet;

use remdb::{Batch, Entity};

use super::{fresh, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    let (_dir, db, t) = fresh("acme");
    const THREADS: usize = 6;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 250;
    std::thread::scope(|s| {
        for w in 0..THREADS {
            let t = db.tenant("acme").unwrap();
            s.spawn(move || {
                for b in 0..BATCHES {
                    let mut batch = Batch::new();
                    for i in 0..PER_BATCH {
                        batch = batch.insert(Entity {
                            id: format!("w{w}-b{b}-{i}"),
                            entity_type: format!("type{}", i % 3),
                            name: format!("n{w}-{b}-{i}"),
                            ..Default::default()
                        });
                    }
                    t.write(batch).unwrap();
                    // Single-row writes interleave with the batches.
                    t.create_entity(Entity {
                        id: format!("single-{w}-{b}"),
                        entity_type: "single".into(),
                        name: "s".into(),
                        ..Default::default()
                    })
                    .unwrap();
                }
            });
        }
    });
    let total = THREADS * BATCHES * (PER_BATCH + 1);
    assert_eq!(
        rows(&t, "SELECT count(*) FROM entities").await,
        [total.to_string()]
    );
    assert_eq!(
        rows(&t, "SELECT count(DISTINCT id) FROM entities").await,
        [total.to_string()]
    );
    // Each index agrees with the table.
    let by_type: usize = rows(
        &t,
        "SELECT count(*) FROM entities WHERE type IN ('type0', 'type1', 'type2', 'single')",
    )
    .await[0]
        .parse()
        .unwrap();
    assert_eq!(by_type, total);
    // Row ids are dense and unique: reading every row by its own id index finds exactly it.
    let ids: HashSet<String> = rows(&t, "SELECT id FROM entities")
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), total);
    let sample = rows(
        &t,
        "SELECT count(*) FROM entities WHERE id IN ('w0-b0-0', 'w5-b9-249', 'single-3-4')",
    )
    .await;
    assert_eq!(sample, ["3"]);
}
