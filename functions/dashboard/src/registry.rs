//! The device registry's operator API: list, show, add, disable, enable and
//! rotate a device's key, the same actions as `tributary device`.
//!
//! Guarantees: every endpoint needs the operator (the bearer token, or the
//! operator app role behind App Service), reads included, since the registry
//! names the whole fleet; a change is written with its outbox row in one
//! transaction, so the process function's relay publishes it to every
//! ingest replica (refused there within about a second) whoever made it; bad
//! input gets a 400 naming the parameter, an invalid device a 422 naming the
//! field, and nothing is written. Without a registry (`Deps::registry` is
//! `None`) the endpoints answer 501.
//!
//! The dashboard never holds the fleet key, so a rotation answers with the
//! new key version only; `tributary device rotate-key --show-key` (or
//! `tributary token --key-version`) derives the device's new key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tributary_shared::registry::{DeviceRegistry, DeviceStatus, MAX_LIST, NewDevice, RegisteredDevice, RegistryQuery};

use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::{Dashboard, api};

/// Longest search text, in characters.
const SEARCH_MAX: usize = 128;

fn registry<'a>(st: &'a Dashboard, headers: &HeaderMap) -> Result<(&'a dyn DeviceRegistry, String), ApiError> {
    let who = st.auth.operator(headers)?;
    let registry = st
        .registry
        .as_deref()
        .ok_or(ApiError::NotConfigured("this dashboard has no device registry"))?;
    Ok((registry, who))
}

/// The query of `GET /api/registry/devices`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    q: Option<String>,
    group: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// One page of the registry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBody {
    devices: Vec<RegisteredDevice>,
    /// The `after` of the next page; `null` on the last.
    next: Option<String>,
    /// Devices registered in all.
    registered: u64,
}

/// `GET /api/registry/devices?q=&group=&status=&after=&limit=`: a page of
/// registered devices in id order, searched by id or name, filtered by
/// group and state.
pub async fn list(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<ListBody>, ApiError> {
    let (registry, _) = registry(&st, &headers)?;
    let limit = api::parse_limit(p.limit.as_deref(), 100, i64::from(MAX_LIST))?;
    let search = p.q.filter(|q| !q.is_empty());
    if search.as_ref().is_some_and(|q| q.chars().count() > SEARCH_MAX) {
        return Err(ApiError::BadParam {
            param: "q",
            reason: format!("longer than {SEARCH_MAX} characters"),
        });
    }
    let group = p.group.filter(|g| !g.is_empty());
    if let Some(g) = &group {
        api::check_group(g)?;
    }
    let after = p.after.filter(|a| !a.is_empty());
    if let Some(a) = &after {
        api::check_id("after", a)?;
    }
    let status = match p.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(s.parse::<DeviceStatus>().map_err(|reason| ApiError::BadParam {
            param: "status",
            reason,
        })?),
    };
    let query = RegistryQuery {
        search,
        group,
        status,
        after,
        limit: u32::try_from(limit).unwrap_or(MAX_LIST),
    };
    let devices = registry.list(&query).await?;
    let next = (devices.len() as i64 == limit)
        .then(|| devices.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(ListBody {
        devices,
        next,
        registered: registry.count().await?,
    }))
}

/// `GET /api/registry/devices/{id}`: one registered device.
pub async fn show(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let (registry, _) = registry(&st, &headers)?;
    api::check_id("id", &id)?;
    registry
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("device '{id}' in the registry")))
}

/// `POST /api/registry/devices` with a device (`{"id", "name"?, "group"?,
/// "tags"?}`): register it (201), or adopt one enrolled on first contact.
pub async fn add(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<RegisteredDevice>), ApiError> {
    let (registry, who) = registry(&st, &headers)?;
    let device: NewDevice = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let added = registry.add(&device, Utc::now()).await?;
    tracing::info!(device = %added.id, group = %added.group, operator = %who, "device registered by an operator");
    Ok((StatusCode::CREATED, Json(added)))
}

/// What an operator does to one device.
#[derive(Debug, Clone, Copy)]
enum Action {
    Disable,
    Enable,
    RotateKey,
}

async fn act(
    st: &Dashboard,
    headers: &HeaderMap,
    id: &str,
    action: Action,
) -> Result<Json<RegisteredDevice>, ApiError> {
    let (registry, who) = registry(st, headers)?;
    api::check_id("id", id)?;
    let now = Utc::now();
    let device = match action {
        Action::Disable => registry.set_status(id, DeviceStatus::Disabled, now).await?,
        Action::Enable => registry.set_status(id, DeviceStatus::Active, now).await?,
        Action::RotateKey => registry.rotate_key(id, now).await?,
    };
    tracing::info!(
        device = %id,
        action = ?action,
        status = device.status.as_str(),
        key_version = device.key_version,
        operator = %who,
        "device changed by an operator"
    );
    Ok(Json(device))
}

/// `POST /api/registry/devices/{id}/disable`: refuse its readings from now on.
pub async fn disable(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    act(&st, &headers, &id, Action::Disable).await
}

/// `POST /api/registry/devices/{id}/enable`: accept its readings again.
pub async fn enable(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    act(&st, &headers, &id, Action::Enable).await
}

/// `POST /api/registry/devices/{id}/rotate-key`: move it to its next key
/// version; tokens of the old key are refused (401 `key_rotated`).
pub async fn rotate_key(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegisteredDevice>, ApiError> {
    act(&st, &headers, &id, Action::RotateKey).await
}
