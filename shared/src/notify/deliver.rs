//! One alert record to one channel: POSTed with its idempotency key and (for
//! a channel with a secret, PagerDuty's excepted) its signature, retried on
//! the [`Backoff`] schedule until it is delivered, the receiver refuses it
//! for good, or [`Backoff::give_up_after`] has passed, whatever comes first;
//! a stop ends the retries at once.
//!
//! What is retried: no answer (connection refused or reset, a timeout), 408,
//! 425, 429 and every 5xx, waiting at least what `Retry-After` asks (up to
//! the cap). Any other 4xx is a refusal: the body will not become acceptable
//! by sending it again, so it goes to the dead letters at once with the
//! receiver's answer. The caller (the notifier) commits an alert's offset
//! only once every channel's delivery is [`Outcome::Delivered`] or written
//! to the dead letters.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::sign::{HEADER, IDEMPOTENCY_HEADER, signature};
use super::{Channel, Format, format, idempotency_key};
use crate::records::Alert;
use crate::service::Shutdown;

/// Longest part of a receiver's answer kept with a dead letter, in bytes.
const ANSWER_KEPT: usize = 500;

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Attempts made (1: the first went through).
        attempts: u32,
    },
    /// The receiver refused it with a 4xx that retrying cannot change.
    Refused {
        /// Attempts made.
        attempts: u32,
        /// Its status.
        status: u16,
        /// The start of its answer.
        answer: String,
    },
    /// Not delivered within [`Backoff::give_up_after`].
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure: the status and answer, or the transport error.
        last_error: String,
        /// The last status, if the receiver answered at all.
        last_status: Option<u16>,
    },
    /// A stop came first: neither delivered nor given up on (the record is
    /// delivered again after the restart).
    Stopped {
        /// Attempts made.
        attempts: u32,
    },
}

/// What a test notification got ([`Deliverer::send_test`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestOutcome {
    /// Whether the receiver accepted it (2xx).
    pub delivered: bool,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Why it was not delivered.
    pub error: Option<String>,
    /// The test alert's id.
    pub alert_id: String,
}

/// Makes deliveries (one client, shared connections).
#[derive(Clone, Debug)]
pub struct Deliverer {
    client: reqwest::Client,
    backoff: Backoff,
}

/// Why an attempt failed, and whether another can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer, or one that may change: try again.
    Retry {
        /// The status and answer, or the transport error.
        error: String,
        /// The status, if the receiver answered.
        status: Option<u16>,
        /// How long the receiver asked to wait (`Retry-After`).
        after: Option<Duration>,
    },
    /// A 4xx that sending again cannot change.
    Refused {
        /// Its status.
        status: u16,
        /// The start of its answer.
        answer: String,
    },
}

impl Deliverer {
    /// A deliverer retrying on `backoff`, each attempt given `timeout`.
    pub fn new(backoff: Backoff, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("tributary-notify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, backoff })
    }

    /// The body and headers of `alert` for `channel`, of a device in `group`, at unix time `now`.
    pub fn request(channel: &Channel, alert: &Alert, group: &str, now: i64) -> (Vec<u8>, Vec<(&'static str, String)>) {
        let body = serde_json::to_vec(&format::body(channel, alert, group)).unwrap_or_default();
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            (IDEMPOTENCY_HEADER, idempotency_key(alert)),
        ];
        if let Some(secret) = &channel.spec.secret
            && channel.spec.format != Format::PagerDuty
        {
            headers.push((HEADER, signature(secret, now, &body)));
        }
        (body, headers)
    }

    /// The retry schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// One attempt to deliver `alert` to `channel`, without retries.
    pub async fn attempt(&self, channel: &Channel, alert: &Alert, group: &str) -> Result<(), Failure> {
        // Signed at each attempt: a retry an hour later is inside the window.
        let (body, headers) = Self::request(channel, alert, group, chrono::Utc::now().timestamp());
        let mut req = self.client.post(&channel.spec.url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(Failure::Retry {
                    // Without the URL: a Slack or Teams URL is a secret.
                    error: crate::telemetry::ErrorChain(&e.without_url()).to_string(),
                    status: None,
                    after: None,
                });
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let answer: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(ANSWER_KEPT)
            .collect();
        let code = status.as_u16();
        if status.is_server_error() || matches!(code, 408 | 425 | 429) {
            Err(Failure::Retry {
                error: format!("{code}: {answer}"),
                status: Some(code),
                after,
            })
        } else {
            Err(Failure::Refused { status: code, answer })
        }
    }

    /// Send `channel` a test notification from `who`, once, without retries
    /// (the operator sees the answer at once and tries again by hand); for
    /// PagerDuty, resolve the test incident right after.
    pub async fn send_test(&self, channel: &Channel, who: &str, now: chrono::DateTime<chrono::Utc>) -> TestOutcome {
        let alert = super::test_alert(channel, who, now);
        let group = crate::registry::DEFAULT_GROUP;
        let mut result = self.attempt(channel, &alert, group).await;
        if result.is_ok() && channel.spec.format == Format::PagerDuty {
            result = self.attempt(channel, &super::test_alert_resolved(&alert), group).await;
        }
        let (delivered, status, error) = match result {
            Ok(()) => (true, None, None),
            Err(Failure::Refused { status, answer }) => {
                (false, Some(status), Some(format!("refused with {status}: {answer}")))
            }
            Err(Failure::Retry { error, status, .. }) => (false, status, Some(error)),
        };
        TestOutcome {
            delivered,
            status,
            error,
            alert_id: alert.id,
        }
    }

    /// Deliver `alert` to `channel` (see the module docs).
    pub async fn deliver(&self, channel: &Channel, alert: &Alert, group: &str, stop: &Shutdown) -> Outcome {
        let started = Instant::now();
        let key = idempotency_key(alert);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = tokio::select! {
                _ = stop.wait() => return Outcome::Stopped { attempts },
                r = self.attempt(channel, alert, group) => match r {
                    Ok(()) => return Outcome::Delivered { attempts },
                    Err(f) => f,
                },
            };
            let (error, status, after) = match failure {
                Failure::Refused { status, answer } => {
                    return Outcome::Refused {
                        attempts,
                        status,
                        answer,
                    };
                }
                Failure::Retry { error, status, after } => (error, status, after),
            };
            let wait = self
                .backoff
                .delay(&key, attempts)
                .max(after.unwrap_or_default().min(self.backoff.cap));
            if started.elapsed() + wait > self.backoff.give_up_after {
                return Outcome::GaveUp {
                    attempts,
                    last_error: error,
                    last_status: status,
                };
            }
            tracing::debug!(channel = %channel.id, alert = %alert.id, attempts, retry_in_ms = wait.as_millis() as u64, error = %error, "delivery failed; retrying");
            tokio::select! {
                _ = stop.wait() => return Outcome::Stopped { attempts },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
