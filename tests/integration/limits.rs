//! Bounds on SQL text where it enters: its size and the depth of its expressions. A
//! chain of operators is parsed in a loop but planned by recursion; without the bound,
//! the statements below overflow the stack and abort the process.

use remdb::Error;
use remdb::session::{MAX_EXPR_DEPTH, MAX_SQL_BYTES};

use super::fresh;

/// `1+1+...+1` with `terms` ones: an expression `terms` deep at its first `1`.
fn chain(terms: usize) -> String {
    format!("SELECT {}", vec!["1"; terms].join("+"))
}

/// Runs `f` on a thread with tokio's default worker stack (2 MiB), where the server's
/// queries run.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("the statement ran without a panic")
}

fn assert_refused(result: remdb::Result<remdb::QueryResult>, says: &str) {
    match result {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected InvalidArgument ({says}), got {other:?}"),
    }
}

#[test]
fn a_chain_at_the_depth_limit_runs_and_one_past_it_is_refused() {
    let (_dir, _db, t) = fresh("acme");
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    };
    let (t1, t2) = (t.clone(), t.clone());
    let sum = on_worker_stack(move || runtime().block_on(t1.sql(&chain(MAX_EXPR_DEPTH))));
    let sum = sum.expect("a chain at the limit runs");
    let value = datafusion::arrow::util::display::array_value_to_string(sum[0].column(0), 0);
    assert_eq!(value.unwrap(), MAX_EXPR_DEPTH.to_string());

    // An OR chain in a WHERE clause over a table, planned through the pushdown rules.
    let ors = (0..MAX_EXPR_DEPTH - 2)
        .map(|i| format!("name = 'n{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let rows = on_worker_stack(move || {
        runtime().block_on(t2.sql(&format!("SELECT id FROM entities WHERE {ors}")))
    });
    assert!(rows.expect("an OR chain at the limit runs").is_empty());

    let t3 = t.clone();
    let refused = on_worker_stack(move || runtime().block_on(t3.sql(&chain(MAX_EXPR_DEPTH + 1))));
    assert_refused(refused, "more than 1000 deep");
}

#[test]
fn long_texts_are_refused_without_overflowing_the_stack() {
    let (_dir, _db, t) = fresh("acme");
    let block = |sql: String| {
        let t = t.clone();
        on_worker_stack(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(t.sql(&sql))
        })
    };
    // 500,000 levels in 1 MB: parsed, refused and dropped without reaching past the
    // thread's stack.
    let deep = chain(MAX_SQL_BYTES / 2 - 8);
    assert!(deep.len() <= MAX_SQL_BYTES);
    assert_refused(block(deep), "more than 1000 deep");
    // A syntax error after a deep chain: the parser drops what it built.
    assert_refused_any(block(format!("{} FROM (", chain(100_000))));
    // Over the size limit: refused before it is parsed.
    assert_refused(block(chain(MAX_SQL_BYTES / 2 + 8)), "more than the limit");
    // Wide is not deep: a long IN list runs.
    let list = (0..20_000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows = block(format!("SELECT id FROM entities WHERE name IN ({list})"));
    assert!(rows.expect("an IN list of 20,000 values runs").is_empty());
}

fn assert_refused_any(result: remdb::Result<remdb::QueryResult>) {
    assert!(result.is_err(), "a syntax error is reported");
}

/// Found by the SQL fuzzer: a subquery used as a value that selects no column panicked
/// in DataFusion's planner; type errors DataFusion calls internal bugs (BETWEEN over two
/// types, a function given arguments no signature takes) are the statement's errors.
#[tokio::test]
async fn statements_the_planner_mishandles_get_clear_errors() {
    let (_dir, _db, t) = fresh("acme");
    for sql in [
        "SELECT id, (SELECT FROM entities) FROM entities",
        "SELECT id FROM entities WHERE id IN (SELECT FROM entities)",
    ] {
        assert_refused(t.sql(sql).await, "selects no column");
    }
    for (sql, says) in [
        (
            "SELECT id FROM entities WHERE created_at BETWEEN aliases AND 1",
            "Failed to coerce types",
        ),
        ("SELECT round(1, 2, 3)", "'round(Int64, Int64, Int64)'"),
        ("SELECT substr('a', 1, 2, 3)", "substr"),
    ] {
        let result = t.sql(sql).await;
        if let Err(e) = &result {
            assert!(!e.to_string().contains("likely caused by a bug"), "{e}");
        }
        assert_refused(result, says);
    }
}

/// DataFusion 55 asserts, instead of returning an error, when `avg` is given an
/// `ORDER BY` in a grouped query (apache/datafusion#25401, unfixed in 55.2): the statement fails with
/// [`Error::Internal`] naming the panic, through every entry point, and the tenant goes
/// on. Without the catch, the panic unwinds into the embedding application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_engine_is_the_statement_error() {
    let (_dir, _db, t) = fresh("acme");
    t.sql("INSERT INTO entities (id, type, name) VALUES ('a', 'person', 'Ada'), ('b', 'person', 'Alan')")
        .await
        .unwrap();
    let panicking = "SELECT type, avg(length(name) ORDER BY name) FROM entities GROUP BY type";
    let is_panic = |r: remdb::Result<_>| match r {
        Err(Error::Internal(m)) => assert!(m.contains("single argument"), "{m}"),
        Err(other) => panic!("expected Internal, got {other}"),
        Ok(_) => panic!("expected Internal, got rows"),
    };
    for _ in 0..2 {
        is_panic(t.sql(panicking).await.map(|_| ()));
        is_panic(
            t.sql_script(&format!("SELECT 1; {panicking}"))
                .await
                .map(|_| ()),
        );
        let prepared = t.prepare(panicking).await.unwrap();
        is_panic(prepared.execute(&[]).await.map(|_| ()));
        assert_eq!(
            super::rows(&t, "SELECT count(*) FROM entities").await,
            ["2"]
        );
    }
}
