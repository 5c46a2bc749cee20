//! Vector search through the API and persistence of the index (the crash loop, in
//! crash.rs, kills writers of vectors among the rest).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Db, Error, Param, Resource, VectorOptions};

use super::{fresh, rows};

pub(crate) fn random_unit(rng: &mut StdRng, d: usize) -> Vec<f32> {
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

/// Writes `vectors` as resources `r0`, `r1`, ... in one batch.
fn write_vectors(t: &remdb::Tenant, vectors: &[Vec<f32>]) {
    let mut batch = Batch::new();
    for (i, v) in vectors.iter().enumerate() {
        batch = batch.insert(resource(&format!("r{i}"), Some(v.clone())));
    }
    t.write(batch).unwrap();
}

#[tokio::test]
async fn api_search_and_errors() {
    let (_dir, _db, t) = fresh("acme");
    let mut rng = StdRng::seed_from_u64(7);
    let vectors: Vec<Vec<f32>> = (0..500).map(|_| random_unit(&mut rng, 24)).collect();
    write_vectors(&t, &vectors);
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
    // top_k is bounded like vector_similar's k: k times the rescoring depth stays finite.
    for k in [0, remdb::MAX_SEARCH_K + 1, usize::MAX / 2] {
        assert!(
            matches!(
                t.search_similar(&vectors[0], k, None),
                Err(Error::InvalidArgument(ref m)) if m.contains("top_k")
            ),
            "top_k {k}"
        );
    }

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

/// f16 (the default) and i8 indexes only rank: a search's scores are the exact cosine
/// similarities of the stored f32 vectors, through the API and SQL, `min_score` cuts on
/// them, and with its rescoring depth i8 finds the exact top 10. Vectors of any length
/// (the index normalizes them).
#[tokio::test]
async fn quantized_indexes_return_exact_scores() {
    use remdb::{Metric, Precision};
    let d = 32;
    let mut rng = StdRng::seed_from_u64(23);
    let vectors: Vec<Vec<f32>> = (0..2000)
        .map(|_| {
            let length = rng.random_range(0.5f32..20.0);
            random_unit(&mut rng, d)
                .iter()
                .map(|x| x * length)
                .collect()
        })
        .collect();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut rng, d)).collect();
    let exact = |q: &[f32]| -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, 1.0 - Metric::Cosine.distance(q, v)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(10);
        all
    };
    for (precision, rescore, min_recall) in [
        (Precision::F16, None, 0.95),
        (Precision::I8, None, 0.9),
        (Precision::I8, Some(8), 0.95),
    ] {
        let (_dir, _db, t) = fresh("acme");
        t.configure_vectors(VectorOptions {
            dimensions: Some(d),
            precision,
            rescore,
            ..Default::default()
        })
        .unwrap();
        write_vectors(&t, &vectors);
        let (mut found, mut wanted) = (0, 0);
        for q in &queries {
            let truth = exact(q);
            let hits = t.search_similar(q, 10, None).unwrap();
            assert_eq!(hits.len(), 10);
            for (r, score) in &hits {
                let i: usize = r.id[1..].parse().unwrap();
                let ours = 1.0 - Metric::Cosine.distance(q, &vectors[i]);
                assert!(
                    (score - ours).abs() < 1e-6,
                    "{precision:?}: {} scored {score}, exactly {ours}",
                    r.id
                );
            }
            assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            let ids: Vec<String> = hits.iter().map(|(r, _)| r.id.clone()).collect();
            found += truth
                .iter()
                .filter(|(i, _)| ids.contains(&format!("r{i}")))
                .count();
            wanted += truth.len();

            // SQL gives the same rows and scores.
            let batches = t
                .sql_with_params(
                    "SELECT id, score FROM vector_similar('resources', $1, 10)",
                    &[Param::Vector(q.clone())],
                )
                .await
                .unwrap();
            let sql: Vec<Vec<String>> = super::slt::render(&batches);
            let api: Vec<String> = hits.iter().map(|(r, _)| r.id.clone()).collect();
            assert_eq!(
                sql.iter().map(|row| row[0].clone()).collect::<Vec<_>>(),
                api,
                "{precision:?}"
            );

            // min_score cuts on the exact scores: the rows at or above the 4th best.
            let cut = truth[3].1;
            let above = t.search_similar(q, 10, Some(cut)).unwrap();
            assert!(above.iter().all(|(_, s)| *s >= cut), "{precision:?}");
            let batches = t
                .sql_with_params(
                    &format!("SELECT id FROM vector_similar('resources', $1, 10, {cut:.9})"),
                    &[Param::Vector(q.clone())],
                )
                .await
                .unwrap();
            assert!(
                super::slt::render(&batches).len() <= 4,
                "{precision:?}: min_score {cut}"
            );
        }
        let recall = found as f64 / wanted as f64;
        assert!(
            recall >= min_recall,
            "{precision:?} rescore {rescore:?}: recall@10 {recall}"
        );
        // The rescoring depth changes under stored vectors; the precision does not.
        let current = t.vector_options().unwrap().unwrap();
        t.configure_vectors(VectorOptions {
            rescore: Some(2),
            ..current
        })
        .unwrap();
        assert_eq!(t.search_similar(&queries[0], 10, None).unwrap().len(), 10);
        assert!(
            t.configure_vectors(VectorOptions {
                precision: Precision::F32,
                ..current
            })
            .is_err()
        );
    }
}

/// Writers are not held off while the vector index is rebuilt from the rows (or loaded
/// and caught up): writes started after the load began return before it ends, and none
/// of them, inserts or deletes, is missing from the index it publishes.
#[tokio::test]
async fn writes_go_on_while_the_index_rebuilds_and_none_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Default::default()).unwrap();
    let t = db.create_tenant("acme").unwrap();
    let d = 32;
    let mut rng = StdRng::seed_from_u64(31);
    let base: Vec<Vec<f32>> = (0..20_000).map(|_| random_unit(&mut rng, d)).collect();
    for (n, chunk) in base.chunks(2000).enumerate() {
        let mut batch = Batch::new();
        for (i, v) in chunk.iter().enumerate() {
            batch = batch.insert(resource(&format!("b{}", n * 2000 + i), Some(v.clone())));
        }
        t.write(batch).unwrap();
    }
    // Never loaded yet: the next use rebuilds the index from the rows.
    assert!(!t.vector_index_loaded());

    let extra: Vec<Vec<f32>> = (0..400).map(|_| random_unit(&mut rng, d)).collect();
    let started = AtomicBool::new(false);
    let (during, written) = std::thread::scope(|s| {
        let loader = s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            let t0 = std::time::Instant::now();
            let (n, _) = t.vector_index_stats().unwrap();
            (n, t0.elapsed())
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Long enough for the loader to be inside the load.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (mut during, mut written) = (0usize, 0usize);
        for (i, v) in extra.iter().enumerate() {
            t.create_resource(resource(&format!("x{i}"), Some(v.clone())))
                .unwrap();
            // Every fourth write also deletes a row the rebuild may have read.
            if i % 4 == 0 {
                assert!(t.delete_resource(&format!("b{i}")).unwrap());
            }
            written += 1;
            if !t.vector_index_loaded() {
                during += 1;
            }
            if loader.is_finished() && i >= 100 {
                break;
            }
        }
        let (indexed, took) = loader.join().unwrap();
        assert!(indexed >= 20_000 - 100, "{indexed}");
        eprintln!("rebuild of 20,000 vectors took {took:?}; {during} writes returned during it");
        (during, written)
    });
    assert!(
        during > 0,
        "no write returned while the index was rebuilt ({written} written)"
    );
    // The published index holds exactly the stored vectors.
    let expected = 20_000 + written - written.div_ceil(4);
    assert_eq!(t.vector_index_stats().unwrap().0, expected);
    // A search restricted to one id scores it exactly if, and only if, the index has it.
    let indexed = async |id: String, v: &[f32]| {
        let sql = format!("SELECT id FROM vector_similar('resources', $1, 1) WHERE id = '{id}'");
        let batches = t
            .sql_with_params(&sql, &[Param::Vector(v.to_vec())])
            .await
            .unwrap();
        !super::slt::render(&batches).is_empty()
    };
    for (i, v) in extra.iter().take(written).enumerate() {
        assert!(
            indexed(format!("x{i}"), v).await,
            "x{i} was written during the rebuild"
        );
    }
    for (i, v) in base.iter().enumerate().take(written + 8) {
        assert_eq!(
            indexed(format!("b{i}"), v).await,
            i % 4 != 0 || i >= written,
            "b{i}, deleted during the rebuild if i % 4 == 0"
        );
    }
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
        write_vectors(&t, &vectors);
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
