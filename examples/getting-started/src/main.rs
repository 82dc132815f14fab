//! A thumbnail service: resizes images in the background, at most two at a time per user.

use std::time::Duration;

use kiln::{task, CancellationToken, Client, Context, Result, Worker};
use serde::{Deserialize, Serialize};

/// What the app needs in its task bodies: here, where thumbnails go.
#[derive(Clone)]
struct App {
    bucket: String,
}

/// An image to make a thumbnail of.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Image {
    user_id: String,
    name: String,
}

/// The thumbnail made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thumbnail {
    url: String,
}

task! {
    /// Makes a thumbnail; at most two run at once for any one user.
    MakeThumbnail {
        id: "make-thumbnail",
        queue: { concurrency_limit: 2 },
        retry: { max_attempts: 3, min_timeout: "1s" },
        max_duration: "1m",
        state: App,
        run: async |ctx: Context, image: Image| -> Result<Thumbnail> {
            let app = ctx.state::<App>();
            tokio::time::sleep(Duration::from_millis(200)).await; // the real work goes here
            Ok(Thumbnail { url: format!("{}/{}/{}-thumb.png", app.bucket, image.user_id, image.name) })
        }
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let url = std::env::var("DATABASE_URL")?;

    // The worker: usually a process of its own; here it runs beside the app.
    let worker = Worker::builder()
        .database_url(&url)
        .state(App {
            bucket: "s3://thumbs".into(),
        })
        .register(MakeThumbnail)
        .concurrency(8)
        .build()
        .await?;
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run_until(stop).await }
    });

    // The app: trigger runs and return; here it also waits for their thumbnails.
    let client = Client::connect(&url).await?;
    let mut runs = Vec::new();
    for (user, name) in [("ada", "a"), ("ada", "b"), ("ada", "c"), ("bob", "d")] {
        let image = Image {
            user_id: user.into(),
            name: name.into(),
        };
        let run = client
            .trigger::<MakeThumbnail>(image)
            .concurrency_key(user)
            .await?;
        runs.push(run.id);
    }
    for id in runs {
        let thumbnail = client
            .runs()
            .wait::<MakeThumbnail>(id, Duration::from_secs(30))
            .await?;
        println!("{}", thumbnail.url);
    }

    stop.cancel();
    running.await??;
    Ok(())
}
