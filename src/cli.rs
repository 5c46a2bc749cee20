//! Front end: the `remdb` command line.
//!
//! `remdb sql` runs SQL against one tenant of a database directory and prints result
//! tables; `remdb tenant` manages tenants; `remdb demo` loads a little sample data into a
//! default directory and shows queries over it. Every failure prints one clear line on
//! standard error and exits non-zero.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::error::{Error, Result};
use crate::session::{Batch, Db, DbOptions, Tenant};
use crate::storage::{Edge, Entity, Moment, Resource, StorageOptions};

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
    /// Create, list or drop tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
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
    /// File of `;`-separated SQL statements.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
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
}

fn open(db: &DbArgs) -> Result<Db> {
    let storage = StorageOptions {
        sync: db.sync,
        ..Default::default()
    };
    Db::open(&db.path, DbOptions { storage })
}

fn open_tenant(db: &Db, tenant: &str, create: bool) -> Result<Tenant> {
    if create && !db.has_tenant(tenant) {
        return db.create_tenant(tenant);
    }
    db.tenant(tenant).map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "tenant '{tenant}' does not exist (pass --create to create it)"
        )),
        other => other,
    })
}

/// Runs the command line; the caller prints the error and exits non-zero.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sql(args) => {
            let script = match (&args.command, &args.file) {
                (Some(sql), None) => sql.clone(),
                (None, Some(file)) => std::fs::read_to_string(file)
                    .map_err(|e| Error::invalid(format!("cannot read {}: {e}", file.display())))?,
                _ => return Err(Error::invalid("give the SQL with -c \"...\" or -f FILE")),
            };
            let db = open(&args.db)?;
            let tenant = open_tenant(&db, &args.tenant, args.create)?;
            run_script(&tenant, &script).await
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
        },
        Command::Demo { path } => {
            let db = Db::open(&path, DbOptions::default())?;
            let tenant = open_tenant(&db, "demo", true)?;
            if tenant.count(crate::Table::Entities)? == 0 {
                load_sample(&tenant)?;
                println!(
                    "loaded sample data into {} (tenant 'demo')\n",
                    path.display()
                );
            }
            for sql in DEMO_QUERIES {
                println!("> {sql}");
                run_script(&tenant, sql).await?;
            }
            println!(
                "try: remdb sql --path {} --tenant demo -c \"SELECT * FROM entities\"",
                path.display()
            );
            Ok(())
        }
    }
}

async fn run_script(tenant: &Tenant, script: &str) -> Result<()> {
    let mut statements = 0;
    // Statements run one by one so that the output of each appears before the next fails.
    for sql in crate::session::split_statements(script)? {
        let batches = tenant.sql(&sql).await?;
        statements += 1;
        if !batches.is_empty() {
            let table = pretty_format_batches(&batches).map_err(|e| Error::Query(e.to_string()))?;
            println!("{table}");
        }
    }
    if statements == 0 {
        return Err(Error::invalid("no SQL statement given"));
    }
    Ok(())
}

const DEMO_QUERIES: [&str; 4] = [
    "SELECT name, type, properties->>'role' AS role FROM entities WHERE type = 'person' ORDER BY name",
    "SELECT e.name AS person, x.edge_type, t.name AS target FROM edges x JOIN entities e ON e.id = x.src JOIN entities t ON t.id = x.dst WHERE x.src = 'ada' ORDER BY target",
    "SELECT type, count(*) AS moments FROM moments GROUP BY type ORDER BY type",
    "SELECT uri, chunk_index, content FROM resources WHERE uri = 'doc://remdb/design' ORDER BY chunk_index",
];

/// A small REM graph: people, a project, documents and the moments that tie them.
pub fn load_sample(tenant: &Tenant) -> Result<()> {
    let person = |id: &str, name: &str, role: &str, aliases: &[&str]| Entity {
        id: id.into(),
        entity_type: "person".into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        properties: format!(r#"{{"role":"{role}","team":"platform"}}"#),
        ..Default::default()
    };
    let edge = |src: &str, ty: &str, dst: &str| Edge {
        src: src.into(),
        dst: dst.into(),
        edge_type: ty.into(),
        ..Default::default()
    };
    let chunk = |i: i64, text: &str| Resource {
        id: format!("design-{i}"),
        uri: "doc://remdb/design".into(),
        chunk_index: i,
        content: text.into(),
        metadata: r#"{"language":"en","tags":["design"]}"#.into(),
        ..Default::default()
    };
    let day = 86_400_000_000i64;
    let t0 = 1_767_225_600_000_000i64; // 2026-01-01T00:00:00Z
    let moment = |id: &str, ty: &str, offset_days: i64, refs: &[&str], ents: &[&str]| Moment {
        id: id.into(),
        timestamp: t0 + offset_days * day,
        end_timestamp: Some(t0 + offset_days * day + 3_600_000_000),
        moment_type: ty.into(),
        classifications: vec![ty.into()],
        resource_refs: refs.iter().map(|r| r.to_string()).collect(),
        entity_refs: ents.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    let batch = Batch::new()
        .insert(person(
            "ada",
            "Ada Lovelace",
            "engineer",
            &["Countess of Lovelace"],
        ))
        .insert(person(
            "grace",
            "Grace Hopper",
            "manager",
            &["Amazing Grace"],
        ))
        .insert(person("alan", "Alan Turing", "researcher", &[]))
        .insert(Entity {
            id: "remdb".into(),
            entity_type: "project".into(),
            name: "remdb".into(),
            properties: r#"{"status":"active"}"#.into(),
            ..Default::default()
        })
        .insert(edge("ada", "works_on", "remdb"))
        .insert(edge("grace", "works_on", "remdb"))
        .insert(edge("ada", "knows", "alan"))
        .insert(edge("grace", "manages", "ada"))
        .insert(chunk(
            0,
            "remdb stores REM memory: resources, entities and moments.",
        ))
        .insert(chunk(1, "Each tenant owns one RocksDB column family."))
        .insert(chunk(
            2,
            "SQL runs on Apache DataFusion with index pushdown.",
        ))
        .insert(moment("m1", "meeting", 0, &["design-0"], &["ada", "grace"]))
        .insert(moment(
            "m2",
            "conversation",
            1,
            &["design-1"],
            &["ada", "alan"],
        ))
        .insert(moment("m3", "meeting", 7, &["design-2"], &["grace"]));
    tenant.write(batch)?;
    Ok(())
}
