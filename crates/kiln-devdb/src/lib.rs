//! Finds a PostgreSQL server for `kiln dev` and for tests, or starts a private one from the local
//! Postgres binaries (`initdb` and `pg_ctl` on PATH or under /usr/lib/postgresql/*/bin).
//!
//! A private server lives in a data folder of its own, listens on 127.0.0.1 on a free port with
//! trust authentication, and is reused by the next call if it is still running.

#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;

/// Why no server could be found or started.
#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    /// No Postgres binaries on this machine.
    #[error("no PostgreSQL binaries found (initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin). Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), or start one with `docker compose up -d db` and set DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres")]
    NoBinaries,
    /// A Postgres command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command that failed.
        command: String,
        /// What it printed, or why it could not run.
        detail: String,
    },
    /// The server could not be reached.
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating or migrating a database failed.
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

/// A server Kiln can use: its admin URL, and whether Kiln started it.
#[derive(Debug, Clone)]
pub struct Server {
    /// URL of the server's `postgres` database, for creating databases.
    pub admin_url: String,
    /// The data folder when this is a private server started from local binaries.
    pub data_dir: Option<PathBuf>,
}

impl Server {
    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        replace_database(&self.admin_url, name)
    }

    /// Restarts a private server on the same port (fast shutdown: every connection is cut), and
    /// waits until it accepts connections again. A no-op for a server Kiln did not start.
    pub fn restart(&self) -> Result<(), DevDbError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        let bin = find_binaries().ok_or(DevDbError::NoBinaries)?;
        // The server's output goes to its log, as at start: a server writing to pg_ctl's
        // captured output would hold the pipe open, and waiting for pg_ctl would never end.
        let log = dir.join("server.log").to_string_lossy().into_owned();
        run_as_owner(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &dir.to_string_lossy(),
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "restart",
            ],
        )
    }

    /// Stops a private server (a no-op for a server Kiln did not start).
    pub fn stop(&self) -> Result<(), DevDbError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        let bin = find_binaries().ok_or(DevDbError::NoBinaries)?;
        run_as_owner(
            &bin.join("pg_ctl"),
            &["-D", &dir.to_string_lossy(), "-m", "fast", "-w", "stop"],
        )
    }
}

/// Replaces the database name of a postgres URL.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A URL with its password replaced by `***`, fit for messages and logs.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// The directory holding `initdb` and `pg_ctl`, if any: PATH first, then the newest
/// /usr/lib/postgresql/*/bin.
pub fn find_binaries() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Postgres refuses to run as root: as root, run its commands as the `postgres` user.
fn run_as_owner(program: &Path, args: &[&str]) -> Result<(), DevDbError> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args);
    let shown = format!("{} {}", program.display(), args.join(" "));
    let output = command.output().map_err(|e| DevDbError::Command {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        return Err(DevDbError::Command {
            command: shown,
            detail,
        });
    }
    Ok(())
}

/// True when the `postgres` user can enter every folder down to `dir`.
fn postgres_user_can_reach(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(dir.parent().unwrap_or(dir))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// FNV-1a of a path, to give each project its own fallback folder.
fn path_hash(path: &Path) -> u64 {
    path.to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

fn free_port() -> Result<u16, DevDbError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| DevDbError::Command {
        command: "binding a free port".into(),
        detail: e.to_string(),
    })?;
    Ok(listener.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// True when a server answers at `url`.
pub async fn reachable(url: &str) -> bool {
    let attempt = tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(url));
    matches!(attempt.await, Ok(Ok(_)))
}

/// Starts (or reuses, if it is still running) a private server whose data lives in `data_dir`.
pub async fn start_private(data_dir: &Path) -> Result<Server, DevDbError> {
    let bin = find_binaries().ok_or(DevDbError::NoBinaries)?;
    std::fs::create_dir_all(data_dir).map_err(|e| DevDbError::Command {
        command: format!("creating {}", data_dir.display()),
        detail: e.to_string(),
    })?;
    let mut data_dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    if is_root() && !postgres_user_can_reach(&data_dir) {
        // As root, the server runs as the postgres user, who cannot enter e.g. /root/project.
        let elsewhere =
            std::env::temp_dir().join(format!("kiln-postgres-{:016x}", path_hash(&data_dir)));
        eprintln!(
            "note: the postgres user cannot reach {} (Kiln runs Postgres as that user when started as root); keeping the private server's data in {} instead",
            data_dir.display(),
            elsewhere.display()
        );
        std::fs::create_dir_all(&elsewhere).map_err(|e| DevDbError::Command {
            command: format!("creating {}", elsewhere.display()),
            detail: e.to_string(),
        })?;
        data_dir = elsewhere;
    }
    let dir = data_dir.to_string_lossy().into_owned();
    let port_file = data_dir.join("kiln-port");
    if let Ok(port) = std::fs::read_to_string(&port_file) {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", port.trim());
        if reachable(&url).await {
            return Ok(Server {
                admin_url: url,
                data_dir: Some(data_dir),
            });
        }
    }
    if is_root() {
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres", &dir])
            .status();
        let _ = Command::new("chmod").args(["700", &dir]).status();
    }
    if !data_dir.join("PG_VERSION").is_file() {
        run_as_owner(
            &bin.join("initdb"),
            &[
                "-D",
                &dir,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
    }
    let port = free_port()?;
    let options = format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    );
    let log = data_dir.join("server.log").to_string_lossy().into_owned();
    run_as_owner(
        &bin.join("pg_ctl"),
        &[
            "-D", &dir, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
        ],
    )?;
    let _ = std::fs::write(&port_file, port.to_string());
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    Ok(Server {
        admin_url: url,
        data_dir: Some(data_dir),
    })
}

/// The server tests use: `DATABASE_URL` when set, else a local server on 127.0.0.1:5432 if one
/// answers, else a private server in `fallback_dir`.
pub async fn server_for_tests(fallback_dir: &Path) -> Result<Server, DevDbError> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Ok(Server {
            admin_url: url,
            data_dir: None,
        });
    }
    for candidate in [
        "postgres://postgres@127.0.0.1:5432/postgres",
        "postgres://127.0.0.1:5432/postgres",
    ] {
        if reachable(candidate).await {
            return Ok(Server {
                admin_url: candidate.to_owned(),
                data_dir: None,
            });
        }
    }
    start_private(fallback_dir).await
}

/// Prefix of databases created for tests.
pub const TEST_DATABASE_PREFIX: &str = "kiln_test_";

/// Creates a new, migrated database on `server` for one test and returns its URL. Test
/// databases older than an hour are dropped on the way.
pub async fn create_test_database(server: &Server) -> Result<String, DevDbError> {
    let mut admin = sqlx::PgConnection::connect(&server.admin_url)
        .await
        .map_err(|source| DevDbError::Connect {
            url: redact(&server.admin_url),
            source,
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let stale: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{TEST_DATABASE_PREFIX}%"))
            .fetch_all(&mut admin)
            .await
            .map_err(|source| DevDbError::Connect {
                url: redact(&server.admin_url),
                source,
            })?;
    for (name,) in stale {
        let created: Option<u64> = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| secs + 3600 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
    let name = format!(
        "{TEST_DATABASE_PREFIX}{now}_{}",
        uuid::Uuid::now_v7().simple()
    );
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .map_err(|source| DevDbError::Connect {
            url: redact(&server.admin_url),
            source,
        })?;
    let url = server.database_url(&name);
    let pool = sqlx::PgPool::connect(&url)
        .await
        .map_err(|source| DevDbError::Connect {
            url: redact(&url),
            source,
        })?;
    kiln_store::migrate(&pool).await?;
    pool.close().await;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_and_passwords_redacted() {
        assert_eq!(
            replace_database("postgres://u:p@h:5432/test?sslmode=disable", "kiln_x"),
            "postgres://u:p@h:5432/kiln_x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://h", "db"), "postgres://h/db");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
