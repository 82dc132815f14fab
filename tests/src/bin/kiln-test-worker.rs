//! The worker process Kiln's multi-process tests spawn: every test task, settings from the
//! environment (DATABASE_URL, KILN_WORKER_ID, KILN_CONCURRENCY, KILN_LEASE_MS, KILN_HEARTBEAT_MS,
//! KILN_SHUTDOWN_GRACE_MS). Runs until SIGTERM.

use std::time::Duration;

use kiln_tests::tasks::{register_all, set_probe_pool};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| "warn".into())
        .parse()
        .unwrap_or_default();
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();

    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .expect("connect");
    set_probe_pool(pool.clone());
    let worker_id =
        std::env::var("KILN_WORKER_ID").unwrap_or_else(|_| format!("test-{}", std::process::id()));
    let builder =
        register_all(kiln::Worker::builder().pool(pool).worker_id(worker_id)).configure(|c| {
            c.concurrency = env_u64("KILN_CONCURRENCY", 8) as usize;
            c.lease = Duration::from_millis(env_u64("KILN_LEASE_MS", 2_000));
            c.heartbeat_interval = Duration::from_millis(env_u64("KILN_HEARTBEAT_MS", 400));
            c.shutdown_grace = Duration::from_millis(env_u64("KILN_SHUTDOWN_GRACE_MS", 10_000));
            c.cancel_grace = Duration::from_millis(200);
            c.maintenance_interval = Duration::from_millis(200);
            c.poll_interval = Duration::from_millis(200);
        });
    if let Err(error) = builder.run().await {
        eprintln!("kiln-test-worker: {error}");
        std::process::exit(1);
    }
}
