//! Waiting for runs to finish without polling: one `LISTEN` connection per process on Kiln's
//! finish channel wakes every waiter whose run was announced; a slow poll covers a lost
//! connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_core::Run;
use kiln_store::RUNS_FINISHED_CHANNEL;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::{Client, ClientError};

/// A waiter re-reads its run this often even without a notification.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// First pause after the notification connection failed.
const LISTEN_FIRST_BACKOFF: Duration = Duration::from_millis(100);

type Waiters = Arc<Mutex<HashMap<Uuid, Vec<Arc<Notify>>>>>;

/// Waits for runs to reach a final status. Cheap to clone; the listening task stops when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct RunWaiter {
    client: Client,
    waiters: Waiters,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl RunWaiter {
    /// Starts listening for finished runs (on the current tokio runtime).
    pub fn start(client: Client) -> Self {
        let waiters: Waiters = Arc::default();
        let stop = CancellationToken::new();
        tokio::spawn(listen(
            client.pool().clone(),
            Arc::clone(&waiters),
            stop.clone(),
        ));
        Self {
            client,
            waiters,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }

    /// The run once it is final, or `None` when `timeout` passed first. An unknown id is
    /// [`ClientError::RunNotFound`].
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<Option<Run>, ClientError> {
        let notify = Arc::new(Notify::new());
        let _registration = Registration::new(&self.waiters, id, Arc::clone(&notify));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before reading, so a finish between the read and the wait still wakes
            // this waiter (Notify keeps one permit).
            let run = self.client.runs().retrieve(id).await?;
            if run.status.is_final() {
                return Ok(Some(run));
            }
            let poll = (tokio::time::Instant::now() + WAIT_POLL_INTERVAL).min(deadline);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(poll) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Runs being waited for now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiters.lock().expect("waiters").len()
    }
}

/// One waiter's entry, removed when the wait ends however it ends.
struct Registration<'a> {
    waiters: &'a Waiters,
    id: Uuid,
    notify: Arc<Notify>,
}

impl<'a> Registration<'a> {
    fn new(waiters: &'a Waiters, id: Uuid, notify: Arc<Notify>) -> Self {
        waiters
            .lock()
            .expect("waiters")
            .entry(id)
            .or_default()
            .push(Arc::clone(&notify));
        Self {
            waiters,
            id,
            notify,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().expect("waiters");
        if let Some(list) = waiters.get_mut(&self.id) {
            list.retain(|n| !Arc::ptr_eq(n, &self.notify));
            if list.is_empty() {
                waiters.remove(&self.id);
            }
        }
    }
}

fn wake_all(waiters: &Waiters) {
    for list in waiters.lock().expect("waiters").values() {
        list.iter().for_each(|n| n.notify_one());
    }
}

async fn listen(pool: sqlx::PgPool, waiters: Waiters, stop: CancellationToken) {
    let mut backoff = Backoff::new(LISTEN_FIRST_BACKOFF);
    while !stop.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "run waiter: cannot open the notification connection; retrying");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        if let Err(error) = listener.listen(RUNS_FINISHED_CHANNEL).await {
            tracing::warn!(%error, "run waiter: cannot LISTEN; retrying");
            if !backoff.wait(&stop).await {
                return;
            }
            continue;
        }
        backoff.reset();
        // Runs that finished while nobody listened are found by re-reading.
        wake_all(&waiters);
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(note)) => {
                    let waiters = waiters.lock().expect("waiters");
                    for id in note.payload().split(',').filter_map(|s| s.parse().ok()) {
                        if let Some(list) = waiters.get(&id) {
                            list.iter().for_each(|n| n.notify_one());
                        }
                    }
                }
                Ok(None) => wake_all(&waiters),
                Err(error) => {
                    tracing::warn!(%error, "run waiter: notification connection failed; reconnecting");
                    wake_all(&waiters);
                    break;
                }
            }
        }
    }
}
