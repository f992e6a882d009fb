//! The alert rules' API: anyone who may read the dashboard sees the rules
//! (they explain the alerts); operators create, change and delete them.
//!
//! Guarantees: a change is committed to the rule store and published by
//! the process function's relay to `tributary.rules`; analyze applies it
//! from the next reading on, within about a second plus one batch, with no
//! restart, and never rewrites windows already closed. An invalid rule gets
//! a 422 naming the field and nothing is written; a body that is not a rule
//! a 400; writing a rule exactly as it is changes nothing (200, same
//! revision). Without a rule store (`Deps::rules` is `None`) the endpoints
//! answer 501.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::Serialize;
use tributary_shared::rules::{AlertRule, MAX_RULE_ID_LEN, MAX_RULES, RuleSpec, RuleStore, Written, valid_rule_id};

use crate::Dashboard;
use crate::error::ApiError;
use crate::extract::Path;

fn store(st: &Dashboard) -> Result<&dyn RuleStore, ApiError> {
    st.rules
        .as_deref()
        .ok_or(ApiError::NotConfigured("this dashboard has no rule store"))
}

fn check_rule_id(id: &str) -> Result<(), ApiError> {
    if valid_rule_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadParam {
            param: "id",
            reason: format!("must be 1-{MAX_RULE_ID_LEN} characters of A-Z a-z 0-9 . _ : -"),
        })
    }
}

/// Every rule.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListBody {
    rules: Vec<AlertRule>,
    /// The most rules there can be.
    max: usize,
}

/// `GET /api/rules`: every rule in force, by id.
pub async fn list(State(st): State<Arc<Dashboard>>) -> Result<Json<ListBody>, ApiError> {
    Ok(Json(ListBody {
        rules: store(&st)?.list().await?,
        max: MAX_RULES,
    }))
}

/// `GET /api/rules/{id}`: one rule.
pub async fn show(State(st): State<Arc<Dashboard>>, Path(id): Path<String>) -> Result<Json<AlertRule>, ApiError> {
    let rules = store(&st)?;
    check_rule_id(&id)?;
    rules
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("rule '{id}'")))
}

/// `PUT /api/rules/{id}` with a rule (`{"metric", "condition", "threshold",
/// "holdSeconds"?, "severity"?, "group" | "device", "description"?}`):
/// create it (201) or replace it (200).
pub async fn put(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AlertRule>), ApiError> {
    let who = st.auth.operator(&headers)?;
    let rules = store(&st)?;
    check_rule_id(&id)?;
    let spec: RuleSpec = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody(e.to_string()))?;
    let (rule, written) = rules.put(&id, &spec, Utc::now()).await?;
    if written != Written::Unchanged {
        tracing::info!(
            rule = %rule.id,
            condition = %rule.spec.condition_text(),
            scope = %rule.spec.scope().kind(),
            revision = rule.revision,
            written = ?written,
            operator = %who,
            "alert rule written by an operator"
        );
    }
    let status = if written == Written::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(rule)))
}

/// `DELETE /api/rules/{id}`: delete a rule (204); its series stop applying
/// it from their next reading.
pub async fn delete(
    State(st): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = st.auth.operator(&headers)?;
    let rules = store(&st)?;
    check_rule_id(&id)?;
    let rule = rules.delete(&id, Utc::now()).await?;
    tracing::info!(rule = %rule.id, revision = rule.revision, operator = %who, "alert rule deleted by an operator");
    Ok(StatusCode::NO_CONTENT)
}
