//! The `remdb` binary: parses the command line and reports errors (see `remdb::cli`).

use clap::Parser;

/// Stack of each runtime worker: planning recurses once per level of a statement's
/// expressions (bounded by `MAX_EXPR_DEPTH` in src/session/limits.rs), which DataFusion's
/// derived `Clone` and `Drop` do without stack protection. tokio's default of 2 MiB
/// holds a statement at the limit (tests/integration/limits.rs plans one on 2 MiB);
/// 8 MiB, the size of a main thread, leaves room for what recurses around it.
const WORKER_STACK_BYTES: usize = 8 << 20;

fn main() -> std::process::ExitCode {
    // One worker per core (tokio's default).
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(WORKER_STACK_BYTES)
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(run());
            // A query stopped at shutdown ends at its next yield; a step of ours that is
            // still computing is not waited for long (the write-ahead log has every commit).
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    // Long work (a vector index rebuild) reports progress at info level; REMDB_LOG=debug
    // shows more, REMDB_LOG=warn less.
    let filter = tracing_subscriber::EnvFilter::try_from_env("REMDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("remdb=info"));
    // Colors only on a terminal: logs of `remdb serve` usually go to files.
    // REMDB_LOG_FORMAT=json: one JSON object per line, for log collectors.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("REMDB_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let cli = remdb::cli::Cli::parse();
    match remdb::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
