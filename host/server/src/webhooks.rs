//! Webhooks: signed messages about runs, delivered durably.
//!
//! When a run ends (`run.succeeded`, `run.failed`, `run.cancelled`) or
//! starts waiting for a signal (`run.waiting`), each endpoint that wants it
//! (`[[server.webhooks]]`, and the run's own `webhook` from its start
//! request) gets a message. Each message is recorded in the store before it
//! is sent, with every attempt (status, error, time), and retried with
//! exponential backoff and jitter until it is delivered or
//! [`MAX_ATTEMPTS`] have failed; a restarted server goes on with the
//! pending ones. `GET /v1/runs/{id}/webhooks` shows them.
//!
//! Messages follow the Standard Webhooks spec: headers `webhook-id` (the
//! same on every attempt), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed with the server's secret (`whsec_<base64>`, `plait webhooks
//! secret`). docs/api.md shows how a receiver verifies one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use plait::policy::WebhookEndpoint;
use plait::store::{Delivery, DeliveryAttempt, RunRecord, RunStore, StoreError};

/// Attempts before a message is given up on.
pub const MAX_ATTEMPTS: usize = 8;

/// The first retry's delay; each next one doubles (with jitter), up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest delay between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How long a receiver has to answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The webhook signing secret of a Plait home: `whsec_` and the base64 of
/// 32 random bytes, made on first use (mode 0600).
pub fn secret(path: &Path) -> std::io::Result<String> {
    match plait::files::read_to_string(path, plait::files::Kind::Config) {
        Ok(text) if text.trim().starts_with("whsec_") => return Ok(text.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "`{}` is not a webhook secret (`whsec_...`); remove it to make a new one",
                path.display()
            )));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options.open(path)?.write_all(secret.as_bytes())?;
    Ok(secret)
}

/// `v1,<signature>` of a message, per Standard Webhooks.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Makes, records and sends webhook messages.
pub struct Webhooks {
    store: Arc<dyn RunStore>,
    endpoints: Vec<WebhookEndpoint>,
    secret: String,
    retry_for: Option<Duration>,
    wake: tokio::sync::Notify,
}

impl Webhooks {
    /// Messages for `endpoints` (and runs' own URLs), signed with `secret`,
    /// each tried [`MAX_ATTEMPTS`] times, or for `retry_for` when set.
    pub fn new(
        store: Arc<dyn RunStore>,
        endpoints: Vec<WebhookEndpoint>,
        secret: String,
        retry_for: Option<Duration>,
    ) -> Arc<Webhooks> {
        Arc::new(Webhooks {
            store,
            endpoints,
            secret,
            retry_for,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Records a message about `run` for every endpoint that wants `event`
    /// (`detail` goes into its data, such as the step a run waits at) and
    /// wakes the sender. A message made before for the same run, event,
    /// detail and endpoint is not made again.
    pub fn notify(
        &self,
        run: &RunRecord,
        event: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut urls: Vec<String> = self
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.wants(&run.workflow.name, event))
            .map(|endpoint| endpoint.url.clone())
            .collect();
        if let Some(url) = run_webhook(self.store.as_ref(), &run.id)? {
            urls.push(url);
        }
        if urls.is_empty() {
            return Ok(());
        }
        let existing = self.store.deliveries(&run.id)?;
        let now = plait::clock::now_ms();
        for url in urls {
            // One message per run, event, detail and endpoint: a run that
            // waits at a step is told once however often it is set aside;
            // a run that ends again after a retry is a new message.
            let when = if event == "run.waiting" {
                0
            } else {
                run.updated_at_ms
            };
            let dedupe = format!("{event}|{}|{when}|{url}", detail.unwrap_or(""));
            if existing
                .iter()
                .any(|delivery| delivery.payload["dedupe"] == dedupe.as_str())
            {
                continue;
            }
            let mut data = serde_json::to_value(super::api::run_view(run)).unwrap_or(Value::Null);
            if let (Some(object), Some(detail)) = (data.as_object_mut(), detail) {
                object.insert("waiting_at".to_owned(), detail.into());
            }
            let delivery = Delivery {
                id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                run_id: run.id.clone(),
                url,
                event: event.to_owned(),
                payload: json!({
                    "type": event,
                    "timestamp": super::api::time_text(now),
                    "data": data,
                    "dedupe": dedupe,
                }),
                created_at_ms: now,
                state: "pending".to_owned(),
                next_at_ms: now,
                attempts: Vec::new(),
            };
            self.store.put_delivery(&delivery)?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Sends pending messages as they fall due, until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        // Attempts a stopped server left in flight are due again.
        if let Ok(pending) = self.store.pending_deliveries() {
            for mut delivery in pending {
                if delivery.next_at_ms == u64::MAX {
                    delivery.next_at_ms = plait::clock::now_ms();
                    let _ = self.store.put_delivery(&delivery);
                }
            }
        }
        loop {
            let now = plait::clock::now_ms();
            let mut next = now + 1000;
            match self.store.pending_deliveries() {
                Ok(pending) => {
                    for delivery in pending {
                        if delivery.next_at_ms <= now {
                            let this = self.clone();
                            tokio::spawn(async move { this.attempt(delivery).await });
                        } else {
                            next = next.min(delivery.next_at_ms);
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(target: "plait::server", error = %error, "reading pending webhooks failed");
                }
            }
            let wait = Duration::from_millis(next.saturating_sub(plait::clock::now_ms()).max(10));
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt at `delivery`; records it and schedules the next.
    async fn attempt(&self, mut delivery: Delivery) {
        // Scheduled far ahead while in flight, so that the loop does not
        // send it twice.
        delivery.next_at_ms = u64::MAX;
        if self.store.put_delivery(&delivery).is_err() {
            return;
        }
        let mut body = delivery.payload.clone();
        if let Some(object) = body.as_object_mut() {
            object.remove("dedupe");
        }
        let body = body.to_string();
        let timestamp = plait::clock::now_ms() / 1000;
        let started = std::time::Instant::now();
        let outcome = self.send(&delivery, timestamp, body).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, error) = match outcome {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (
                Some(status),
                Some(format!("the receiver answered {status}")),
            ),
            Err(error) => (None, Some(error)),
        };
        delivery.attempts.push(DeliveryAttempt {
            at_ms: plait::clock::now_ms(),
            status,
            error: error.clone(),
            duration_ms,
        });
        match error {
            None => {
                delivery.state = "delivered".to_owned();
                delivery.next_at_ms = 0;
                tracing::info!(target: "plait::server", run_id = %delivery.run_id, message = %delivery.id, url = %delivery.url, event = %delivery.event, "webhook delivered");
            }
            Some(error)
                if gives_up(
                    delivery.attempts.len(),
                    delivery.created_at_ms,
                    plait::clock::now_ms(),
                    self.retry_for,
                ) =>
            {
                delivery.state = "failed".to_owned();
                delivery.next_at_ms = 0;
                tracing::warn!(target: "plait::server", run_id = %delivery.run_id, message = %delivery.id, url = %delivery.url, error = %error, attempts = delivery.attempts.len(), "webhook given up");
            }
            Some(error) => {
                let delay = backoff(delivery.attempts.len());
                delivery.next_at_ms = plait::clock::now_ms() + delay.as_millis() as u64;
                tracing::info!(target: "plait::server", run_id = %delivery.run_id, message = %delivery.id, url = %delivery.url, error = %error, retry_in_ms = delay.as_millis() as u64, "webhook not delivered; will retry");
            }
        }
        if let Err(error) = self.store.put_delivery(&delivery) {
            tracing::error!(target: "plait::server", error = %error, "recording a webhook attempt failed");
        }
        self.wake.notify_one();
    }

    async fn send(&self, delivery: &Delivery, timestamp: u64, body: String) -> Result<u16, String> {
        let signature = sign(&self.secret, &delivery.id, timestamp, body.as_bytes());
        let request = http::Request::post(&delivery.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("plait/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(bytes::Bytes::from(body))
            .map_err(|error| format!("the URL cannot be used: {error}"))?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, plait::telemetry::otlp::send(request)).await {
            Err(_) => Err(format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(response)) => Ok(response.status().as_u16()),
        }
    }
}

/// Whether a message that failed `attempts` times, made at `created_ms`,
/// is given up on at `now_ms`: after [`MAX_ATTEMPTS`], or with
/// `retry_for`, once it is that old (however many attempts that took).
fn gives_up(attempts: usize, created_ms: u64, now_ms: u64, retry_for: Option<Duration>) -> bool {
    match retry_for {
        None => attempts >= MAX_ATTEMPTS,
        Some(horizon) => now_ms.saturating_sub(created_ms) >= horizon.as_millis() as u64,
    }
}

/// The delay before attempt `failed + 1`: doubling from a second, at most
/// an hour, times a random factor in [0.5, 1.5) so that receivers coming
/// back are not hit all at once.
fn backoff(failed: usize) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << failed.saturating_sub(1).min(20));
    base.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64())
}

/// The key under which a run's own webhook URL is kept.
const SUBSCRIPTION: &str = "subscription";

/// Keeps `url` as run `run_id`'s own webhook.
pub fn subscribe(store: &dyn RunStore, run_id: &str, url: &str) -> Result<(), StoreError> {
    store.put_delivery(&Delivery {
        id: SUBSCRIPTION.to_owned(),
        run_id: run_id.into(),
        url: url.to_owned(),
        event: String::new(),
        payload: Value::Null,
        created_at_ms: plait::clock::now_ms(),
        state: "subscription".to_owned(),
        next_at_ms: 0,
        attempts: Vec::new(),
    })
}

/// Run `run_id`'s own webhook URL, if it gave one.
fn run_webhook(store: &dyn RunStore, run_id: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .deliveries(run_id)?
        .into_iter()
        .find(|delivery| delivery.id == SUBSCRIPTION)
        .map(|delivery| delivery.url))
}

/// The messages of a run (without its subscription record).
pub fn messages(store: &dyn RunStore, run_id: &str) -> Result<Vec<Delivery>, StoreError> {
    Ok(store
        .deliveries(run_id)?
        .into_iter()
        .filter(|delivery| delivery.id != SUBSCRIPTION)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn messages_are_given_up_after_their_attempts_or_their_horizon() {
        assert!(!gives_up(MAX_ATTEMPTS - 1, 0, 10, None));
        assert!(gives_up(MAX_ATTEMPTS, 0, 10, None));
        // Store and forward: a week's horizon outlasts any attempt count
        // while the uplink is down, and ends there.
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        assert!(!gives_up(40, 0, 6 * 24 * 3600 * 1000, week));
        assert!(gives_up(41, 0, 7 * 24 * 3600 * 1000, week));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for failed in 1..=30 {
            let delay = backoff(failed);
            let base = FIRST_BACKOFF
                .saturating_mul(1 << (failed - 1).min(20))
                .min(MAX_BACKOFF);
            assert!(
                delay >= base.mul_f64(0.5) && delay < base.mul_f64(1.5),
                "{failed}: {delay:?}"
            );
        }
    }
}
