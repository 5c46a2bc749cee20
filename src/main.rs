//! The `remdb` binary: parses the command line and reports errors (see `remdb::cli`).

use clap::Parser;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    // Long work (a vector index rebuild) reports progress at info level; REMDB_LOG=debug
    // shows more, REMDB_LOG=warn less.
    let filter = tracing_subscriber::EnvFilter::try_from_env("REMDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("remdb=info"));
    // Colors only on a terminal: logs of `remdb serve` usually go to files.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = remdb::cli::Cli::parse();
    match remdb::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
