//! The dashboard in a real browser: `kiln serve` (the real binary) over a real database, a worker
//! running a calendar-sync task, and headless Chromium driven through WebDriver. Each step saves a
//! screenshot under `target/dashboard-screenshots/`.
//!
//! Outside CI, without chromium and chromedriver installed, the test says so and passes; with
//! `CI=true` a missing browser fails it.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln::{task, Context, Error, Result, RunStatus, TriggerOptions};
use serde::{Deserialize, Serialize};
use support::webdriver::{browser_or_skip, free_port, Browser, PATIENCE};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const SECRET: &str = "a-test-session-secret-of-at-least-32-chars";

/// Which workspace to sync, and whether the sync should fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPayload {
    ws_id: String,
    fail: bool,
}

/// The flagship tasks' structured result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResult {
    ws_id: String,
    success: bool,
    error: Option<String>,
}

task! {
    /// Syncs one workspace's calendar; fails when the payload says so.
    pub CalendarSync {
        id: "dash-calendar-sync",
        queue: { concurrency_limit: 5 },
        retry: { max_attempts: 1 },
        run: async |ctx: Context, payload: SyncPayload| -> Result<SyncResult> {
            ctx.log().info_with("syncing calendar", serde_json::json!({ "ws_id": payload.ws_id }));
            if payload.fail {
                ctx.log().error("google answered 401: token expired");
                return Err(Error::msg(format!("calendar sync of {} failed: token expired", payload.ws_id)));
            }
            Ok(SyncResult { ws_id: payload.ws_id, success: true, error: None })
        }
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(url: &str) -> Server {
    let port = free_port();
    let child = Command::new(KILN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", url)
        .env("KILN_SESSION_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start kiln serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "kiln serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, base }
}

async fn test_database() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-test-postgres");
    let server = kiln_devdb::server_for_tests(&dir)
        .await
        .expect("a PostgreSQL for tests");
    kiln_devdb::create_test_database(&server)
        .await
        .expect("a test database")
}

async fn start_worker(url: &str) -> tokio_util::sync::CancellationToken {
    let worker = kiln::Worker::builder()
        .database_url(url)
        .worker_id("dashboard-test-worker")
        .register(CalendarSync)
        .configure(|c| {
            c.concurrency = 4;
            c.poll_interval = Duration::from_millis(100);
        })
        .build()
        .await
        .expect("build the worker");
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { worker.run_until(token).await });
    stop
}

async fn wait_for_status(client: &kiln::Client, id: uuid::Uuid, status: RunStatus) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let run = client.runs().retrieve(id).await.expect("the run");
        if run.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} stayed {} (wanted {status})",
            run.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
}

/// What each browser test starts from: a database, a worker, a client, an admin key, a browser.
struct Setup {
    url: String,
    stop_worker: tokio_util::sync::CancellationToken,
    client: kiln::Client,
    admin: kiln_client::CreatedKey,
    browser: Browser,
}

/// The setup, or `None` when the browser is not installed (outside CI).
async fn setup(test: &str) -> Option<Setup> {
    let (chromium, driver) = browser_or_skip(test)?;
    let url = test_database().await;
    let stop_worker = start_worker(&url).await;
    let client = kiln::Client::connect(&url).await.expect("a client");
    let admin = client
        .keys()
        .create("ops", kiln::Scope::Admin)
        .await
        .expect("an admin key");
    let browser = Browser::start(&chromium, &driver, &shots_dir()).await;
    Some(Setup {
        url,
        stop_worker,
        client,
        admin,
        browser,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_filters_runs_reads_a_failure_replays_it_cancels_and_pauses() {
    let Some(Setup {
        url,
        stop_worker,
        client,
        admin,
        browser,
    }) = setup("dashboard browser test").await
    else {
        return;
    };
    let reader = client
        .keys()
        .create("reader", kiln::Scope::Read)
        .await
        .expect("a read key");

    // Runs to look at: three that complete, one that fails.
    let mut done = Vec::new();
    for ws in ["ws_alpha", "ws_beta", "ws_gamma"] {
        let run = client
            .trigger::<CalendarSync>(SyncPayload {
                ws_id: ws.into(),
                fail: false,
            })
            .options(TriggerOptions::new().concurrency_key(ws).tag("calendar"))
            .await
            .expect("trigger");
        done.push(run.id);
    }
    let failed = client
        .trigger::<CalendarSync>(SyncPayload {
            ws_id: "ws_broken".into(),
            fail: true,
        })
        .options(
            TriggerOptions::new()
                .concurrency_key("ws_broken")
                .tag("calendar"),
        )
        .await
        .expect("trigger");
    for id in &done {
        wait_for_status(&client, *id, RunStatus::Completed).await;
    }
    wait_for_status(&client, failed.id, RunStatus::Failed).await;

    let server = start_server(&url).await;
    let base = &server.base;

    // Nothing is readable before signing in: the runs page sends the browser to sign in.
    browser.goto(&format!("{base}/runs")).await;
    assert!(
        browser.url().await.contains("/login"),
        "{}",
        browser.url().await
    );
    browser.screenshot("01-sign-in").await;
    browser.fill("#key", "kiln_sk_not_a_key").await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_text("[role=alert]", "unknown or revoked", false)
        .await;
    browser.fill("#key", &reader.secret).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_text("[role=alert]", "needs a key of scope admin", false)
        .await;
    browser.fill("#key", &admin.secret).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("h1", "Runs", false).await;
    assert!(
        browser.url().await.ends_with("/runs"),
        "{}",
        browser.url().await
    );
    assert_eq!(browser.all("table.runs tbody tr").await.len(), 4);
    browser.screenshot("02-runs").await;

    // Filter by status and task: only the failed run is left, and the URL holds the filter.
    browser.click("input[name=status][value=failed]").await;
    browser.click("form.filters button[type=submit]").await;
    browser
        .wait_for_text(".toolbar .count", "1 runs", false)
        .await;
    let filtered = browser.url().await;
    assert!(filtered.contains("status=failed"), "{filtered}");
    assert_eq!(browser.all("table.runs tbody tr").await.len(), 1);
    browser
        .goto(&format!(
            "{base}/runs?status=completed&task=dash-calendar-sync"
        ))
        .await;
    browser
        .wait_for_text(".toolbar .count", "3 runs", false)
        .await;
    browser.screenshot("03-runs-filtered").await;

    // The failed run: its error and its logs.
    browser.goto(&format!("{base}/runs?status=failed")).await;
    browser.click("table.runs tbody tr a").await;
    browser.wait_for_text("h1", "failed", false).await;
    let error = browser.text(".error-box").await;
    assert!(
        error.contains("calendar sync of ws_broken failed: token expired"),
        "{error}"
    );
    let logs = browser.text("#logs").await;
    assert!(logs.contains("syncing calendar"), "{logs}");
    assert!(logs.contains("ws_broken"), "{logs}");
    assert!(logs.contains("google answered 401"), "{logs}");
    browser.screenshot("04-failed-run").await;

    // Replay it with an edited payload: the new run completes.
    browser.click("details.replay summary").await;
    browser
        .fill(
            "#replay-payload",
            r#"{"ws_id": "ws_broken", "fail": false}"#,
        )
        .await;
    browser.click("details.replay button[type=submit]").await;
    browser.wait_for_text("h1", "completed", true).await;
    let replayed = browser.url().await;
    assert!(!replayed.ends_with(&failed.id.to_string()), "{replayed}");
    let facts = browser.text(".facts").await;
    assert!(
        facts.contains(&failed.id.to_string()),
        "the replay links its original: {facts}"
    );
    browser.screenshot("05-replayed-run").await;

    // Cancel a delayed run, confirming the dialog.
    let delayed = client
        .trigger::<CalendarSync>(SyncPayload {
            ws_id: "ws_later".into(),
            fail: false,
        })
        .options(TriggerOptions::new().delay(Duration::from_secs(3600)))
        .await
        .expect("trigger");
    browser.goto(&format!("{base}/runs/{}", delayed.id)).await;
    browser.wait_for_text("h1", "delayed", false).await;
    browser.screenshot("06-delayed-run").await;
    browser.click(".actions form button.danger").await;
    browser.accept_dialog().await;
    browser.wait_for_text("h1", "canceled", false).await;
    wait_for_status(&client, delayed.id, RunStatus::Canceled).await;

    // Pause the queue: a run triggered now waits; resume it and the run completes.
    let queue = client.runs().retrieve(failed.id).await.expect("run").queue;
    browser.goto(&format!("{base}/queues")).await;
    let row = format!("tr[id='queue-{queue}']");
    browser
        .click(&format!("{row} form[action$='/pause'] button"))
        .await;
    browser.wait_for_text(&row, "paused", false).await;
    let waiting = client
        .trigger::<CalendarSync>(SyncPayload {
            ws_id: "ws_paused".into(),
            fail: false,
        })
        .options(TriggerOptions::new().concurrency_key("ws_paused"))
        .await
        .expect("trigger");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        client
            .runs()
            .retrieve(waiting.id)
            .await
            .expect("run")
            .status,
        RunStatus::Queued,
        "a run of a paused queue must not start"
    );
    browser.goto(&format!("{base}/queues")).await;
    browser.screenshot("07-queue-paused").await;
    // The queue's page lists the key that waits.
    browser.goto(&format!("{base}/queues/{queue}")).await;
    let keys = browser
        .wait_for_text("table.keys", "ws_paused", false)
        .await;
    assert!(keys.contains("ws_paused 0 / 5 1"), "{keys}");
    browser.screenshot("07b-queue-keys").await;
    browser.goto(&format!("{base}/queues")).await;
    browser
        .click(&format!("{row} form[action$='/resume'] button"))
        .await;
    browser.wait_for_text(&row, "active", false).await;
    wait_for_status(&client, waiting.id, RunStatus::Completed).await;

    // The workers page lists the worker.
    browser.goto(&format!("{base}/workers")).await;
    browser
        .wait_for_text("table.workers", "dashboard-test-worker", true)
        .await;
    browser.screenshot("08-workers").await;

    // Signing out ends the session.
    browser.goto(&format!("{base}/runs")).await;
    browser.click("header form[action='/logout'] button").await;
    browser.goto(&format!("{base}/runs")).await;
    assert!(
        browser.url().await.contains("/login"),
        "{}",
        browser.url().await
    );

    // The audit log names the operator who acted.
    let audit = client.audit().list(100, None).await.expect("the audit log");
    let actors: Vec<&str> = audit.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains(&"dashboard:ops"), "{actors:?}");

    stop_worker.cancel();
}

/// Signs `browser` in with `secret` and waits for the runs page.
async fn sign_in(browser: &Browser, base: &str, secret: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.fill("#key", secret).await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("h1", "Runs", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_test_triggers_a_task_and_creates_a_schedule_checked_as_typed() {
    let Some(Setup {
        url,
        stop_worker,
        client,
        admin,
        browser,
    }) = setup("dashboard tasks and schedules browser test").await
    else {
        return;
    };
    let server = start_server(&url).await;
    let base = &server.base;
    sign_in(&browser, base, &admin.secret).await;

    // Tasks: the registered task, served by the alive worker; Test triggers a run and opens it.
    browser.goto(&format!("{base}/tasks")).await;
    let row = browser
        .wait_for_text("table.tasks", "dash-calendar-sync", true)
        .await;
    assert!(row.contains("worker alive"), "{row}");
    browser.screenshot("09-tasks").await;
    browser
        .click("table.tasks a[href='/tasks/dash-calendar-sync']")
        .await;
    browser
        .wait_for_text("h1", "dash-calendar-sync", false)
        .await;
    browser
        .fill("#test-payload", r#"{"ws_id": "ws_tested", "fail": false}"#)
        .await;
    browser.fill("input[name=key]", "ws_tested").await;
    browser.screenshot("10-task-test").await;
    browser.click("form.test button[type=submit]").await;
    browser.wait_for_text("h1", "completed", true).await;
    let facts = browser.text(".facts").await;
    assert!(facts.contains("ws_tested"), "{facts}");
    assert!(
        facts.contains("test"),
        "a test run carries the tag test: {facts}"
    );
    let output = browser.text("details.json:nth-of-type(2)").await;
    assert!(output.contains("\"success\": true"), "{output}");

    // A bad cron expression is named as it is typed and refused on submit; nothing is created.
    browser.goto(&format!("{base}/schedules")).await;
    browser.fill("#cron", "61 * * * *").await;
    let preview = browser.wait_for_text("#cron-preview", "61", false).await;
    assert!(!preview.contains("Next"), "{preview}");
    browser.screenshot("11-schedule-bad-cron").await;
    browser
        .click("form.schedule-form button[type=submit]")
        .await;
    let problem = browser
        .wait_for_text("form.schedule-form [role=alert]", "61", false)
        .await;
    assert!(!problem.is_empty());
    assert!(client.schedules().list(None).await.unwrap().is_empty());

    // A good one shows its next five fire times, then is created and listed.
    browser.fill("#cron", "*/5 * * * *").await;
    browser.fill("#timezone", "Europe/Berlin").await;
    browser
        .wait_for_text("#cron-preview", "Next 5 fire times (Europe/Berlin)", false)
        .await;
    assert_eq!(browser.all("#cron-preview .fire-times li").await.len(), 5);
    browser.screenshot("12-schedule-good-cron").await;
    browser
        .click("form.schedule-form button[type=submit]")
        .await;
    let table = browser
        .wait_for_text("table.schedules", "*/5 * * * *", false)
        .await;
    assert!(table.contains("Europe/Berlin"), "{table}");
    let schedules = client.schedules().list(None).await.unwrap();
    assert_eq!(schedules.len(), 1);
    assert!(schedules[0].active);
    browser.screenshot("13-schedules").await;
    browser
        .click("table.schedules form[action$='/deactivate'] button")
        .await;
    browser
        .wait_for_text("table.schedules", "inactive", false)
        .await;
    assert!(!client.schedules().list(None).await.unwrap()[0].active);

    // Bulk cancel: 50 delayed runs, all matching the filter; the confirmation counts them and
    // the progress page reports them canceled.
    let mut delayed = Vec::new();
    for i in 0..50 {
        let run = client
            .trigger::<CalendarSync>(SyncPayload {
                ws_id: format!("ws_{i}"),
                fail: false,
            })
            .options(
                TriggerOptions::new()
                    .delay(Duration::from_secs(3600))
                    .tag("nightly"),
            )
            .await
            .expect("trigger");
        delayed.push(run.id);
    }
    browser
        .goto(&format!("{base}/runs?status=delayed&tag=nightly"))
        .await;
    browser
        .wait_for_text(".toolbar .count", "50 runs", false)
        .await;
    browser.screenshot("14-bulk-select").await;
    browser
        .click("#bulk-form button[name=scope][value=matching]")
        .await;
    let confirm = browser.wait_for_text("p.confirm", "50", false).await;
    assert!(confirm.contains("Cancel 50 runs"), "{confirm}");
    assert!(confirm.contains("status=delayed, tag=nightly"), "{confirm}");
    browser.screenshot("15-bulk-confirm").await;
    browser
        .click("form[action='/runs/bulk/start'] button[type=submit]")
        .await;
    browser.wait_for_text(".bulk-state", "done", true).await;
    assert_eq!(browser.text(".bulk-done").await, "50");
    browser.screenshot("16-bulk-done").await;
    for id in &delayed {
        assert_eq!(
            client.runs().retrieve(*id).await.unwrap().status,
            RunStatus::Canceled
        );
    }

    // Replay of two runs picked by hand.
    browser.goto(&format!("{base}/runs?tag=nightly")).await;
    let boxes = browser.all("#bulk-form tbody input[name=id]").await;
    assert_eq!(boxes.len(), 50);
    browser
        .click("#bulk-form tbody tr:nth-child(1) input[name=id]")
        .await;
    browser
        .click("#bulk-form tbody tr:nth-child(2) input[name=id]")
        .await;
    browser
        .select("#bulk-form select[name=action]", "replay")
        .await;
    browser
        .click("#bulk-form button[name=scope][value=selected]")
        .await;
    let confirm = browser.wait_for_text("p.confirm", "Replay", false).await;
    assert!(confirm.contains("Replay 2 runs"), "{confirm}");
    browser
        .click("form[action='/runs/bulk/start'] button[type=submit]")
        .await;
    browser.wait_for_text(".bulk-state", "done", true).await;
    assert_eq!(browser.text(".bulk-done").await, "2");

    stop_worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_session_token_or_from_another_site_are_refused() {
    let url = test_database().await;
    let client = kiln::Client::connect(&url).await.expect("a client");
    kiln_store::migrate::migrate(client.pool())
        .await
        .expect("migrations");
    let admin = client
        .keys()
        .create("ops", kiln::Scope::Admin)
        .await
        .expect("an admin key");
    let server = start_server(&url).await;
    let base = &server.base;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Signing in needs the form's token, tied to the browser's login cookie.
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a login cookie")
        .to_owned();
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token in the sign-in form")
        .to_owned();
    let without_token = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("key", admin.secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 403);
    let signed_in = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .form(&[("key", admin.secret.as_str()), ("_csrf", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let session = session.split(';').next().unwrap().to_owned();

    // Pages answer with the security headers and escape what they show.
    let runs = http
        .get(format!("{base}/runs?tag=%3Cscript%3Ealert(1)%3C/script%3E"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(runs.status(), 200);
    let csp = runs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let body = runs.text().await.unwrap();
    assert!(
        !body.contains("<script>alert(1)"),
        "the tag filter was printed raw"
    );
    assert!(
        body.contains("&lt;script&gt;alert(1)"),
        "the tag filter is shown escaped"
    );
    let csrf = body
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token in the page")
        .to_owned();

    // A state-changing form without the token, with another session's token, or sent from
    // another site is refused, and the queue stays active.
    client
        .trigger_by_id("dash-calendar-sync", serde_json::json!({}))
        .options(TriggerOptions::new().allow_unregistered())
        .await
        .expect("trigger");
    let pause = format!("{base}/queues/dash-calendar-sync/pause");
    let refused = http
        .post(&pause)
        .header("cookie", &session)
        .form(&[("_csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let cross_site = http
        .post(&pause)
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let queue = client
        .queues()
        .retrieve("dash-calendar-sync")
        .await
        .unwrap()
        .expect("the queue");
    assert!(!queue.paused, "a refused form changed the queue");
    let accepted = http
        .post(&pause)
        .header("cookie", &session)
        .header("origin", base.as_str())
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 303);
    assert!(
        client
            .queues()
            .retrieve("dash-calendar-sync")
            .await
            .unwrap()
            .expect("the queue")
            .paused
    );

    // A parent's page counts its children by status and links to them.
    let parent = client
        .trigger_by_id("dash-calendar-sync", serde_json::json!({}))
        .options(TriggerOptions::new().allow_unregistered())
        .await
        .expect("trigger");
    for i in 0..3 {
        let child = client
            .trigger_by_id("dash-calendar-sync", serde_json::json!({ "i": i }))
            .options(TriggerOptions {
                parent_run_id: Some(parent.id),
                allow_unregistered: true,
                ..TriggerOptions::default()
            })
            .await
            .expect("trigger a child");
        if i == 0 {
            client
                .runs()
                .cancel(child.id)
                .await
                .expect("cancel a child");
        }
    }
    let page = http
        .get(format!("{base}/runs/{}", parent.id))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Children (3)"), "{page}");
    assert!(page.contains("queued 2"), "{page}");
    assert!(page.contains("canceled 1"), "{page}");
    assert!(
        page.contains(&format!("/runs?parent={}&amp;status=canceled", parent.id)),
        "{page}"
    );

    // A revoked key's session ends.
    client.keys().revoke("ops").await.unwrap();
    tokio::time::sleep(kiln_server::KEY_LIST_TTL + Duration::from_millis(200)).await;
    let after = http
        .get(format!("{base}/runs"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 303);
    assert!(after.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/login"));
}
