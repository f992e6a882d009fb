//! The errors of the dashboard: [`ApiError`], why a request failed, with
//! its HTTP answer (no internals), and [`Error`], why [`crate::run`] could
//! not start or stopped.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tributary_shared::notify::store::ChannelError;
use tributary_shared::registry::RegistryError;
use tributary_shared::results::StoreError;
use tributary_shared::rules::RuleError;
use tributary_shared::telemetry::ErrorChain;

/// Errors of the API, mapped to status codes without internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or path segment is invalid.
    #[error("invalid parameter '{param}': {reason}")]
    BadParam {
        /// The parameter.
        param: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such resource.
    #[error("{0} not found")]
    NotFound(String),
    /// The action conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// Missing or wrong operator token.
    #[error("an operator token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// Behind App Service authentication, a request without a signed-in
    /// principal: it did not come through App Service's sign-in.
    #[error("sign-in required")]
    SignInRequired,
    /// A sign-in with a token that is neither the viewer's nor the operator's.
    #[error("that token is neither the viewer token nor the operator token")]
    WrongToken,
    /// Signed in, but without the viewer role (nor the operator's).
    #[error("reading the dashboard needs the app role '{0}'")]
    NotViewer(String),
    /// Signed in, but without the operator role.
    #[error("changing alerts or devices needs the app role '{0}'")]
    NotOperator(String),
    /// Write actions are disabled (no operator token configured).
    #[error("the dashboard is read-only: no operator token is configured")]
    ReadOnly,
    /// A store failed.
    #[error("the data store is unavailable; try again shortly")]
    Unavailable,
    /// The feature needs a store this instance was not configured with.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// A request body that is not the JSON the endpoint takes.
    #[error("invalid request body: {0}")]
    BadBody(String),
    /// The device registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The rule store refused or failed.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// The channel store refused or failed.
    #[error(transparent)]
    Channels(#[from] ChannelError),
}

impl From<tributary_shared::raw::StoreError> for ApiError {
    fn from(e: tributary_shared::raw::StoreError) -> Self {
        tracing::warn!(error = %ErrorChain(&e), "raw store query failed");
        Self::Unavailable
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %ErrorChain(&e), "results store query failed");
        Self::Unavailable
    }
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadParam { .. } => (StatusCode::BAD_REQUEST, "bad_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::ReadOnly => (StatusCode::FORBIDDEN, "read_only"),
            Self::SignInRequired => (StatusCode::UNAUTHORIZED, "sign_in_required"),
            Self::WrongToken => (StatusCode::UNAUTHORIZED, "wrong_token"),
            Self::NotOperator(_) => (StatusCode::FORBIDDEN, "not_operator"),
            Self::NotViewer(_) => (StatusCode::FORBIDDEN, "not_viewer"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::NotConfigured(_) => (StatusCode::NOT_IMPLEMENTED, "not_configured"),
            Self::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Self::Registry(e) => (
                e.status_code(),
                match e {
                    RegistryError::NotFound(_) => "not_found",
                    RegistryError::Exists(_) => "conflict",
                    RegistryError::Invalid(_) | RegistryError::Duplicate(_) => "invalid_device",
                    RegistryError::Store(StoreError::Rejected(_)) => "rejected",
                    RegistryError::Store(StoreError::Unavailable(_)) => "unavailable",
                },
            ),
            Self::Rules(e) => (
                e.status_code(),
                match e {
                    RuleError::NotFound(_) => "not_found",
                    RuleError::Invalid(_) => "invalid_rule",
                    RuleError::TooMany => "too_many_rules",
                    RuleError::Store(StoreError::Rejected(_)) => "rejected",
                    RuleError::Store(StoreError::Unavailable(_)) => "unavailable",
                },
            ),
            Self::Channels(e) => (
                e.status_code(),
                match e {
                    ChannelError::NotFound(_) => "not_found",
                    ChannelError::Invalid(_) => "invalid_channel",
                    ChannelError::TooMany => "too_many_channels",
                    ChannelError::Store(StoreError::Rejected(_)) => "rejected",
                    ChannelError::Store(StoreError::Unavailable(_)) => "unavailable",
                },
            ),
        }
    }

    /// What the answer says: the error itself, except a store's failure,
    /// whose details stay in the log.
    fn message(&self) -> String {
        match self {
            Self::Registry(RegistryError::Store(e)) => {
                tracing::warn!(error = %ErrorChain(e), "device registry query failed");
                match e {
                    StoreError::Rejected(_) => "the database refused the change".into(),
                    StoreError::Unavailable(_) => Self::Unavailable.to_string(),
                }
            }
            Self::Channels(ChannelError::Store(e)) => {
                tracing::warn!(error = %ErrorChain(e), "channel store query failed");
                match e {
                    StoreError::Rejected(_) => "the database refused the change".into(),
                    StoreError::Unavailable(_) => Self::Unavailable.to_string(),
                }
            }
            Self::Rules(RuleError::Store(e)) => {
                tracing::warn!(error = %ErrorChain(e), "rule store query failed");
                match e {
                    StoreError::Rejected(_) => "the database refused the change".into(),
                    StoreError::Unavailable(_) => Self::Unavailable.to_string(),
                }
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut body = json!({"error": {"code": code, "message": self.message()}});
        if let Self::BadParam { param, .. } = &self {
            body["error"]["parameter"] = json!(param);
        }
        if let Self::Registry(RegistryError::Invalid(e)) = &self {
            body["error"]["field"] = json!(e.field);
        }
        if let Self::Rules(RuleError::Invalid(e)) = &self {
            body["error"]["field"] = json!(e.field);
        }
        if let Self::Channels(ChannelError::Invalid(e)) = &self {
            body["error"]["field"] = json!(e.field);
        }
        (status, axum::Json(body)).into_response()
    }
}

/// Why the dashboard could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `DATABASE_URL` does not name a usable results store.
    #[error("opening the results store (DATABASE_URL)")]
    Store(#[source] StoreError),
    /// `REDIS_URL` does not name a usable cache.
    #[error("opening the cache (REDIS_URL)")]
    Cache(#[source] tributary_shared::cache::CacheError),
    /// The Cosmos DB settings are unusable (a missing key, no identity).
    #[error("Cosmos DB settings")]
    Cosmos(#[source] tributary_shared::raw::StoreError),
    /// Token mode with neither a viewer token nor public reads allowed.
    #[error(
        "no viewer token: set TRIBUTARY_VIEWER_TOKEN (readers sign in with it), or TRIBUTARY_PUBLIC_READ=true (--public-read) to let anyone who reaches the dashboard read it"
    )]
    NoViewerToken,
    /// `DATABASE_URL` does not name a usable device registry.
    #[error("opening the device registry (DATABASE_URL)")]
    Registry(#[source] RegistryError),
    /// `DATABASE_URL` does not name a usable channel store.
    #[error("opening the notification channels (DATABASE_URL)")]
    Channels(#[source] ChannelError),
    /// `DATABASE_URL` does not name a usable rule store.
    #[error("opening the alert rules (DATABASE_URL)")]
    Rules(#[source] RuleError),
    /// Binding, serving or the Lambda runtime failed.
    #[error(transparent)]
    Service(#[from] tributary_shared::service::ServiceError),
}
