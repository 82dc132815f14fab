//! The worker process Kiln's multi-process tests spawn: every test task, settings from the
//! environment (DATABASE_URL, KILN_WORKER_ID, KILN_CONCURRENCY, KILN_LEASE_MS, KILN_HEARTBEAT_MS,
//! KILN_SHUTDOWN_GRACE_MS, KILN_ONLY_TASKS: comma-separated task ids to register,
//! KILN_NO_MAINTENANCE: set to run no rescuer or other maintenance, KILN_METRICS_LISTEN: an
//! address to serve metrics on). Runs until
//! SIGTERM.
//!
//! With `KILN_SIM_SCHEDULER=<name>` it instead runs only the scheduler, on the simulated clock the
//! test keeps in table `sim_clock`: one pass per new time, recorded in `sim_seen`, until the
//! clock says done; then it prints how many ticks it fired (the exactly-once test races three).

use std::time::Duration;

use kiln_tests::tasks::{register_only, set_probe_pool};

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
    if let Ok(name) = std::env::var("KILN_SIM_SCHEDULER") {
        fire_schedules(&pool, &name).await;
        return;
    }
    let only: Option<Vec<String>> = std::env::var("KILN_ONLY_TASKS")
        .ok()
        .map(|ids| ids.split(',').map(str::to_owned).collect());
    let worker_id =
        std::env::var("KILN_WORKER_ID").unwrap_or_else(|_| format!("test-{}", std::process::id()));
    let builder = register_only(
        kiln::Worker::builder().pool(pool).worker_id(worker_id),
        only.as_deref(),
    )
    .configure(|c| {
        c.concurrency = env_u64("KILN_CONCURRENCY", 8) as usize;
        c.lease = Duration::from_millis(env_u64("KILN_LEASE_MS", 2_000));
        c.heartbeat_interval = Duration::from_millis(env_u64("KILN_HEARTBEAT_MS", 400));
        c.shutdown_grace = Duration::from_millis(env_u64("KILN_SHUTDOWN_GRACE_MS", 10_000));
        c.cancel_grace = Duration::from_millis(200);
        c.maintenance_interval = Duration::from_millis(200);
        c.poll_interval = Duration::from_millis(200);
        c.run_maintenance = std::env::var("KILN_NO_MAINTENANCE").is_err();
    });
    let builder = match std::env::var("KILN_METRICS_LISTEN") {
        Ok(addr) => {
            builder.metrics_listen(addr.parse().expect("KILN_METRICS_LISTEN is an address"))
        }
        Err(_) => builder,
    };
    if let Err(error) = builder.run().await {
        eprintln!("kiln-test-worker: {error}");
        std::process::exit(1);
    }
}

/// Runs scheduler passes on the test's simulated clock (see the module docs).
async fn fire_schedules(pool: &sqlx::PgPool, name: &str) {
    let clock = kiln::ManualClock::new(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let scheduler = kiln::Scheduler {
        batch: 100,
        clock: std::sync::Arc::new(clock.clone()),
    };
    let mut fired = 0;
    let mut last = None;
    loop {
        let (at, done): (chrono::DateTime<chrono::Utc>, bool) =
            sqlx::query_as("SELECT at, done FROM sim_clock")
                .fetch_one(pool)
                .await
                .expect("read the simulated clock");
        if done {
            break;
        }
        if last == Some(at) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        clock.set(at);
        fired += scheduler
            .fire_due_schedules(pool)
            .await
            .expect("fire schedules")
            .len();
        sqlx::query(
            "INSERT INTO sim_seen (process, at) VALUES ($1, $2)
             ON CONFLICT (process) DO UPDATE SET at = excluded.at",
        )
        .bind(name)
        .bind(at)
        .execute(pool)
        .await
        .expect("record the pass");
        last = Some(at);
    }
    println!("fired {fired}");
}
