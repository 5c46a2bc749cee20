//! Front end: the `remdb` command line.
//!
//! `remdb sql` runs SQL against one tenant of a database directory and prints result
//! tables; `remdb tenant` manages tenants; `remdb demo` loads a little sample data into a
//! default directory and shows queries over it. Every failure prints one clear line on
//! standard error and exits non-zero.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod demo;

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::session::{Db, DbOptions, Policy, Tenant};
use crate::storage::StorageOptions;

#[derive(Debug, Parser)]
#[command(
    name = "remdb",
    version,
    about = "Embedded SQL engine for REM memory (Resources, Entities, Moments)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL against one tenant and print the results.
    Sql(SqlArgs),
    /// Interactive SQL shell bound to one tenant (reads piped standard input too).
    Shell(ShellArgs),
    /// Create, list or drop tenants, and manage the users who sign in to them.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Serve the database over Arrow Flight SQL (each credential reaches one tenant).
    Serve(ServeArgs),
    /// Create, list or revoke the bearer tokens of `remdb serve`.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Load sample REM data into a tenant (once) and show a few queries over it.
    Demo {
        /// Database directory.
        #[arg(long, env = "REMDB_PATH", default_value = ".remdb-demo")]
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database directory (created if missing).
    #[arg(long, env = "REMDB_PATH")]
    pub path: PathBuf,
    /// fsync every commit (survives power loss, slower).
    #[arg(long)]
    pub sync: bool,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Tenant whose tables the SQL sees.
    #[arg(long, env = "REMDB_TENANT")]
    pub tenant: String,
    /// Create the tenant if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// SQL to run (several statements separated by `;`).
    #[arg(short = 'c', long = "command", conflicts_with = "file")]
    pub command: Option<String>,
    /// File of `;`-separated SQL statements (`-`: standard input, which is also read
    /// when neither -c nor -f is given and it is not a terminal).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The database, tenant and statements, as for `remdb sql` (without -c or -f, the
    /// shell reads standard input).
    #[command(flatten)]
    pub sql: SqlArgs,
    /// How results are printed.
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::shell::Format,
    /// Rows a table shows at most (`inf` or 0: all).
    #[arg(long, default_value = "40")]
    pub maxrows: String,
    /// Print the footer (rows, time) after each statement, also when not on a terminal.
    #[arg(long)]
    pub timing: bool,
    /// No footer after results on a terminal.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    Create {
        #[command(flatten)]
        db: DbArgs,
        name: String,
    },
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    Drop {
        #[command(flatten)]
        db: DbArgs,
        name: String,
    },
    /// Add a user who signs in to TENANT with a password (read from standard input, or
    /// from REMDB_PASSWORD).
    AddUser {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
        tenant: String,
        user: String,
    },
    /// Replace a user's password (read as for add-user).
    Passwd {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
        user: String,
    },
    /// Remove a user.
    RemoveUser {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
        user: String,
    },
    /// List users and their tenants.
    Users {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token for TENANT and print it (it is stored hashed and shown only once).
    Create {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
        tenant: String,
        /// What the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (ids, tenants, labels), never the tokens themselves.
    List {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long, env = "REMDB_PATH")]
        path: PathBuf,
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Cancel a query or update that runs longer than this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub query_timeout: f64,
    /// Memory one query's sorts, joins and aggregates may hold, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory_limit_mib: usize,
    /// Largest gRPC message accepted or sent, in MiB.
    #[arg(long, default_value_t = 64)]
    pub max_message_mib: usize,
    /// Largest upload (ingest, parameters) in all of its messages, in MiB, counted as
    /// decoded (a compressed message at its decompressed size).
    #[arg(long, default_value_t = 1024)]
    pub max_upload_mib: usize,
    /// Most rows of parameters one upload may bind (executemany, a prepared query).
    #[arg(long, default_value_t = 100_000)]
    pub max_param_rows: usize,
    /// Memory the bound parameters of one tenant's open prepared statements may hold
    /// together, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_bound_params_mib: usize,
    /// After SIGTERM, seconds in-flight requests may take before they are cancelled.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_grace: f64,
    /// Send text, binary and list results in DataFusion's view types (Utf8View, ...)
    /// rather than Utf8, Binary and List, for clients that read them (ADBC, pyarrow).
    #[arg(long)]
    pub keep_view_types: bool,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn open(db: &DbArgs) -> Result<Db> {
    let storage = StorageOptions {
        sync: db.sync,
        ..Default::default()
    };
    Db::open(&db.path, DbOptions { storage })
}

/// The tenant a local command works in, under [`Policy::Operator`]: the user at the
/// terminal owns the files, so `COPY ... TO` a file and `SET` are allowed.
fn open_tenant(db: &Db, tenant: &str, create: bool) -> Result<Tenant> {
    let handle = if create && !db.has_tenant(tenant) {
        db.create_tenant(tenant)
    } else {
        db.tenant(tenant).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "tenant '{tenant}' does not exist (pass --create to create it)"
            )),
            other => other,
        })
    };
    Ok(handle?.with_policy(Policy::Operator))
}

/// Runs the command line; the caller prints the error and exits non-zero.
pub async fn run(cli: Cli) -> Result<()> {
    // Long work shows a bar at a terminal; the server logs it instead.
    if !matches!(cli.command, Command::Serve(_)) {
        crate::progress::show_bars();
    }
    match cli.command {
        Command::Sql(args) => {
            let script = match script_of(&args)? {
                Some(script) => script,
                // Piped in: `echo 'SELECT 1' | remdb sql ...`.
                None if !std::io::IsTerminal::is_terminal(&std::io::stdin()) => read_stdin()?,
                None => {
                    return Err(Error::invalid(
                        "give the SQL with -c \"...\", -f FILE, or -f - (standard input)",
                    ));
                }
            };
            let db = open(&args.db)?;
            let tenant = open_tenant(&db, &args.tenant, args.create)?;
            run_script(&tenant, &script).await
        }
        Command::Shell(args) => {
            let script = script_of(&args.sql)?;
            let db = open(&args.sql.db)?;
            let tenant = open_tenant(&db, &args.sql.tenant, args.sql.create)?;
            let settings = crate::shell::Settings {
                format: args.format,
                max_rows: crate::shell::parse_max_rows(&args.maxrows)?,
                timing: args.timing,
                quiet: args.quiet,
            };
            let mut shell = crate::shell::Shell::new(tenant, settings);
            match script {
                Some(script) => shell.run_script(&script).await,
                None => {
                    shell.run_stdin().await?;
                    match shell.failures() {
                        0 => Ok(()),
                        n => Err(Error::Query(format!(
                            "{n} statement{} failed",
                            if n == 1 { "" } else { "s" }
                        ))),
                    }
                }
            }
        }
        Command::Tenant { action } => match action {
            TenantAction::Create { db, name } => {
                open(&db)?.create_tenant(&name)?;
                println!("created tenant {name}");
                Ok(())
            }
            TenantAction::List { db } => {
                for name in open(&db)?.list_tenants() {
                    println!("{name}");
                }
                Ok(())
            }
            TenantAction::Drop { db, name } => {
                open(&db)?.drop_tenant(&name)?;
                println!("dropped tenant {name}");
                Ok(())
            }
            TenantAction::AddUser { path, tenant, user } => {
                require_tenant(&path, &tenant)?;
                let password = read_password()?;
                Credentials::open(&path).add_user(&user, &tenant, &password)?;
                println!("added user {user} to tenant {tenant}");
                Ok(())
            }
            TenantAction::Passwd { path, user } => {
                let password = read_password()?;
                Credentials::open(&path).set_password(&user, &password)?;
                println!("changed the password of {user}");
                Ok(())
            }
            TenantAction::RemoveUser { path, user } => {
                Credentials::open(&path).remove_user(&user)?;
                println!("removed user {user}");
                Ok(())
            }
            TenantAction::Users { path } => {
                for u in Credentials::open(&path).users()? {
                    println!("{}\t{}\t{}", u.name, u.tenant, u.created);
                }
                Ok(())
            }
        },
        Command::Serve(args) => serve(args).await,
        Command::Token { action } => match action {
            TokenAction::Create {
                path,
                tenant,
                label,
            } => {
                require_tenant(&path, &tenant)?;
                let (entry, token) = Credentials::open(&path).create_token(&tenant, &label)?;
                eprintln!(
                    "created token {} for tenant {tenant}; it is shown once:",
                    entry.id
                );
                println!("{token}");
                Ok(())
            }
            TokenAction::List { path } => {
                for t in Credentials::open(&path).tokens()? {
                    println!("{}\t{}\t{}\t{}", t.id, t.tenant, t.created, t.label);
                }
                Ok(())
            }
            TokenAction::Revoke { path, id } => {
                Credentials::open(&path).revoke_token(&id)?;
                println!("revoked token {id}");
                Ok(())
            }
        },
        Command::Demo { path } => demo::run(&path).await,
    }
}

/// The statements of `-c` or `-f` (`-f -`: standard input), if one was given.
fn script_of(args: &SqlArgs) -> Result<Option<String>> {
    match (&args.command, &args.file) {
        (Some(sql), _) => Ok(Some(sql.clone())),
        (None, Some(file)) if file.as_os_str() == "-" => read_stdin().map(Some),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(Some)
            .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display()))),
        (None, None) => Ok(None),
    }
}

/// All of standard input, as text; at most the SQL text limit (and a byte more, to tell).
fn read_stdin() -> Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(crate::session::MAX_SQL_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::invalid(format!("cannot read standard input: {e}")))?;
    Ok(text)
}

/// Fails unless the database at `path` has the tenant. Reads the directory without
/// opening it, so that it works while a server holds the database.
fn require_tenant(path: &std::path::Path, tenant: &str) -> Result<()> {
    if crate::storage::Storage::tenants_at(path)?
        .iter()
        .any(|t| t == tenant)
    {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "tenant '{tenant}' in {} (create it with `remdb tenant create`)",
            path.display()
        )))
    }
}

/// A password from REMDB_PASSWORD or the first line of standard input.
fn read_password() -> Result<String> {
    if let Ok(password) = std::env::var("REMDB_PASSWORD") {
        return Ok(password);
    }
    use std::io::IsTerminal;
    let cannot = |e: std::io::Error| Error::invalid(format!("cannot read the password: {e}"));
    let password = if std::io::stdin().is_terminal() {
        // Typed: not echoed.
        rpassword::prompt_password("password: ").map_err(cannot)?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(cannot)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        return Err(Error::invalid(
            "no password: pipe it to standard input or set REMDB_PASSWORD",
        ));
    }
    Ok(password)
}

/// The certificate and key of `--tls-cert` / `--tls-key`, read before the server
/// listens, so that a missing file is an error at start.
fn tls_identity(args: &ServeArgs) -> Result<Option<crate::server::TlsIdentity>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| Error::invalid(format!("cannot read {what} {}: {e}", path.display())))
    };
    Ok(Some(crate::server::TlsIdentity {
        cert_pem: read(cert, "--tls-cert")?,
        key_pem: read(key, "--tls-key")?,
    }))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let db = std::sync::Arc::new(open(&args.db)?);
    // At most a year: a larger figure (1e30) does not fit a Duration.
    let seconds = |s: f64, what: &str| match std::time::Duration::try_from_secs_f64(s) {
        Ok(d) if s > 0.0 && s <= 365.0 * 86_400.0 => Ok(d),
        _ => Err(Error::invalid(format!(
            "--{what} must be a positive number of seconds, at most a year (31536000)"
        ))),
    };
    let options = crate::server::ServeOptions {
        query_timeout: seconds(args.query_timeout, "query-timeout")?,
        memory_limit: args.memory_limit_mib.max(1) << 20,
        max_message_bytes: args.max_message_mib.max(1) << 20,
        max_upload_bytes: args.max_upload_mib.max(1) << 20,
        max_param_rows: args.max_param_rows,
        max_bound_param_bytes: args.max_bound_params_mib.max(1) << 20,
        shutdown_grace: seconds(args.shutdown_grace, "shutdown-grace")?,
        keep_view_types: args.keep_view_types,
        tls: tls_identity(&args)?,
        ..Default::default()
    };
    // Watch SIGTERM before announcing the address: a supervisor may send it right away.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    println!(
        "remdb serving Flight SQL{} on {addr} (database {})",
        if options.tls.is_some() {
            " over TLS"
        } else {
            ""
        },
        args.db.path.display()
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    };
    crate::server::serve(db, options, listener, shutdown).await
}

async fn run_script(tenant: &Tenant, script: &str) -> Result<()> {
    let mut statements = 0;
    // Statements run one by one so that the output of each appears before the next fails.
    let settings = crate::shell::Settings {
        format: crate::shell::Format::Table,
        max_rows: None,
        timing: false,
        quiet: true,
    };
    for sql in crate::session::split_statements(script)? {
        let result = tenant.sql(&sql).await?;
        statements += 1;
        crate::shell::write_result(&mut std::io::stdout().lock(), &result, &settings)?;
    }
    if statements == 0 {
        return Err(Error::invalid("no SQL statement given"));
    }
    Ok(())
}
