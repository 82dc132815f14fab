//! Ticks fire at their boundary: schedulers sleep until the next due tick and are woken when
//! schedules change, instead of polling. Two workers on the real clock, with a maintenance
//! interval of 10 s (so only the wake-up and the sleep until the tick can make them fire on
//! time); each tick's run is inserted, and starts, within 50 ms of the tick, exactly once.

use std::time::Duration;

use kiln::{task, Context, CreateSchedule, Result, ScheduleTick, Worker};
use kiln_tests::{InProcessWorker, TestDb};

task! {
    /// Does nothing; fired by an imperative schedule.
    pub OnTime {
        id: "on-time",
        run: async |_ctx: Context, _tick: ScheduleTick| -> Result<()> { Ok(()) }
    }
}

/// The most a tick's run may be inserted, or started, after the tick.
const ON_TIME: f64 = 50.0;
const TICKS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_starts_within_50_ms_of_its_boundary_exactly_once() {
    let db = TestDb::new().await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(InProcessWorker::spawn(
            Worker::builder()
                .pool(db.pool.clone())
                .register(OnTime)
                .maintenance_interval(Duration::from_secs(10))
                .build()
                .await
                .unwrap(),
        ));
    }
    let client = kiln::Client::new(db.pool.clone());
    let schedule = client
        .schedules()
        .create(CreateSchedule::for_task::<OnTime>("* * * * *"))
        .await
        .unwrap();
    // Let both schedulers settle into their sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut inserted_ms = Vec::new();
    let mut started_ms = Vec::new();
    for round in 0..TICKS {
        // The next tick is due in 400 ms (written as an operator's change would be).
        sqlx::query(
            "UPDATE kiln.schedules SET next_run_at = clock_timestamp() + interval '400 ms'
              WHERE id = $1",
        )
        .bind(schedule.id)
        .execute(&db.pool)
        .await
        .unwrap();
        let mut fired = None;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fired = sqlx::query_as::<_, (f64, f64)>(
                "SELECT (extract(epoch FROM r.created_at - t.tick) * 1000)::float8,
                        (extract(epoch FROM r.started_at - t.tick) * 1000)::float8
                   FROM kiln.schedule_ticks t JOIN kiln.runs r ON r.id = t.run_id
                  WHERE t.schedule_id = $1 AND r.started_at IS NOT NULL
                  ORDER BY t.tick DESC LIMIT 1",
            )
            .bind(schedule.id)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM kiln.schedule_ticks WHERE schedule_id = $1",
            )
            .bind(schedule.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            if count as usize == round + 1 && fired.is_some() {
                break;
            }
            fired = None;
        }
        let (inserted, started) = fired.unwrap_or_else(|| panic!("tick {round} did not run"));
        inserted_ms.push(inserted);
        started_ms.push(started);
    }
    for worker in workers {
        worker.stop().await;
    }
    let (ticks, runs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM kiln.schedule_ticks WHERE schedule_id = $1),
                (SELECT count(*) FROM kiln.runs WHERE task_id = 'on-time')",
    )
    .bind(schedule.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    println!(
        "observed: {TICKS} ticks by 2 schedulers: run inserted {inserted_ms:.1?} ms and started \
         {started_ms:.1?} ms after the tick"
    );
    assert_eq!(
        (ticks, runs),
        (TICKS as i64, TICKS as i64),
        "one run per tick"
    );
    for (inserted, started) in inserted_ms.iter().zip(&started_ms) {
        assert!(
            (0.0..ON_TIME).contains(inserted),
            "a tick's run was inserted {inserted:.1} ms after it"
        );
        assert!(
            (0.0..ON_TIME).contains(started),
            "a tick's run started {started:.1} ms after it"
        );
    }
}
