//! The notification channels' API, for operators only (a Slack or Teams
//! URL is itself a secret, and a channel's secret is never returned: only
//! whether it has one): list (with each channel's backlog: deliveries
//! queued and not yet made), create or replace, delete, send a test
//! notification, and each channel's dead letters (the deliveries given up
//! on, newest first), which can be sent again.
//!
//! Guarantees: an invalid channel gets a 422 naming the field and nothing is
//! written; a body that is not a channel a 400; writing one exactly as it is
//! changes nothing (200). Without a channel store (`Deps::channels` is
//! `None`) the endpoints answer 501. Process's notifier reads the channels
//! at each batch and its dispatcher before each attempt, so a change
//! applies from the next delivery on.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tributary_shared::notify::backoff::Backoff;
use tributary_shared::notify::deliver::{Deliverer, TestOutcome};
use tributary_shared::notify::queue::{Backlog, MAX_RESEND, Queued, Resent};
use tributary_shared::notify::store::{ChannelStore, DeadLetter, MAX_CHANNELS, MAX_DEAD_LETTERS};
use tributary_shared::notify::{Channel, ChannelSpec, MAX_CHANNEL_ID_LEN};
use tributary_shared::records::{Alert, AlertState};
use tributary_shared::registry::DEFAULT_GROUP;
use tributary_shared::results::{StoredAlert, Transition};
use tributary_shared::rules::Written;

use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::{Dashboard, api};

fn store<'a>(st: &'a Dashboard, headers: &HeaderMap) -> Result<(&'a dyn ChannelStore, String), ApiError> {
    let who = st.auth.operator(headers)?;
    let channels = st.channels.as_deref().ok_or(ApiError::NotConfigured(
        "this dashboard has no notification channel store",
    ))?;
    Ok((channels, who))
}

fn check_channel_id(id: &str) -> Result<(), ApiError> {
    if id.len() <= MAX_CHANNEL_ID_LEN && tributary_shared::model::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadParam {
            param: "id",
            reason: format!("must be 1-{MAX_CHANNEL_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
        })
    }
}

/// Every channel.
#[derive(Debug, Serialize)]
pub struct ListBody {
    channels: Vec<Channel>,
    /// The channels with deliveries queued and not yet made.
    backlog: Vec<Backlog>,
    /// The most channels there can be.
    max: usize,
}

/// `GET /api/channels`: every channel, by id (operator).
pub async fn list(State(st): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Json<ListBody>, ApiError> {
    let (channels, _) = store(&st, &headers)?;
    Ok(Json(ListBody {
        channels: channels.list().await?,
        backlog: channels.backlog().await?,
        max: MAX_CHANNELS,
    }))
}

/// `PUT /api/channels/{id}` with a channel (`{"url", "format", "secret"?,
/// "groups"?, "minSeverity"?, "enabled"?}`): create (201) or replace (200).
pub async fn put(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Channel>), ApiError> {
    let (channels, who) = store(&st, &headers)?;
    check_channel_id(&id)?;
    let spec: ChannelSpec = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let (channel, written) = channels.put(&id, &spec, Utc::now()).await?;
    if written != Written::Unchanged {
        // Never the URL or the secret: either can be what grants access.
        tracing::info!(channel = %channel.id, format = channel.spec.format.as_str(), written = ?written, operator = %who, "notification channel written by an operator");
    }
    let status = if written == Written::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(channel)))
}

/// `DELETE /api/channels/{id}`: delete a channel and its dead letters (204).
pub async fn delete(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (channels, who) = store(&st, &headers)?;
    check_channel_id(&id)?;
    channels.delete(&id).await?;
    tracing::info!(channel = %id, operator = %who, "notification channel deleted by an operator");
    Ok(StatusCode::NO_CONTENT)
}

/// The query of the dead letters.
#[derive(Debug, Default, Deserialize)]
pub struct LetterParams {
    limit: Option<String>,
}

/// A channel's dead letters.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LettersBody {
    dead_letters: Vec<DeadLetter>,
    /// How many the channel has in all.
    total: u64,
}

/// `GET /api/channels/{id}/dead-letters?limit=`: what was given up on, newest first.
pub async fn dead_letters(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(p): Query<LetterParams>,
) -> Result<Json<LettersBody>, ApiError> {
    let (channels, _) = store(&st, &headers)?;
    check_channel_id(&id)?;
    let limit = api::parse_limit(p.limit.as_deref(), 100, i64::from(MAX_DEAD_LETTERS))?;
    if channels.get(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("channel '{id}'")));
    }
    let (dead_letters, total) = channels
        .dead_letters(&id, u32::try_from(limit).unwrap_or(MAX_DEAD_LETTERS))
        .await?;
    Ok(Json(LettersBody { dead_letters, total }))
}

/// Longest key a resend takes.
const MAX_KEY_LEN: usize = 256;

/// What to send again.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// The dead letters' keys (absent: all of the channel's, oldest first;
    /// `null` is refused, not taken for "all").
    #[serde(default, deserialize_with = "present")]
    keys: Option<Vec<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Vec::deserialize(d).map(Some)
}

/// `POST /api/channels/{id}/dead-letters/resend` (body optional:
/// `{"keys": [...]}`): move dead letters back to the end of the channel's
/// queue, to be delivered again at once (at most 1000 per call).
pub async fn resend(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Resent>, ApiError> {
    let (channels, who) = store(&st, &headers)?;
    check_channel_id(&id)?;
    let asked: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?
    };
    if let Some(keys) = &asked.keys {
        if keys.is_empty() || keys.len() > MAX_RESEND as usize {
            return Err(ApiError::BadBody(format!(
                "keys: give 1-{MAX_RESEND} keys, or none to send every dead letter again"
            )));
        }
        // Keys are `<alert id>.<state>.<ms>`: anything else names no letter.
        let valid = |k: &str| {
            (1..=MAX_KEY_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        };
        if let Some(bad) = keys.iter().find(|k| !valid(k)) {
            return Err(ApiError::BadBody(format!(
                "keys: {bad:?} is not a dead letter's key (1-{MAX_KEY_LEN} characters of A-Z a-z 0-9 . _ : -)"
            )));
        }
    }
    let done = channels.resend(&id, asked.keys.as_deref(), Utc::now()).await?;
    tracing::info!(channel = %id, resent = done.resent, not_resendable = done.not_resendable, operator = %who, "dead letters sent again by an operator");
    Ok(Json(done))
}

/// `POST /api/channels/{id}/test`: send the channel one test notification
/// now (no retries) and answer what the receiver did; 200 either way.
pub async fn test(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    let (channels, who) = store(&st, &headers)?;
    check_channel_id(&id)?;
    let channel = channels
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("channel '{id}'")))?;
    let deliverer = Deliverer::new(Backoff::default(), std::time::Duration::from_secs(10)).map_err(|e| {
        tracing::error!(error = %tributary_shared::telemetry::ErrorChain(&e), "building the HTTP client failed");
        ApiError::Unavailable
    })?;
    let outcome = deliverer.send_test(&channel, &who, Utc::now()).await;
    tracing::info!(channel = %id, delivered = outcome.delivered, status = outcome.status, operator = %who, "test notification sent by an operator");
    Ok(Json(outcome))
}

/// After an operator acknowledged or resolved `alert`: queue the record of
/// that change for every channel that takes the alert (PagerDuty
/// acknowledges or resolves its incident; the others get a message), for
/// process's dispatcher to deliver. The change is already committed, so a
/// failure here is logged (`error`), not answered: the operator's action
/// stands. Returns how many deliveries were queued.
pub(crate) async fn queue_operator_change(st: &Dashboard, alert: &StoredAlert, action: Transition, who: &str) -> u64 {
    let Some(channels) = st.channels.as_deref() else {
        return 0;
    };
    let now = Utc::now();
    let (state, at, verb) = match action {
        Transition::Acknowledge => (
            AlertState::Acknowledged,
            alert.acknowledged_at.unwrap_or(now),
            "acknowledged",
        ),
        Transition::Resolve => (AlertState::Resolved, alert.resolved_at.unwrap_or(now), "resolved"),
    };
    let record = Alert {
        id: alert.id.clone(),
        device_id: alert.device_id.clone(),
        metric: alert.metric.clone(),
        model: alert.model.clone(),
        score: alert.score,
        value: alert.value,
        reason: format!("{verb} by {who} on the dashboard ({})", alert.reason),
        severity: alert.severity,
        state,
        opened_at: alert.opened_at,
        updated_at: at,
    };
    let queued = async {
        let group = match &st.registry {
            Some(registry) => registry
                .get(&alert.device_id)
                .await?
                .map_or_else(|| DEFAULT_GROUP.to_owned(), |d| d.group),
            None => DEFAULT_GROUP.to_owned(),
        };
        let items: Vec<Queued> = channels
            .list()
            .await?
            .iter()
            .filter(|c| c.wants(&record, &group))
            .map(|c| Queued::new(&c.id, &record, &group))
            .collect();
        if items.is_empty() {
            return Ok(0);
        }
        Ok::<_, ApiError>(channels.enqueue(&items, now).await?)
    };
    match queued.await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(alert = %alert.id, state = state.as_str(), deliveries = n, "operator's change queued for the notification channels");
            }
            n
        }
        Err(e) => {
            tracing::error!(alert = %alert.id, state = state.as_str(), error = %tributary_shared::telemetry::ErrorChain(&e), "queuing the operator's change for the notification channels failed; the change stands, the channels are not told");
            0
        }
    }
}
