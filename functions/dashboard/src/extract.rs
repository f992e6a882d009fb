//! axum's `Query` and `Path` with the API's own rejection: a query string or
//! a path segment that cannot be read (a parameter given twice, bytes that
//! are not UTF-8) gets the same JSON 400 as any other bad parameter, never
//! axum's plain-text answer. A query parameter with an empty value is taken
//! as absent (`?device=&to=` is `?`), as a form with empty fields sends it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string, deserialized; a 400 naming `query` otherwise.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let given: Vec<(String, String)> = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
        let bad = |reason: String| ApiError::BadParam { param: "query", reason };
        let kept = serde_urlencoded::to_string(&given).map_err(|e| bad(e.to_string()))?;
        serde_urlencoded::from_str(&kept)
            .map(Self)
            .map_err(|e| bad(format!("cannot read the query string: {e}")))
    }
}

/// The path's parameters, deserialized; a 400 naming `path` otherwise.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Self(p))
            .map_err(|e| ApiError::BadParam {
                param: "path",
                reason: e.body_text(),
            })
    }
}
