//! Forwarding to a Splunk HTTP Event Collector (HEC).
//!
//! Events are sent in batches (concatenated HEC event objects), gzip-compressed,
//! with `Authorization: Splunk <token>`. Throttling (429), server errors (5xx)
//! and network failures are retried with exponential back-off; any other 4xx
//! means Splunk refuses the data itself ([`HecError::Rejected`]: dead-letter it,
//! do not retry). With an acknowledgement channel configured, [`HecClient::send`]
//! returns only once Splunk reports the batch indexed, so a consumer that
//! commits offsets after `send` returned never commits past unindexed events.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Where and how to send.
#[derive(Clone, Debug)]
pub struct HecConfig {
    /// Collector base URL, e.g. `https://splunk.example.com:8088`.
    pub url: String,
    /// HEC token (never logged).
    pub token: String,
    /// Channel id for indexer acknowledgement; `None` sends without it.
    pub ack_channel: Option<String>,
    /// Attempts per batch before giving up with [`HecError::Unavailable`].
    pub max_attempts: u32,
    /// First retry delay.
    pub initial_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest wait for an indexer acknowledgement.
    pub ack_timeout: Duration,
    /// CA certificates (PEM) to trust besides the system's: Splunk's HEC
    /// ships with a certificate of Splunk's own CA, and many sites use an
    /// internal one. `None`: the system's roots only (`SSL_CERT_FILE`).
    pub ca_pem: Option<Vec<u8>>,
}

impl HecConfig {
    /// Defaults for `url` and `token`.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            ack_channel: None,
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(60),
            ca_pem: None,
        }
    }
}

/// One HEC event.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HecEvent {
    /// Event time, epoch seconds with millisecond fraction.
    pub time: f64,
    /// Host field (the device id).
    pub host: String,
    /// Source (e.g. `tributary:analyze`).
    pub source: String,
    /// Sourcetype (e.g. `tributary:aggregate`, `tributary:alert`).
    pub sourcetype: String,
    /// The record.
    pub event: Value,
}

/// Errors of forwarding.
#[derive(Debug, thiserror::Error)]
pub enum HecError {
    /// Splunk refused the data (4xx other than 429): retrying will not help.
    #[error("Splunk rejected the batch: {status} {body}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Splunk's answer.
        body: String,
    },
    /// Splunk unreachable, throttling or failing after every attempt: retry later.
    #[error("Splunk unavailable: {0}")]
    Unavailable(String),
}

/// A HEC client.
pub struct HecClient {
    http: reqwest::Client,
    cfg: HecConfig,
}

impl HecClient {
    /// A client for `cfg`.
    pub fn new(cfg: HecConfig) -> Result<Self, HecError> {
        let mut builder = reqwest::Client::builder().timeout(cfg.timeout);
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| HecError::Rejected {
                status: 0,
                body: format!("the Splunk CA certificates are not PEM: {e}"),
            })?;
            if certs.is_empty() {
                return Err(HecError::Rejected {
                    status: 0,
                    body: "the Splunk CA file holds no certificate".into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| HecError::Unavailable(e.to_string()))?;
        Ok(Self { http, cfg })
    }

    /// Send `events` as one batch; returns when Splunk accepted (and, with a
    /// channel, indexed) all of them.
    pub async fn send(&self, events: &[HecEvent]) -> Result<(), HecError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut raw = Vec::new();
        for e in events {
            serde_json::to_writer(&mut raw, e).map_err(|e| HecError::Rejected {
                status: 0,
                body: e.to_string(),
            })?;
            raw.push(b'\n');
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw)?;
        let body = gz.finish().map_err(|e| HecError::Unavailable(e.to_string()))?;

        let url = format!("{}/services/collector/event", self.cfg.url.trim_end_matches('/'));
        let mut delay = self.cfg.initial_backoff;
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts.max(1) {
            let mut req = self
                .http
                .post(&url)
                .header("authorization", format!("Splunk {}", self.cfg.token))
                .header("content-encoding", "gzip")
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(ch) = &self.cfg.ack_channel {
                req = req.header("x-splunk-request-channel", ch);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let text = resp.text().await.unwrap_or_default();
                    if (200..300).contains(&status) {
                        if self.cfg.ack_channel.is_some() {
                            let ack: Option<u64> = serde_json::from_str::<Value>(&text)
                                .ok()
                                .and_then(|v| v["ackId"].as_u64());
                            if let Some(id) = ack {
                                return self.wait_ack(id).await;
                            }
                        }
                        return Ok(());
                    }
                    if status != 429 && (400..500).contains(&status) {
                        return Err(HecError::Rejected { status, body: text });
                    }
                    last = format!("{status} {text}");
                    if let Some(s) = retry_after {
                        delay = delay.max(Duration::from_secs(s));
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(attempt, error = %last, "Splunk HEC send failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        Err(HecError::Unavailable(last))
    }

    async fn wait_ack(&self, id: u64) -> Result<(), HecError> {
        let url = format!("{}/services/collector/ack", self.cfg.url.trim_end_matches('/'));
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let resp = self
                .http
                .post(&url)
                .header("authorization", format!("Splunk {}", self.cfg.token))
                .header(
                    "x-splunk-request-channel",
                    self.cfg.ack_channel.as_deref().unwrap_or_default(),
                )
                .json(&serde_json::json!({"acks": [id]}))
                .send()
                .await;
            if let Ok(r) = resp
                && let Ok(v) = r.json::<Value>().await
                && v["acks"][id.to_string()].as_bool() == Some(true)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(HecError::Unavailable(format!(
                    "no indexer acknowledgement for ack id {id}"
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

impl From<std::io::Error> for HecError {
    fn from(e: std::io::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}
