//! axum's `Query` and `Path` with the API's own rejection: a query string or
//! a path segment that cannot be read (a parameter given twice, bytes that
//! are not UTF-8) gets the same JSON 400 as any other bad parameter, never
//! axum's plain-text answer.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string, deserialized; a 400 naming `query` otherwise.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Self(q))
            .map_err(|e| ApiError::BadParam {
                param: "query",
                reason: e.body_text(),
            })
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
