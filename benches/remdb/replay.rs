//! `replay DIR TENANT FILE`: times statements through the library, prepared, on a
//! database another program built: the reference of the Python package's bench
//! (benches/python/bench.py), which writes FILE with the SQL its calls ran and their
//! parameters, so that both sides run the same statements on the same rows in one run.
//!
//! FILE is JSON: `[{"name": ..., "sql": ..., "samples": [[param, ...], ...]}]`, a param
//! being `null`, a bool, a number (an integer is `Int`), a string, `{"ts": micros}` or
//! `{"vector": [..]}`. Each statement is prepared once, then run on every sample after
//! 20 untimed runs, on a multi-threaded runtime as the package's calls are. Prints
//! `{"name": {"p50": ms, "p95": ms, "rows": n}, ...}` on standard output.

use std::path::Path;
use std::time::Instant;

use futures::TryStreamExt;
use remdb::{Db, Param};
use serde_json::Value;

use crate::common::percentiles;

fn param(v: &Value) -> Param {
    match v {
        Value::Null => Param::Null,
        Value::Bool(b) => Param::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Param::Int(i),
            None => Param::Float(n.as_f64().expect("a number")),
        },
        Value::String(s) => Param::Text(s.clone()),
        Value::Object(o) => match (o.get("ts"), o.get("vector")) {
            (Some(ts), _) => Param::Timestamp(ts.as_i64().expect("ts: microseconds")),
            (_, Some(Value::Array(v))) => Param::Vector(
                v.iter()
                    .map(|x| x.as_f64().expect("a vector of numbers") as f32)
                    .collect(),
            ),
            _ => panic!("unknown parameter {v}"),
        },
        Value::Array(_) => panic!("a list parameter is written {{\"vector\": [...]}}"),
    }
}

pub fn run(dir: &Path, tenant: &str, file: &Path) {
    let text = std::fs::read_to_string(file).expect("the statements file");
    let statements: Vec<Value> = serde_json::from_str(&text).expect("statements as JSON");
    let db = Db::open(dir, Default::default()).expect("open the database");
    let tenant = db.tenant(tenant).expect("the tenant");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = serde_json::Map::new();
    for s in &statements {
        let name = s["name"].as_str().expect("name");
        let sql = s["sql"].as_str().expect("sql");
        let samples: Vec<Vec<Param>> = s["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|p| p.as_array().expect("params").iter().map(param).collect())
            .collect();
        let prepared = rt.block_on(tenant.prepare(sql)).expect("prepare");
        let run = |params: &[Param]| -> usize {
            rt.block_on(async {
                let stream = prepared.execute_stream(params).await.expect("execute");
                let batches: Vec<_> = stream.try_collect().await.expect("run");
                batches.iter().map(|b| b.num_rows()).sum()
            })
        };
        for params in samples.iter().cycle().take(20) {
            run(params);
        }
        let mut times = Vec::with_capacity(samples.len());
        let mut rows = 0;
        for params in &samples {
            let t = Instant::now();
            rows = run(params);
            times.push(t.elapsed());
        }
        let p = percentiles(times);
        eprintln!("  rust {name}: p50 {:.3} ms, {rows} rows", p.p50);
        out.insert(
            name.to_string(),
            serde_json::json!({"p50": p.p50, "p95": p.p95, "rows": rows}),
        );
    }
    println!("{}", Value::Object(out));
}
