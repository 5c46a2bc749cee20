use super::*;

fn unit(i: usize, d: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..d)
        .map(|j| ((i * 31 + j * 7) % 13) as f32 - 6.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

#[test]
fn add_search_replace_remove_save_load() {
    let dir = tempfile::tempdir().unwrap();
    let opts = VectorOptions {
        dimensions: Some(8),
        precision: Precision::F32,
        ..Default::default()
    };
    let index = VectorIndex::new(opts, 8).unwrap();
    for i in 0..2000 {
        index.upsert(i as u64, &unit(i, 8)).unwrap();
    }
    assert_eq!(index.len(), 2000);
    let hits = index.search(&unit(5, 8), 3, None, None).unwrap();
    assert!(hits[0].1 < 1e-4, "a stored vector finds itself: {hits:?}");
    // Replacing a vector keeps one entry per key.
    index.upsert(5, &unit(6, 8)).unwrap();
    assert_eq!(index.len(), 2000);
    index.remove(5).unwrap();
    assert_eq!(index.len(), 1999);
    let even = |k: u64| k.is_multiple_of(2);
    let hits = index
        .search(&unit(7, 8), 5, Some(128), Some(&even))
        .unwrap();
    assert!(hits.iter().all(|(k, _)| k.is_multiple_of(2)));

    index.save(dir.path(), "resources", 10).unwrap();
    // What a save that crashed before its rename leaves.
    let stale = dir
        .path()
        .join("resources.00000000000000000011.usearch.tmp");
    std::fs::write(&stale, b"half a file").unwrap();
    index.save(dir.path(), "resources", 12).unwrap();
    assert_eq!(
        saved_files(dir.path(), "resources").unwrap().len(),
        1,
        "older files are removed"
    );
    assert!(!stale.exists(), "an unfinished save's file is removed");
    std::fs::write(
        dir.path().join("resources.00000000000000000099.usearch"),
        b"garbage",
    )
    .unwrap();
    let (loaded, covered) = VectorIndex::load_latest(dir.path(), "resources", opts, 8)
        .unwrap()
        .unwrap();
    assert_eq!(
        (covered, loaded.len()),
        (12, 1999),
        "a corrupt newer file is skipped"
    );
}

/// Exact scoring gives the distance `Metric::distance` gives and usearch's, to float
/// rounding (cosine vectors are kept normalized), for every metric, and leaves out keys
/// without a vector.
#[test]
fn exact_distances_match_the_metric() {
    let d = 20;
    let raw = |i: usize| -> Vec<f32> {
        (0..d)
            .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
            .collect()
    };
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        let opts = VectorOptions {
            dimensions: Some(d),
            metric,
            precision: Precision::F32,
            ..Default::default()
        };
        let index = VectorIndex::new(opts, d).unwrap();
        for i in 0..50 {
            index.upsert(i as u64, &raw(i)).unwrap();
        }
        let query = raw(77);
        let scored = index.exact_distances(&query, &[3, 999, 41]).unwrap();
        assert_eq!(scored.iter().map(|s| s.0).collect::<Vec<_>>(), [3, 41]);
        // Every vector, from usearch's own exact search.
        let all = index.search(&query, 50, Some(50), None).unwrap();
        for (key, dist) in scored {
            // The index keeps cosine vectors normalized: equal to float rounding.
            let ours = metric.distance(&query, &raw(key as usize));
            assert!(
                (dist - ours).abs() <= 1e-6 * ours.abs().max(1.0),
                "{metric:?}: {dist} vs {ours}"
            );
            let theirs = all.iter().find(|(k, _)| *k == key).unwrap().1;
            let scale = dist.abs().max(1.0);
            assert!(
                (dist - theirs).abs() <= 1e-4 * scale,
                "{metric:?}: {dist} vs {theirs}"
            );
        }
    }
}

/// Split over threads, exact scoring returns what one thread returns, in key order.
#[test]
fn exact_distances_on_threads_match_one_thread() {
    let d = 16;
    let opts = VectorOptions {
        dimensions: Some(d),
        ..Default::default()
    };
    let index = VectorIndex::new(opts, d).unwrap();
    let raw = |i: u64| -> Vec<f32> {
        (0..d as u64)
            .map(|j| ((i * 31 + j * 7) % 13) as f32 - 6.0)
            .collect()
    };
    let vectors: Vec<Vec<f32>> = (0..3000).map(raw).collect();
    let items: Vec<(u64, &[f32])> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.as_slice()))
        .collect();
    index.upsert_many(&items).unwrap();
    // A third of the keys have no vector.
    let keys: Vec<u64> = (0..4500).rev().collect();
    let query = raw(4242);
    let split = index.exact_distances(&query, &keys).unwrap();
    let one = index.score(&index.index.read(), &query, &keys).unwrap();
    assert_eq!(split.len(), 3000);
    assert_eq!(split, one);
    // Copied into a block, the same keys score the same, for every metric.
    let block = index.copy_vectors(&keys).unwrap();
    assert_eq!(block.len(), 3000);
    assert_eq!(block.distances(&query).unwrap(), one);
    for metric in [Metric::InnerProduct, Metric::L2] {
        let opts = VectorOptions {
            dimensions: Some(d),
            metric,
            ..Default::default()
        };
        let other = VectorIndex::new(opts, d).unwrap();
        other.upsert_many(&items[..50]).unwrap();
        let keys: Vec<u64> = (0..60).collect();
        assert_eq!(
            other
                .copy_vectors(&keys)
                .unwrap()
                .distances(&query)
                .unwrap(),
            other.exact_distances(&query, &keys).unwrap(),
            "{metric:?}"
        );
    }
}

#[test]
fn checks_refuse_bad_vectors() {
    let opts = VectorOptions {
        dimensions: Some(3),
        ..Default::default()
    };
    assert!(opts.check("resources.embedding", &[1.0, 2.0, 3.0]).is_ok());
    for bad in [
        vec![1.0, 2.0],
        vec![1.0, f32::NAN, 0.0],
        vec![f32::INFINITY, 0.0, 0.0],
        vec![0.0, 0.0, 0.0],
    ] {
        assert!(
            matches!(
                opts.check("resources.embedding", &bad),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    assert!((Metric::Cosine.distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-6);
    assert!((Metric::L2.distance(&[1.0, 0.0], &[0.0, 1.0]) - 2.0).abs() < 1e-6);
}

/// More searches at once than the machine has cores, while vectors are added, on a new
/// index and on one loaded from a file: none fails. usearch reserves a context per core,
/// and a search that finds none free fails ("Reserve capacity ahead of searches!"); past
/// [`concurrent_calls`] a search waits for one.
#[test]
fn searches_beyond_the_core_count_run_at_once_with_adds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = VectorOptions {
        dimensions: Some(16),
        ..Default::default()
    };
    let built = VectorIndex::new(opts, 16).unwrap();
    for i in 0..2000 {
        built.upsert(i as u64, &unit(i, 16)).unwrap();
    }
    built.save(dir.path(), "resources", 1).unwrap();
    let (loaded, _) = VectorIndex::load_latest(dir.path(), "resources", opts, 16)
        .unwrap()
        .unwrap();
    for index in [&built, &loaded] {
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 2000..2400 {
                    index.upsert(i as u64, &unit(i, 16)).unwrap();
                }
            });
            for t in 0..concurrent_calls() + 32 {
                s.spawn(move || {
                    for i in 0..20 {
                        let ef = (i % 2 == 0).then_some(64 + t % 3);
                        index.search(&unit(t * 20 + i, 16), 5, ef, None).unwrap();
                    }
                });
            }
        });
    }
}

/// Cosine is served as inner product on vectors normalized as they enter the index: the
/// distances are cosine distances whatever the vectors' lengths. A file saved with
/// usearch's cosine metric (vectors as written) is served as it was built.
#[test]
fn cosine_is_inner_product_on_normalized_vectors_and_old_files_still_load() {
    let d = 8;
    let opts = VectorOptions {
        dimensions: Some(d),
        precision: Precision::F32,
        ..Default::default()
    };
    let long = |i: usize| -> Vec<f32> { unit(i, d).iter().map(|x| x * (1.0 + i as f32)).collect() };
    let index = VectorIndex::new(opts, d).unwrap();
    assert_eq!(index.index.read().metric_kind(), MetricKind::IP);
    for i in 0..300 {
        index.upsert(i as u64, &long(i)).unwrap();
    }
    let query: Vec<f32> = unit(17, d).iter().map(|x| x * 40.0).collect();
    for (key, dist) in index.search(&query, 10, Some(300), None).unwrap() {
        let cosine = Metric::Cosine.distance(&query, &long(key as usize));
        assert!((dist - cosine).abs() < 1e-5, "{key}: {dist} vs {cosine}");
    }

    let dir = tempfile::tempdir().unwrap();
    let old = Index::new(&IndexOptions {
        metric: MetricKind::Cos,
        ..VectorIndex::native_options(&opts, d)
    })
    .unwrap();
    old.reserve(300).unwrap();
    for i in 0..300 {
        old.add(i as u64, &long(i)).unwrap();
    }
    let path = dir.path().join("resources.00000000000000000005.usearch");
    old.save(path.to_str().unwrap()).unwrap();
    let (loaded, covered) = VectorIndex::load_latest(dir.path(), "resources", opts, d)
        .unwrap()
        .unwrap();
    assert_eq!(covered, 5);
    assert!(
        !loaded.normalized,
        "a cosine file keeps its vectors as written"
    );
    loaded.upsert(1000, &long(17)).unwrap();
    let hits = loaded.search(&query, 10, Some(300), None).unwrap();
    assert!(hits.iter().any(|(k, _)| *k == 1000));
    for (key, dist) in hits {
        let cosine =
            Metric::Cosine.distance(&query, &long(if key == 1000 { 17 } else { key as usize }));
        assert!((dist - cosine).abs() < 1e-5, "{key}: {dist} vs {cosine}");
    }
}

#[test]
fn rescore_depth_and_precision_options() {
    let opts = |precision, rescore, metric| VectorOptions {
        precision,
        rescore,
        metric,
        ..Default::default()
    };
    assert_eq!(VectorOptions::default().precision, Precision::F16);
    assert_eq!(
        opts(Precision::F32, Some(3), Metric::Cosine).rescore_depth(),
        None
    );
    assert_eq!(
        opts(Precision::F16, None, Metric::Cosine).rescore_depth(),
        Some(1)
    );
    assert_eq!(
        opts(Precision::I8, None, Metric::Cosine).rescore_depth(),
        Some(4)
    );
    assert_eq!(
        opts(Precision::I8, Some(8), Metric::Cosine).rescore_depth(),
        Some(8)
    );
    for bad in [
        opts(Precision::I8, None, Metric::L2),
        opts(Precision::I8, None, Metric::InnerProduct),
        opts(Precision::F16, Some(0), Metric::Cosine),
        opts(Precision::F16, Some(MAX_RESCORE + 1), Metric::Cosine),
    ] {
        assert!(
            matches!(bad.validate(), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    assert_eq!(Precision::parse("I8").unwrap(), Precision::I8);
    assert!(Precision::parse("b1").is_err());
    // Options stored before `rescore` existed still read.
    let stored = r#"{"dimensions":4,"metric":"cosine","connectivity":16,"ef_construction":128,"ef_search":64,"precision":"f32"}"#;
    let read: VectorOptions = serde_json::from_str(stored).unwrap();
    assert_eq!((read.precision, read.rescore), (Precision::F32, None));
}
