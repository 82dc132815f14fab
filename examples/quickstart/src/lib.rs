//! Example tasks that `kiln dev` runs, so a newcomer sees runs flow: a welcome email that
//! sometimes fails and is retried, and an image resize limited to one run per user at a time.

#![forbid(unsafe_code)]

use std::time::Duration;

use kiln::{task, BatchItem, Client, ClientError, Context, Error, Result};
use serde::{Deserialize, Serialize};

/// A user to welcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelcomePayload {
    /// The user's id.
    pub user_id: u32,
    /// Where the email goes.
    pub email: String,
}

/// What sending produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelcomeSent {
    /// The mail provider's message id.
    pub message_id: String,
}

task! {
    /// Sends a welcome email; the provider fails one call in five, and Kiln retries it.
    pub SendWelcomeEmail {
        id: "send-welcome-email",
        queue: { concurrency_limit: 5 },
        retry: { max_attempts: 3, min_timeout: "500ms", max_timeout: "5s" },
        max_duration: "30s",
        run: async |ctx: Context, payload: WelcomePayload| -> Result<WelcomeSent> {
            tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(..250))).await;
            if fastrand::u8(..5) == 0 {
                return Err(Error::msg(format!("mail provider answered 503 for {}", payload.email)));
            }
            let message_id = format!("msg-{}-{}", payload.user_id, ctx.attempt());
            tracing::info!(email = %payload.email, %message_id, "welcome email sent");
            Ok(WelcomeSent { message_id })
        }
    }
}

/// An image to resize.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResizePayload {
    /// Owner of the image.
    pub user_id: u32,
    /// The image.
    pub image: String,
    /// Target width in pixels.
    pub width: u32,
}

/// Where the resized image went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resized {
    /// The resized image.
    pub image: String,
}

task! {
    /// Resizes an image; one resize per user at a time (the user id is the concurrency key).
    pub ResizeImage {
        id: "resize-image",
        queue: { concurrency_limit: 1 },
        max_duration: "1m",
        run: async |_ctx: Context, payload: ResizePayload| -> Result<Resized> {
            if payload.width == 0 {
                return Err(Error::abort("width must be positive"));
            }
            tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(..600))).await;
            let image = format!("{}@{}w", payload.image, payload.width);
            tracing::info!(%image, "image resized");
            Ok(Resized { image })
        }
    }
}

/// Registers the example tasks on a worker.
pub fn register(builder: kiln::WorkerBuilder) -> kiln::WorkerBuilder {
    builder.register(SendWelcomeEmail).register(ResizeImage)
}

/// Triggers a handful of example runs, as an app would on sign-ups and uploads.
pub async fn trigger_some(client: &Client, round: u32) -> std::result::Result<(), ClientError> {
    let signups = (0..3)
        .map(|i| {
            let user_id = round * 3 + i;
            BatchItem::new(WelcomePayload {
                user_id,
                email: format!("user{user_id}@example.com"),
            })
        })
        .collect();
    client.batch_trigger::<SendWelcomeEmail>(signups).await?;
    for width in [320, 1280] {
        let user_id = round % 2;
        client
            .trigger::<ResizeImage>(ResizePayload {
                user_id,
                image: format!("upload-{round}.png"),
                width,
            })
            .concurrency_key(format!("user-{user_id}"))
            .tag("uploads")
            .await?;
    }
    Ok(())
}
