//! The `remdb` binary: parses the command line and reports errors (see `remdb::cli`).

use clap::Parser;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("REMDB_LOG"))
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
