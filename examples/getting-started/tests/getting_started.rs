//! docs/getting-started.md shows this app's files verbatim; the app runs and its limit holds.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The code block that follows `<!-- file: NAME -->` in the guide.
fn block_after(doc: &str, name: &str) -> String {
    let marker = format!("<!-- file: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("the guide shows {name}"));
    let rest = &doc[start + marker.len()..];
    let open = rest.find("```").expect("a code block");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    body[..body.find("```").expect("a closing fence")].to_owned()
}

#[test]
fn the_guide_shows_the_apps_files_as_they_are() {
    let doc = std::fs::read_to_string(root().join("../../docs/getting-started.md")).unwrap();
    let name = "src/main.rs";
    let file = std::fs::read_to_string(root().join(name)).unwrap();
    assert_eq!(
        block_after(&doc, name),
        file,
        "docs/getting-started.md shows {name} as it is"
    );
}

#[tokio::test]
async fn the_app_makes_its_thumbnails_two_at_a_time_per_user() {
    let dir = root().join("../../target/kiln-test-postgres");
    let server = kiln_devdb::server_for_tests(&dir).await.unwrap();
    let url = kiln_devdb::create_test_database(&server).await.unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_thumbnails"))
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "s3://thumbs/ada/a-thumb.png",
            "s3://thumbs/ada/b-thumb.png",
            "s3://thumbs/ada/c-thumb.png",
            "s3://thumbs/bob/d-thumb.png"
        ]
    );
    // Ada's three runs never ran more than two at a time (from their attempts' own times).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let most: i64 = sqlx::query_scalar(
        "WITH ev AS (SELECT a.started_at AS t, 1 AS d FROM kiln.attempts a JOIN kiln.runs r ON r.id = a.run_id
                      WHERE r.concurrency_key = 'ada'
                     UNION ALL
                     SELECT a.finished_at, -1 FROM kiln.attempts a JOIN kiln.runs r ON r.id = a.run_id
                      WHERE r.concurrency_key = 'ada')
         SELECT max(running) FROM (SELECT sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS running FROM ev) x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(most, 2, "two of Ada's thumbnails at once, never three");
}
