//! Vector search through the API, persistence of the index, and a crash test.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Db, DbOptions, Error, Param, Resource, StorageOptions, Table, VectorOptions};

use super::{fresh, rows};

fn random_unit(rng: &mut StdRng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn resource(id: &str, embedding: Option<Vec<f32>>) -> Resource {
    Resource {
        id: id.into(),
        uri: Some(format!("doc://{id}")),
        content: id.into(),
        embedding,
        ..Default::default()
    }
}

#[tokio::test]
async fn api_search_and_errors() {
    let (_dir, _db, t) = fresh("acme");
    let mut rng = StdRng::seed_from_u64(7);
    let vectors: Vec<Vec<f32>> = (0..500).map(|_| random_unit(&mut rng, 24)).collect();
    let mut batch = Batch::new();
    for (i, v) in vectors.iter().enumerate() {
        batch = batch.insert(resource(&format!("r{i}"), Some(v.clone())));
    }
    t.write(batch).unwrap();
    let hits = t.search_similar(&vectors[42], 5, None).unwrap();
    assert_eq!(hits[0].0.id, "r42");
    assert!(
        (hits[0].1 - 1.0).abs() < 1e-4,
        "self-similarity is 1: {}",
        hits[0].1
    );
    assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
    let above = t.search_similar(&vectors[42], 50, Some(0.99)).unwrap();
    assert_eq!(above.len(), 1, "min_score keeps only the row itself");

    // Wrong dimension or NaN: refused, nothing written.
    let err = t
        .create_resource(resource("bad", Some(vec![1.0; 3])))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("3 dimensions")),
        "{err}"
    );
    let mut nan = vectors[0].clone();
    nan[3] = f32::NAN;
    assert!(t.create_resource(resource("bad", Some(nan))).is_err());
    assert!(t.get_resource("bad").unwrap().is_none());
    assert!(
        t.search_similar(&[1.0, 2.0], 3, None).is_err(),
        "a query of the wrong dimension is refused"
    );

    // set_embedding replaces; None removes.
    t.set_embedding("r1", Some(vectors[42].clone())).unwrap();
    let hits = t.search_similar(&vectors[42], 2, None).unwrap();
    let ids: Vec<&str> = hits.iter().map(|(r, _)| r.id.as_str()).collect();
    assert!(ids.contains(&"r1") && ids.contains(&"r42"), "{ids:?}");
    t.set_embedding("r1", None).unwrap();
    assert!(t.get_resource("r1").unwrap().unwrap().embedding.is_none());
    assert_eq!(t.vector_index_stats().unwrap().0, 499);
    assert!(matches!(
        t.set_embedding("ghost", None),
        Err(Error::NotFound(_))
    ));

    // Options cannot change under existing vectors, except ef_search.
    let current = t.vector_options().unwrap().unwrap();
    assert_eq!(current.dimensions, Some(24));
    assert!(
        t.configure_vectors(VectorOptions {
            connectivity: 32,
            ..current
        })
        .is_err()
    );
    t.configure_vectors(VectorOptions {
        ef_search: 200,
        ..current
    })
    .unwrap();

    // A vector parameter in SQL.
    let q = Param::Vector(vectors[7].clone());
    let batches = t
        .sql_with_params(
            "SELECT id FROM vector_similar('resources', $1, $2)",
            &[q, Param::Int(1)],
        )
        .await
        .unwrap();
    assert_eq!(super::slt::render(&batches), [["r7"]]);
    assert!(
        t.sql_with_params("SELECT $2", &[Param::Int(1)])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn index_survives_reopen_unload_and_a_lost_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let vectors: Vec<Vec<f32>> = (0..300).map(|_| random_unit(&mut rng, 16)).collect();
    {
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.create_tenant("acme").unwrap();
        t.configure_vectors(VectorOptions {
            dimensions: Some(16),
            precision: remdb::Precision::F16,
            ..Default::default()
        })
        .unwrap();
        let mut batch = Batch::new();
        for (i, v) in vectors.iter().enumerate() {
            batch = batch.insert(resource(&format!("r{i}"), Some(v.clone())));
        }
        t.write(batch).unwrap();
        assert_eq!(
            t.search_similar(&vectors[3], 1, None).unwrap()[0].0.id,
            "r3"
        );
        // Evict and reload.
        t.unload_vectors().unwrap();
        assert_eq!(
            t.search_similar(&vectors[4], 1, None).unwrap()[0].0.id,
            "r4"
        );
        // Changes after the last save are caught up from the log on the next load.
        t.save_vectors().unwrap();
        t.delete_resource("r5").unwrap();
    }
    let files: Vec<_> = std::fs::read_dir(dir.path().join("vectors/acme"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "one saved index file");
    {
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.tenant("acme").unwrap();
        assert_eq!(t.vector_index_stats().unwrap().0, 299);
        assert_ne!(
            t.search_similar(&vectors[5], 1, None).unwrap()[0].0.id,
            "r5"
        );
        assert_eq!(
            rows(
                &t,
                "SELECT count(*) FROM resources WHERE embedding IS NOT NULL"
            )
            .await,
            ["299"]
        );
    }
    // A corrupt index file is ignored and the index rebuilt from RocksDB.
    for f in std::fs::read_dir(dir.path().join("vectors/acme"))
        .unwrap()
        .flatten()
    {
        std::fs::write(f.path(), b"not an index").unwrap();
    }
    let db = Db::open(dir.path(), Default::default()).unwrap();
    let t = db.tenant("acme").unwrap();
    assert_eq!(
        t.search_similar(&vectors[9], 1, None).unwrap()[0].0.id,
        "r9"
    );
    assert_eq!(t.vector_index_stats().unwrap().0, 299);
}

const CRASH_DIR: &str = "REMDB_CRASH_DIR";
const DIMS: usize = 16;
const PER_BATCH: usize = 50;

/// The child of the crash test: writes synced batches forever, printing each
/// acknowledged batch number; saves the index now and then. Run only by the parent.
#[test]
#[ignore = "run by crash_test as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let storage = StorageOptions {
        sync: true,
        ..Default::default()
    };
    let db = Db::open(&dir, DbOptions { storage }).unwrap();
    let t = if db.has_tenant("crash") {
        db.tenant("crash").unwrap()
    } else {
        db.create_tenant("crash").unwrap()
    };
    let start = t.count(Table::Resources).unwrap() as usize / PER_BATCH;
    let mut rng = StdRng::seed_from_u64(start as u64);
    for b in start.. {
        let mut batch = Batch::new();
        for i in 0..PER_BATCH {
            batch = batch.insert(resource(
                &format!("b{b}-{i}"),
                Some(random_unit(&mut rng, DIMS)),
            ));
        }
        t.write(batch).unwrap();
        println!("acked {b}");
        if b % 7 == 3 {
            t.save_vectors().unwrap();
        }
    }
}

#[test]
fn crash_test() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut acked: Option<usize> = None;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "vectors::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = rng.random_range(1..6);
        let mut seen = 0;
        let note_ack = |line: std::io::Result<String>| {
            let line = line.unwrap();
            line.strip_prefix("acked ")
                .map(|n| n.parse::<usize>().unwrap())
        };
        for line in lines.by_ref() {
            if let Some(n) = note_ack(line) {
                acked = Some(n);
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        // SIGKILL: no destructor runs, nothing is saved on the way out.
        child.kill().unwrap();
        child.wait().unwrap();
        // Acks the child printed before it died may still sit in the pipe: the last one
        // is what it acknowledged.
        for line in lines {
            if let Some(n) = note_ack(line) {
                acked = Some(n);
            }
        }
        let acked = acked.expect("child acknowledged a batch");

        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.tenant("crash").unwrap();
        let n = t.count(Table::Resources).unwrap() as usize;
        assert_eq!(
            n % PER_BATCH,
            0,
            "round {round}: a partial batch is visible ({n} rows)"
        );
        let batches = n / PER_BATCH;
        assert!(
            batches == acked + 1 || batches == acked + 2,
            "round {round}: acked up to {acked}, found {batches} batches"
        );
        for b in 0..=acked {
            assert!(
                t.get_resource(&format!("b{b}-{}", PER_BATCH - 1))
                    .unwrap()
                    .is_some(),
                "round {round}: acked batch {b} lost"
            );
        }
        let (indexed, _) = t.vector_index_stats().unwrap();
        assert_eq!(
            indexed, n,
            "round {round}: index count equals rows with embeddings"
        );
        let mut found = 0;
        for b in 0..batches {
            let r = t.get_resource(&format!("b{b}-0")).unwrap().unwrap();
            if t.search_similar(r.embedding.as_ref().unwrap(), 1, None)
                .unwrap()[0]
                .0
                .id
                == r.id
            {
                found += 1;
            }
        }
        assert!(
            found * 100 >= batches * 99,
            "round {round}: only {found} of {batches} vectors find themselves"
        );
    }
}

/// A saved index file covering changes the rows do not have, which is what a power loss
/// leaves when it takes the end of the write-ahead log after the file was saved, is
/// removed before the tenant's next write: otherwise those writes reuse its change
/// numbers, the file looks current, and the rows it claims to cover are never indexed.
#[tokio::test]
async fn an_index_file_ahead_of_the_rows_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let vectors: Vec<Vec<f32>> = (0..110).map(|_| random_unit(&mut rng, 8)).collect();
    let index_dir = dir.path().join("vectors/acme");
    {
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.create_tenant("acme").unwrap();
        let mut batch = Batch::new();
        for (i, v) in vectors[..10].iter().enumerate() {
            batch = batch.insert(resource(&format!("r{i}"), Some(v.clone())));
        }
        t.write(batch).unwrap();
        t.search_similar(&vectors[0], 1, None).unwrap();
        t.save_vectors().unwrap();
    }
    // The file as if saved at change 60, of which the rows kept only 10.
    let saved = std::fs::read_dir(&index_dir)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let ahead = index_dir.join(format!("resources.{:020}.usearch", 60));
    std::fs::rename(&saved, &ahead).unwrap();
    {
        let db = Db::open(dir.path(), Default::default()).unwrap();
        let t = db.tenant("acme").unwrap();
        let mut batch = Batch::new();
        for (i, v) in vectors.iter().enumerate().skip(10) {
            batch = batch.insert(resource(&format!("r{i}"), Some(v.clone())));
        }
        t.write(batch).unwrap();
        assert!(!ahead.exists(), "the file ahead of the rows is removed");
        for (i, v) in vectors.iter().enumerate() {
            let hits = t.search_similar(v, 1, None).unwrap();
            assert_eq!(hits[0].0.id, format!("r{i}"), "vector {i} finds its row");
        }
    }
}
