//! The notification channels' API, for operators only (a Slack or Teams
//! URL is itself a secret, and a channel's secret is never returned: only
//! whether it has one): list, create or replace, delete, and each channel's
//! dead letters (the deliveries given up on, newest first).
//!
//! Guarantees: an invalid channel gets a 422 naming the field and nothing is
//! written; a body that is not a channel a 400; writing one exactly as it is
//! changes nothing (200). Without a channel store (`Deps::channels` is
//! `None`) the endpoints answer 501. Process's notifier reads the channels
//! at each batch, so a change applies from the next alert on.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tributary_shared::notify::store::{ChannelStore, DeadLetter, MAX_CHANNELS, MAX_DEAD_LETTERS};
use tributary_shared::notify::{Channel, ChannelSpec, MAX_CHANNEL_ID_LEN};
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
    /// The most channels there can be.
    max: usize,
}

/// `GET /api/channels`: every channel, by id (operator).
pub async fn list(State(st): State<Arc<Dashboard>>, headers: HeaderMap) -> Result<Json<ListBody>, ApiError> {
    let (channels, _) = store(&st, &headers)?;
    Ok(Json(ListBody {
        channels: channels.list().await?,
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
