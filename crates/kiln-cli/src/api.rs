//! `kiln serve`, `kiln keys` and `kiln audit`: the HTTP API, its keys, and who changed what.

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use kiln::Scope;
use kiln_server::{AppState, ServerConfig};

use crate::ops::DbArgs;
use crate::{table, CliResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, default_value = kiln_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Largest request body in bytes (the batch route allows --max-batch-body).
    #[arg(long, default_value_t = kiln_server::DEFAULT_MAX_BODY_BYTES)]
    max_body: usize,
    /// Largest batch trigger body in bytes.
    #[arg(long, default_value_t = kiln_server::DEFAULT_MAX_BATCH_BODY_BYTES)]
    max_batch_body: usize,
    /// Secret that signs dashboard sessions (at least 32 characters); give every server behind
    /// one address the same. Without it, sessions end when the server stops.
    #[arg(long, env = "KILN_SESSION_SECRET", hide_env_values = true)]
    session_secret: Option<String>,
}

/// Serves the HTTP API until SIGTERM or Ctrl-C.
pub(crate) async fn serve(args: ServeArgs) -> CliResult {
    let client = args.db.client().await?;
    if args.session_secret.as_ref().is_some_and(|s| s.len() < 32) {
        return Err(Failure::usage(
            "--session-secret (KILN_SESSION_SECRET) is too short: use at least 32 random \
             characters, e.g. from `openssl rand -hex 32`",
        ));
    }
    let config = ServerConfig {
        max_body_bytes: args.max_body,
        max_batch_body_bytes: args.max_batch_body,
        session_secret: args.session_secret.map(String::into_bytes),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::new(format!("cannot listen on {}: {e}", args.listen)))?;
    println!(
        "Kiln dashboard on http://{0}/ (sign in with an admin key); API on http://{0}/api/v1 \
         (OpenAPI: /api/v1/openapi.json)",
        args.listen
    );
    kiln_server::serve(listener, AppState::new(client, config), shutdown_signal())
        .await
        .map_err(|e| Failure::new(format!("the API server failed: {e}")))
}

/// Resolves on the first SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key and print its secret (shown only now).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// A name to recognise the key by (unique among live keys).
        #[arg(long)]
        name: String,
        /// trigger (trigger and read runs), read (read everything) or admin (everything).
        #[arg(long, default_value = "trigger", value_parser = parse_scope)]
        scope: Scope,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name: it is refused within seconds.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The key's name.
        name: String,
    },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse().map_err(|e: kiln::ClientError| e.to_string())
}

pub(crate) async fn keys(command: KeysCommand) -> CliResult {
    match command {
        KeysCommand::Create {
            db,
            name,
            scope,
            json,
        } => {
            let created = db.client().await?.keys().create(&name, scope).await?;
            if json {
                table::json(&serde_json::json!({
                    "name": created.key.name, "scope": created.key.scope,
                    "prefix": created.key.prefix, "secret": created.secret,
                }));
            } else {
                println!("{}", created.secret);
                eprintln!(
                    "key {name:?} ({scope}) created; the secret above is shown only now: store it \
                     where your app reads its secrets"
                );
            }
        }
        KeysCommand::List { db, json } => {
            let keys = db.client().await?.keys().list().await?;
            if json {
                table::json(&keys);
            } else {
                let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into())
                };
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            table::clean(&k.name),
                            format!("{}…", k.prefix),
                            k.scope.to_string(),
                            time(Some(k.created_at)),
                            time(k.last_used_at),
                            time(k.revoked_at),
                        ]
                    })
                    .collect();
                table::print(
                    &["NAME", "PREFIX", "SCOPE", "CREATED", "LAST USED", "REVOKED"],
                    &rows,
                );
            }
        }
        KeysCommand::Revoke { db, name } => {
            db.client().await?.keys().revoke(&name).await?;
            println!(
                "key {name:?} revoked; it is refused within {} s",
                kiln_server::KEY_CACHE_TTL.as_secs()
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Entries to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Only entries older than this id.
    #[arg(long)]
    before: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Shows recent operator actions, newest first.
pub(crate) async fn audit(args: AuditArgs) -> CliResult {
    let entries = args
        .db
        .client()
        .await?
        .audit()
        .list(args.limit, args.before)
        .await?;
    if args.json {
        table::json(&entries);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                table::clean(&e.actor),
                e.action.clone(),
                table::clean(&e.target),
                if e.detail.is_null() {
                    String::new()
                } else {
                    table::clean(&e.detail.to_string())
                },
            ]
        })
        .collect();
    table::print(&["ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], &rows);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkersCommand {
    /// Running and draining workers, with what they hold now.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Stopped and dead workers too.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn workers(command: WorkersCommand) -> CliResult {
    let WorkersCommand::List { db, all, json } = command;
    let workers = db.client().await?.workers().list(all).await?;
    if json {
        table::json(&workers);
        return Ok(());
    }
    let ago = |t: chrono::DateTime<chrono::Utc>| {
        let s = (chrono::Utc::now() - t).num_seconds().max(0);
        match s {
            0..=119 => format!("{s}s ago"),
            120..=7199 => format!("{}m ago", s / 60),
            _ => format!("{}h ago", s / 3600),
        }
    };
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                table::clean(&w.id),
                table::clean(&w.hostname),
                w.pid.to_string(),
                w.state.clone(),
                format!("{}/{}", w.in_flight, w.concurrency),
                table::clean(&w.tasks.join(",")),
                ago(w.started_at),
                ago(w.last_seen_at),
            ]
        })
        .collect();
    table::print(
        &[
            "ID",
            "HOST",
            "PID",
            "STATE",
            "IN FLIGHT",
            "TASKS",
            "STARTED",
            "LAST SEEN",
        ],
        &rows,
    );
    Ok(())
}
