//! The `kiln` binary end to end: the newcomer's `kiln dev`, and the operator commands with their
//! JSON output and exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn kiln(url: &str, args: &[&str]) -> Output {
    Command::new(KILN)
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .output()
        .expect("run kiln")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "kiln failed: {}", stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
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

#[test]
fn kiln_dev_without_database_url_starts_postgres_and_processes_runs() {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kiln-dev-test");
    let _ = std::fs::remove_dir_all(&data_dir);
    let output = Command::new(KILN)
        .args(["dev", "--run-for", "8s", "--data-dir"])
        .arg(&data_dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kiln dev");
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "kiln dev failed: {}\n{out}",
        stderr(&output)
    );
    assert!(out.contains("Postgres: private server"), "{out}");
    assert!(out.contains("API: http://127.0.0.1:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("development key") && l.contains("kiln_sk_")),
        "{out}"
    );
    let last = out
        .lines()
        .rev()
        .find(|l| l.starts_with("runs:"))
        .unwrap_or_else(|| panic!("no run summary: {out}"));
    let completed: u32 = last
        .split(", ")
        .find_map(|part| part.trim_start_matches("runs: ").strip_suffix(" completed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        completed >= 5,
        "kiln dev completed only {completed} runs: {last}"
    );
    // The Tuturuuu example ran: the full sync fanned out one sync per seeded workspace.
    let count = |task: &str| -> u32 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{task}: ")))
            .and_then(|rest| rest.split(", ").find_map(|p| p.strip_suffix(" completed")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        out.contains("Calendar provider: http://127.0.0.1:"),
        "{out}"
    );
    assert!(count("google-calendar-full-sync") >= 1, "{out}");
    assert!(count("google-calendar-sync") >= 5, "{out}");
    assert!(count("schedule-task") >= 5, "{out}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn operators_trigger_inspect_pause_and_cancel_runs_from_the_cli() {
    let url = test_database().await;

    let refused = kiln(
        &url,
        &["trigger", "schedule-task", "--payload", r#"{"ws_id":"w1"}"#],
    );
    assert_eq!(
        refused.status.code(),
        Some(3),
        "unregistered task: {}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("not registered"),
        "{}",
        stderr(&refused)
    );

    let bad = kiln(
        &url,
        &["trigger", "schedule-task", "--payload", "{not json"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));

    let triggered = json(&kiln(
        &url,
        &[
            "trigger",
            "schedule-task",
            "--payload",
            r#"{"ws_id":"w1"}"#,
            "--key",
            "w1",
            "--tag",
            "cli",
            "--allow-unregistered",
            "--json",
        ],
    ));
    let id = triggered["id"].as_str().expect("an id").to_owned();
    assert_eq!(triggered["is_cached"], false);

    let shown = json(&kiln(&url, &["runs", "show", &id, "--json"]));
    assert_eq!(shown["status"], "queued");
    assert_eq!(shown["payload"]["ws_id"], "w1");
    assert_eq!(shown["concurrency_key"], "w1");

    let traced = json(&kiln(
        &url,
        &[
            "trigger",
            "schedule-task",
            "--payload",
            r#"{"ws_id":"w2"}"#,
            "--traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "--allow-unregistered",
            "--json",
        ],
    ));
    let traced = json(&kiln(
        &url,
        &["runs", "show", traced["id"].as_str().unwrap(), "--json"],
    ));
    assert_eq!(
        traced["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(
        kiln(&url, &["runs", "cancel", traced["id"].as_str().unwrap()])
            .status
            .success()
    );

    let listed = json(&kiln(
        &url,
        &[
            "runs", "list", "--status", "queued", "--tag", "cli", "--json",
        ],
    ));
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1));
    let bad_status = kiln(&url, &["runs", "list", "--status", "done"]);
    assert_eq!(bad_status.status.code(), Some(2));

    assert!(kiln(&url, &["queues", "pause", "schedule-task"])
        .status
        .success());
    let queues = json(&kiln(&url, &["queues", "list", "--json"]));
    assert_eq!(queues[0]["name"], "schedule-task");
    assert_eq!(queues[0]["paused"], true);
    assert_eq!(queues[0]["queued"], 1);
    assert!(kiln(&url, &["queues", "limit", "schedule-task", "4"])
        .status
        .success());
    let queues = json(&kiln(&url, &["queues", "list", "--json"]));
    assert_eq!(queues[0]["limit_override"], 4);
    let missing_queue = kiln(&url, &["queues", "resume", "nope"]);
    assert_eq!(missing_queue.status.code(), Some(3));

    assert!(kiln(&url, &["runs", "reschedule", &id, "--delay", "1h"])
        .status
        .success());
    assert_eq!(
        json(&kiln(&url, &["runs", "show", &id, "--json"]))["status"],
        "delayed"
    );

    let canceled = json(&kiln(&url, &["runs", "cancel", &id, "--json"]));
    assert_eq!(canceled["canceled"], true);
    assert_eq!(canceled["previous_status"], "delayed");
    let again = kiln(&url, &["runs", "cancel", &id, "--json"]);
    assert_eq!(
        again.status.code(),
        Some(4),
        "cancelling a finished run is a conflict"
    );
    assert!(
        stderr(&again).contains("already finished as canceled"),
        "{}",
        stderr(&again)
    );

    let moved = kiln(&url, &["runs", "reschedule", &id, "--delay", "0s"]);
    assert_eq!(
        moved.status.code(),
        Some(4),
        "a canceled run cannot move: {}",
        stderr(&moved)
    );

    let replayed = json(&kiln(&url, &["runs", "replay", &id, "--json"]));
    let replay = json(&kiln(
        &url,
        &["runs", "show", replayed["id"].as_str().unwrap(), "--json"],
    ));
    assert_eq!(replay["replay_of"], id.as_str());

    let missing = kiln(
        &url,
        &["runs", "show", "01a1fc67-69e3-7dc5-a4eb-7fa59e463625"],
    );
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );

    let no_url = Command::new(KILN)
        .args(["runs", "list"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(no_url.status.code(), Some(2));
    assert!(
        stderr(&no_url).contains("DATABASE_URL is not set"),
        "{}",
        stderr(&no_url)
    );
}

#[tokio::test]
async fn operators_create_list_deactivate_and_delete_schedules_from_the_cli() {
    use kiln::Task;
    let url = test_database().await;
    let client = kiln::Client::connect(&url).await.unwrap();
    client.migrate().await.unwrap();
    kiln_store::task::task_register(
        client.pool(),
        &kiln_tuturuuu::GoogleCalendarFullSync::DEFINITION,
        None,
    )
    .await
    .unwrap();
    let task = kiln_tuturuuu::GoogleCalendarFullSync::ID;

    let bad = kiln(
        &url,
        &[
            "schedules",
            "create",
            "--task",
            task,
            "--cron",
            "0 25 * * *",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("\"0 25 * * *\"") && stderr(&bad).contains("hour field"),
        "{}",
        stderr(&bad)
    );
    let unknown = kiln(
        &url,
        &[
            "schedules",
            "create",
            "--task",
            "no-such-task",
            "--cron",
            "0 * * * *",
        ],
    );
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));

    let created = json(&kiln(
        &url,
        &[
            "schedules",
            "create",
            "--task",
            task,
            "--cron",
            "30 2 * * *",
            "--timezone",
            "Europe/Berlin",
            "--external-id",
            "ws_1",
            "--dedup-key",
            "ws_1-nightly",
            "--json",
        ],
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["timezone"], "Europe/Berlin");
    assert_eq!(created["upcoming"].as_array().unwrap().len(), 5);

    let listed = json(&kiln(&url, &["schedules", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let table = kiln(&url, &["schedules", "list"]);
    assert!(stdout(&table).contains("30 2 * * *"), "{}", stdout(&table));

    let off = kiln(&url, &["schedules", "deactivate", &id]);
    assert!(off.status.success());
    assert!(stdout(&off).contains("inactive"), "{}", stdout(&off));
    let deleted = kiln(&url, &["schedules", "delete", &id]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let gone = kiln(&url, &["schedules", "show", &id]);
    assert_eq!(gone.status.code(), Some(3));
    assert!(
        stderr(&gone).contains("does not exist"),
        "{}",
        stderr(&gone)
    );
}

#[tokio::test]
async fn operators_create_list_and_revoke_api_keys_and_read_the_audit_log() {
    let url = test_database().await;
    assert!(kiln(&url, &["migrate"]).status.success());
    let created = kiln(
        &url,
        &["keys", "create", "--name", "nextjs", "--scope", "trigger"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let secret = stdout(&created).trim().to_owned();
    assert!(
        secret.starts_with("kiln_sk_") && secret.len() == "kiln_sk_".len() + 64,
        "{secret}"
    );
    assert!(stderr(&created).contains("shown only now"));

    let listed = kiln(&url, &["keys", "list", "--json"]);
    let keys = json(&listed);
    assert_eq!(keys[0]["name"], "nextjs");
    assert_eq!(keys[0]["scope"], "trigger");
    assert!(secret.starts_with(keys[0]["prefix"].as_str().unwrap()));
    assert!(
        !stdout(&listed).contains(&secret),
        "a listing never shows a secret"
    );

    let twice = kiln(&url, &["keys", "create", "--name", "nextjs"]);
    assert_eq!(twice.status.code(), Some(4), "{}", stderr(&twice));
    let bad_scope = kiln(&url, &["keys", "create", "--name", "x", "--scope", "root"]);
    assert_eq!(bad_scope.status.code(), Some(2));
    assert!(
        stderr(&bad_scope).contains("trigger, read or admin"),
        "{}",
        stderr(&bad_scope)
    );

    assert!(kiln(&url, &["keys", "revoke", "nextjs"]).status.success());
    let again = kiln(&url, &["keys", "revoke", "nextjs"]);
    assert_eq!(again.status.code(), Some(3));

    let audit = json(&kiln(&url, &["audit", "--json"]));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.create"]);
    assert!(audit[0]["actor"].as_str().unwrap().starts_with("cli:"));
}

#[tokio::test]
async fn kiln_runs_logs_prints_a_runs_lines_in_order() {
    let url = test_database().await;
    assert!(kiln(&url, &["migrate"]).status.success());
    let triggered = json(&kiln(
        &url,
        &[
            "trigger",
            "logged-task",
            "--payload",
            "{}",
            "--allow-unregistered",
            "--json",
        ],
    ));
    let id: uuid::Uuid = triggered["id"].as_str().unwrap().parse().unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let line = |seq: u32, level: kiln::LogLevel, message: &str, fields: serde_json::Value| {
        kiln_store::run_log::NewLogLine {
            run_id: id,
            attempt: 1,
            seq,
            at: chrono::Utc::now(),
            level,
            message: message.into(),
            fields: fields.to_string(),
        }
    };
    kiln_store::run_log::run_log_insert_many(
        &pool,
        &[
            line(1, kiln::LogLevel::Info, "starting", serde_json::json!({})),
            line(
                2,
                kiln::LogLevel::Warn,
                "token \u{1b}[31mexpired",
                serde_json::json!({"ws": "w1"}),
            ),
        ],
    )
    .await
    .unwrap();
    let shown = kiln(&url, &["runs", "logs", &id.to_string()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let out = stdout(&shown);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("#1 info  starting"), "{out}");
    assert!(
        lines[1].contains("warn") && lines[1].contains(r#"{"ws":"w1"}"#),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "escape sequences are shown escaped: {out}"
    );
    let as_json = kiln(&url, &["runs", "logs", &id.to_string(), "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&as_json).lines().next().unwrap()).unwrap();
    assert_eq!(first["message"], "starting");
    assert_eq!(first["level"], "info");
    let missing = kiln(
        &url,
        &["runs", "logs", "0190a8a6-0000-7000-8000-000000000000"],
    );
    assert_eq!(missing.status.code(), Some(3));
}

#[tokio::test]
async fn run_tables_show_control_characters_escaped() {
    let url = test_database().await;
    assert!(kiln(&url, &["migrate"]).status.success());
    let key = "ws\u{1b}[2J1";
    let triggered = json(&kiln(
        &url,
        &[
            "trigger",
            "odd-task",
            "--key",
            key,
            "--allow-unregistered",
            "--json",
        ],
    ));
    let id = triggered["id"].as_str().unwrap().to_owned();
    for args in [vec!["runs", "show", id.as_str()], vec!["runs", "list"]] {
        let shown = kiln(&url, &args);
        assert!(shown.status.success(), "{}", stderr(&shown));
        let out = stdout(&shown);
        assert!(
            !out.contains('\u{1b}'),
            "{args:?} printed a raw escape: {out}"
        );
        assert!(out.contains(r"ws\u{1b}[2J1"), "{args:?}: {out}");
    }
}

#[tokio::test]
async fn bad_input_and_a_missing_database_get_errors_a_newcomer_can_act_on() {
    // The top-level help names every command.
    let help = Command::new(KILN).arg("--help").output().unwrap();
    let text = stdout(&help);
    for command in [
        "dev",
        "migrate",
        "runs",
        "queues",
        "schedules",
        "tasks",
        "trigger",
        "serve",
        "keys",
        "audit",
        "workers",
        "bench",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lists {command}: {text}"
        );
    }

    // Nothing listens on this port: the error names host and port, at once.
    let started = std::time::Instant::now();
    let refused = kiln("postgres://postgres@127.0.0.1:1/kiln", &["runs", "list"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cannot connect to PostgreSQL at 127.0.0.1:1"),
        "{}",
        stderr(&refused)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A database without Kiln's schema: "run `kiln migrate`", as JSON with --json.
    let url = test_database().await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("DROP SCHEMA kiln CASCADE")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let unmigrated = kiln(&url, &["runs", "list", "--json"]);
    assert_eq!(unmigrated.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&unmigrated.stdout)
        .unwrap_or_else(|e| panic!("a JSON error ({e}): {}", stdout(&unmigrated)));
    assert_eq!(error["error"]["code"], "unavailable");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("run `kiln migrate`"),
        "{error}"
    );
    let plain = kiln(&url, &["runs", "list"]);
    assert!(stderr(&plain).contains("run `kiln migrate`"));

    assert!(kiln(&url, &["migrate"]).status.success());
    // --payload @file and - (standard input).
    let file = std::env::temp_dir().join(format!("kiln-payload-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"ws_id": "from-file"}"#).unwrap();
    let from_file = kiln(
        &url,
        &[
            "trigger",
            "echo",
            "--allow-unregistered",
            "--payload",
            &format!("@{}", file.display()),
            "--json",
        ],
    );
    let id = json(&from_file)["id"].as_str().unwrap().to_owned();
    let shown = json(&kiln(&url, &["runs", "show", &id, "--json"]));
    assert_eq!(shown["payload"]["ws_id"], "from-file");
    let mut child = Command::new(KILN)
        .args([
            "trigger",
            "echo",
            "--allow-unregistered",
            "--payload",
            "-",
            "--json",
        ])
        .env("DATABASE_URL", &url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), br#"{"ws_id": "from-stdin"}"#)
        .unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    let id = json(&from_stdin)["id"].as_str().unwrap().to_owned();
    let shown = json(&kiln(&url, &["runs", "show", &id, "--json"]));
    assert_eq!(shown["payload"]["ws_id"], "from-stdin");
    // A listing never loads payloads (runs show does).
    let listed = json(&kiln(&url, &["runs", "list", "--json"]));
    assert!(listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["payload"].is_null() && r["output"].is_null()));
    let missing = kiln(
        &url,
        &["trigger", "echo", "--payload", "@/no/such/file.json"],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read \"/no/such/file.json\""));
    // Usage errors too are JSON with --json.
    let missing = kiln(
        &url,
        &[
            "trigger",
            "echo",
            "--payload",
            "@/no/such/file.json",
            "--json",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    let error: serde_json::Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(error["error"]["code"], "invalid_request");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot read \"/no/such/file.json\""));

    // Bad options are refused by the one validator, named, exit 2, JSON with --json.
    let refused = kiln(
        &url,
        &[
            "trigger",
            "echo",
            "--allow-unregistered",
            "--queue",
            "elsewhere",
            "--json",
        ],
    );
    assert_eq!(refused.status.code(), Some(3), "{}", stdout(&refused));
    let error: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue \"elsewhere\" does not exist"));
    assert!(
        kiln(&url, &["queues", "create", "elsewhere", "--limit", "2"])
            .status
            .success()
    );
    let accepted = kiln(
        &url,
        &[
            "trigger",
            "echo",
            "--allow-unregistered",
            "--queue",
            "elsewhere",
            "--json",
        ],
    );
    assert!(accepted.status.success(), "{}", stderr(&accepted));
    let long_key = "k".repeat(300);
    let too_long = kiln(
        &url,
        &[
            "trigger",
            "echo",
            "--allow-unregistered",
            "--key",
            &long_key,
        ],
    );
    assert_eq!(too_long.status.code(), Some(2));
    assert!(stderr(&too_long).contains("concurrency_key is 300 bytes, over the limit of 255"));
    let _ = std::fs::remove_file(file);
}

#[test]
fn schedules_preview_shows_fire_times_from_any_date_across_a_dst_change() {
    let output = Command::new(KILN)
        .args([
            "schedules",
            "preview",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-03-28",
            "--count",
            "3",
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        json(&output),
        serde_json::json!([
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]),
        "02:30, then 03:00 right after the spring-forward change, then 02:30 summer time"
    );
    let table = Command::new(KILN)
        .args([
            "schedules",
            "preview",
            "*/20 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-03-29",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&table).contains("2026-03-30 02:00 CEST"),
        "{}",
        stdout(&table)
    );
    let bad = Command::new(KILN)
        .args(["schedules", "preview", "61 * * * *"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("minute field \"61\""),
        "{}",
        stderr(&bad)
    );
}
