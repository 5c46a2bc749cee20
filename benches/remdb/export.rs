//! `export DIR`: the generated data of W-ENT, W-VEC and W-HYB as Arrow IPC files, so that
//! other systems (benches/compare) load exactly the rows and queries remdb's workloads use.
//!
//! - `entities.arrow`: `REMDB_BENCH_ROWS` (100000) W-ENT entities: `id`, `type`, `name`,
//!   `properties` (JSON text), `created_at` (timestamp, microseconds, UTC);
//! - `vectors.arrow`: `REMDB_VEC_ROWS` (100000) W-VEC vectors: `id` (`r0000000`), `row`
//!   (the row number), `embedding` (768 x f32, fixed size), with the W-HYB metadata of the
//!   same rows: `metadata` (JSON text, as remdb stores it), `language`, `tags`, `source`;
//! - `queries.arrow`: `REMDB_VEC_QUERIES` (1000) held-out queries: `embedding`.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::ipc::writer::FileWriter;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::common::{DIMS, SEED, env, generate_vectors, went_entity};
use crate::whyb::metadatas;

pub fn run(dir: &Path) {
    std::fs::create_dir_all(dir).expect("export directory");

    let n: usize = env("REMDB_BENCH_ROWS", 100_000);
    let mut rng = StdRng::seed_from_u64(SEED);
    let entities: Vec<_> = (0..n).map(|i| went_entity(&mut rng, i)).collect();
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                entities.iter().map(|e| &e.id),
            )) as ArrayRef,
        ),
        (
            "type",
            Arc::new(StringArray::from_iter_values(
                entities.iter().map(|e| &e.entity_type),
            )),
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                entities.iter().map(|e| &e.name),
            )),
        ),
        (
            "properties",
            Arc::new(StringArray::from_iter_values(
                entities.iter().map(|e| &e.properties),
            )),
        ),
        (
            "created_at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(entities.iter().map(|e| e.created_at))
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .expect("entities batch");
    write(&dir.join("entities.arrow"), &[batch]);
    eprintln!("entities.arrow: {n} W-ENT entities");

    let n: usize = env("REMDB_VEC_ROWS", 100_000);
    let nq: usize = env("REMDB_VEC_QUERIES", 1000);
    let (data, queries) = generate_vectors(n, nq);
    let metas = metadatas(n);
    // Batches of 10,000 rows: readers can stream them.
    let batches: Vec<RecordBatch> = (0..n)
        .step_by(10_000)
        .map(|start| {
            let rows = start..(start + 10_000).min(n);
            let mut tags = ListBuilder::new(StringBuilder::new());
            for m in &metas[rows.clone()] {
                for t in m.tags() {
                    tags.values().append_value(t);
                }
                tags.append(true);
            }
            RecordBatch::try_from_iter([
                (
                    "id",
                    Arc::new(StringArray::from_iter_values(
                        rows.clone().map(|i| format!("r{i:07}")),
                    )) as ArrayRef,
                ),
                (
                    "row",
                    Arc::new(UInt64Array::from_iter_values(
                        rows.clone().map(|i| i as u64),
                    )),
                ),
                ("embedding", vectors(&data[rows.clone()])),
                (
                    "metadata",
                    Arc::new(StringArray::from_iter_values(
                        metas[rows.clone()].iter().map(|m| m.json()),
                    )),
                ),
                (
                    "language",
                    Arc::new(StringArray::from_iter_values(
                        metas[rows.clone()].iter().map(|m| m.language),
                    )),
                ),
                ("tags", Arc::new(tags.finish())),
                (
                    "source",
                    Arc::new(StringArray::from_iter_values(
                        metas[rows].iter().map(|m| format!("s{}", m.source)),
                    )),
                ),
            ])
            .expect("vectors batch")
        })
        .collect();
    write(&dir.join("vectors.arrow"), &batches);
    eprintln!("vectors.arrow: {n} W-VEC vectors of {DIMS} dimensions with W-HYB metadata");

    let batch = RecordBatch::try_from_iter([("embedding", vectors(&queries))]).expect("queries");
    write(&dir.join("queries.arrow"), &[batch]);
    eprintln!("queries.arrow: {nq} queries");
}

fn vectors(rows: &[Vec<f32>]) -> ArrayRef {
    let values = Float32Array::from_iter_values(rows.iter().flatten().copied());
    Arc::new(
        FixedSizeListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Float32, false)),
            DIMS as i32,
            Arc::new(values),
            None,
        )
        .expect("vectors"),
    )
}

fn write(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).expect("create export file");
    let mut writer = FileWriter::try_new(file, &batches[0].schema()).expect("IPC writer");
    for b in batches {
        writer.write(b).expect("write batch");
    }
    writer.finish().expect("finish IPC file");
}
