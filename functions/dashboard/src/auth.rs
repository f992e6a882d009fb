//! Who is asking: the two ways the dashboard knows its users.
//!
//! - [`AuthMode::Token`] (the default; AKS and the all-in-one mode): reading
//!   needs the viewer token (or the operator's), acting on alerts and devices
//!   the operator token, each sent as `Authorization: Bearer <token>` or
//!   exchanged once for a session cookie ([`crate::session`]); tokens are
//!   compared in constant time. Without a viewer token reads are public,
//!   which the binary allows only when told to (`TRIBUTARY_PUBLIC_READ`).
//! - [`AuthMode::AppService`]: behind Azure App Service authentication (Easy
//!   Auth) with Microsoft Entra ID. App Service signs users in before a
//!   request reaches the dashboard, removes any `X-MS-CLIENT-PRINCIPAL*`
//!   header a client sent, and sets them for the signed-in user; the
//!   dashboard trusts them only in this mode, which must be configured only
//!   where App Service is in front. A request without a principal is refused
//!   (401): it did not come through App Service's sign-in. With a viewer
//!   role, reading needs it (or the operator role): a user of the tenant
//!   without either is refused (403). Operators are the users with the Entra
//!   app role [`AuthMode::AppService::operator_role`] (a `roles` claim), and
//!   alerts they change are marked with their name.

use axum::http::HeaderMap;
use axum::http::header;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::session::{self, Role};

/// The principal App Service sets: base64 of [`ClientPrincipal`] (JSON).
pub const PRINCIPAL_HEADER: &str = "x-ms-client-principal";
/// The signed-in user's name (App Service sets it next to the principal).
pub const PRINCIPAL_NAME_HEADER: &str = "x-ms-client-principal-name";

/// How users are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Readers and operators by their tokens (or sessions signed with them).
    Token {
        /// The operator token (`None`: no one may write).
        operator: Option<String>,
        /// The viewer token (`None`: anyone may read).
        viewer: Option<String>,
    },
    /// Signed in by App Service authentication.
    AppService {
        /// The Entra app role whose holders may acknowledge and resolve alerts.
        operator_role: String,
        /// The Entra app role whose holders may read (`None`: every
        /// signed-in user of the tenant may).
        viewer_role: Option<String>,
    },
}

/// Who made a request, as far as the dashboard knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Signed-in name (`None`: anonymous reader, token mode).
    pub name: Option<String>,
    /// May acknowledge and resolve alerts.
    pub operator: bool,
}

/// App Service's `X-MS-CLIENT-PRINCIPAL`, decoded.
#[derive(Debug, Deserialize)]
struct ClientPrincipal {
    #[serde(default)]
    claims: Vec<Claim>,
    #[serde(default)]
    name_typ: Option<String>,
    #[serde(default)]
    role_typ: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claim {
    typ: String,
    val: String,
}

/// Entra ID puts app roles in `roles`; App Service may name its role claim type otherwise.
const ROLE_CLAIMS: [&str; 2] = ["roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"];

impl AuthMode {
    /// The principal behind a request, or why it is refused.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        match self {
            Self::Token { viewer, .. } => {
                let bearer = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                // A bearer token is what a script sends, a session what the page has.
                let role = match bearer.and_then(|b| self.role_of_token(b)) {
                    Some(role) => Some(role),
                    None => session::from_headers(headers).and_then(|cookie| {
                        session::verify(cookie, |r| self.token_of(r), chrono::Utc::now().timestamp())
                    }),
                };
                match role {
                    Some(Role::Operator) => Ok(Principal {
                        name: Some("operator".to_owned()),
                        operator: true,
                    }),
                    Some(Role::Viewer) => Ok(Principal {
                        name: Some("viewer".to_owned()),
                        operator: false,
                    }),
                    None if viewer.is_none() => Ok(Principal {
                        name: None,
                        operator: false,
                    }),
                    None => Err(ApiError::SignInRequired),
                }
            }
            Self::AppService {
                operator_role,
                viewer_role,
            } => {
                let raw = headers
                    .get(PRINCIPAL_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(ApiError::SignInRequired)?;
                let json = base64::engine::general_purpose::STANDARD
                    .decode(raw.trim())
                    .map_err(|_| ApiError::SignInRequired)?;
                let p: ClientPrincipal = serde_json::from_slice(&json).map_err(|_| ApiError::SignInRequired)?;
                let role_typ = p.role_typ.as_deref();
                let has_role = |role: &str| {
                    p.claims.iter().any(|c| {
                        (ROLE_CLAIMS.contains(&c.typ.as_str()) || Some(c.typ.as_str()) == role_typ) && c.val == role
                    })
                };
                let operator = has_role(operator_role);
                if let Some(viewer) = viewer_role
                    && !operator
                    && !has_role(viewer)
                {
                    return Err(ApiError::NotViewer(viewer.clone()));
                }
                let name_typ = p.name_typ.as_deref();
                let name = headers
                    .get(PRINCIPAL_NAME_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| {
                        p.claims
                            .iter()
                            .find(|c| {
                                Some(c.typ.as_str()) == name_typ || c.typ == "name" || c.typ == "preferred_username"
                            })
                            .map(|c| c.val.clone())
                    })
                    .filter(|n| !n.is_empty())
                    .ok_or(ApiError::SignInRequired)?;
                Ok(Principal {
                    name: Some(name),
                    operator,
                })
            }
        }
    }

    /// The token of `role` (token mode).
    pub fn token_of(&self, role: Role) -> Option<&str> {
        match (self, role) {
            (Self::Token { operator, .. }, Role::Operator) => operator.as_deref(),
            (Self::Token { viewer, .. }, Role::Viewer) => viewer.as_deref(),
            (Self::AppService { .. }, _) => None,
        }
    }

    /// Which role `given` is the token of (token mode), in constant time per token.
    pub fn role_of_token(&self, given: &str) -> Option<Role> {
        let is = |role| {
            self.token_of(role)
                .is_some_and(|t| bool::from(given.as_bytes().ct_eq(t.as_bytes())))
        };
        if is(Role::Operator) {
            Some(Role::Operator)
        } else if is(Role::Viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// The name an operator's change is recorded under, or why it is refused.
    pub fn operator(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        match self {
            Self::Token { operator: None, .. } => Err(ApiError::ReadOnly),
            Self::Token { operator: Some(_), .. } => match self.principal(headers)? {
                Principal {
                    operator: true,
                    name: Some(name),
                } => Ok(name),
                _ => Err(ApiError::Unauthorized),
            },
            Self::AppService { operator_role, .. } => match self.principal(headers)? {
                Principal {
                    operator: true,
                    name: Some(name),
                } => Ok(name),
                _ => Err(ApiError::NotOperator(operator_role.clone())),
            },
        }
    }

    /// Whether every request must carry a signed-in principal (in token
    /// mode the page's own files and the sign-in are served to anyone, so a
    /// browser can show the sign-in).
    pub fn requires_sign_in(&self) -> bool {
        matches!(self, Self::AppService { .. } | Self::Token { viewer: Some(_), .. })
    }

    /// `token` or `app-service`, for `/api/me` and the logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::AppService { .. } => "app-service",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn principal_headers(claims: &[(&str, &str)], name: Option<&str>) -> HeaderMap {
        let claims: Vec<_> = claims
            .iter()
            .map(|(t, v)| serde_json::json!({"typ": t, "val": v}))
            .collect();
        let body = serde_json::json!({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"});
        let mut h = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        h.insert(
            PRINCIPAL_HEADER,
            HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("")),
        );
        if let Some(n) = name {
            h.insert(
                PRINCIPAL_NAME_HEADER,
                HeaderValue::from_str(n).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    fn app_service() -> AuthMode {
        AuthMode::AppService {
            operator_role: "Tributary.Operator".into(),
            viewer_role: None,
        }
    }

    #[test]
    fn app_service_with_a_viewer_role_lets_only_viewers_and_operators_read() {
        let mode = AuthMode::AppService {
            operator_role: "Tributary.Operator".into(),
            viewer_role: Some("Tributary.Viewer".into()),
        };
        let viewer = principal_headers(&[("name", "Vi"), ("roles", "Tributary.Viewer")], Some("vi"));
        assert_eq!(
            mode.principal(&viewer).ok(),
            Some(Principal {
                name: Some("vi".into()),
                operator: false
            })
        );
        assert!(matches!(mode.operator(&viewer), Err(ApiError::NotOperator(_))));
        let operator = principal_headers(&[("name", "Op"), ("roles", "Tributary.Operator")], Some("op"));
        assert_eq!(
            mode.operator(&operator).ok().as_deref(),
            Some("op"),
            "an operator reads too"
        );
        let stranger = principal_headers(&[("name", "Sam"), ("roles", "Tributary.Reader")], Some("sam"));
        assert!(
            matches!(mode.principal(&stranger), Err(ApiError::NotViewer(r)) if r == "Tributary.Viewer"),
            "a signed-in user of the tenant without the role reads nothing"
        );
        assert!(matches!(mode.operator(&stranger), Err(ApiError::NotViewer(_))));
    }

    #[test]
    fn app_service_reads_the_principal_and_the_operator_role() {
        let h = principal_headers(
            &[("name", "Ada"), ("roles", "Tributary.Operator")],
            Some("ada@example.com"),
        );
        assert_eq!(
            app_service().principal(&h).ok(),
            Some(Principal {
                name: Some("ada@example.com".into()),
                operator: true
            })
        );
        assert_eq!(app_service().operator(&h).ok().as_deref(), Some("ada@example.com"));
        // A reader: signed in, no role; the name from the claims when the name header is missing.
        let h = principal_headers(&[("name", "Bob"), ("roles", "Tributary.Reader")], None);
        let p = app_service().principal(&h).ok();
        assert_eq!(p.as_ref().and_then(|p| p.name.as_deref()), Some("Bob"));
        assert!(!p.is_some_and(|p| p.operator));
        assert!(matches!(app_service().operator(&h), Err(ApiError::NotOperator(_))));
    }

    #[test]
    fn app_service_refuses_requests_without_a_usable_principal() {
        for h in [
            HeaderMap::new(),
            {
                let mut h = HeaderMap::new();
                h.insert(PRINCIPAL_HEADER, HeaderValue::from_static("not base64!"));
                h
            },
            {
                let mut h = HeaderMap::new();
                h.insert(PRINCIPAL_HEADER, HeaderValue::from_static("e30=")); // {} : no name anywhere
                h
            },
        ] {
            assert!(
                matches!(app_service().principal(&h), Err(ApiError::SignInRequired)),
                "{h:?}"
            );
        }
    }

    #[test]
    fn token_mode_ignores_app_service_headers() {
        // Only App Service may set them: outside it they are a client's claim, worth nothing.
        let h = principal_headers(&[("name", "Eve"), ("roles", "Tributary.Operator")], Some("eve"));
        let mode = AuthMode::Token {
            operator: Some("t0ken".into()),
            viewer: None,
        };
        assert_eq!(
            mode.principal(&h).ok(),
            Some(Principal {
                name: None,
                operator: false
            })
        );
        assert!(matches!(mode.operator(&h), Err(ApiError::Unauthorized)));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0ken"));
        assert_eq!(mode.operator(&h).ok().as_deref(), Some("operator"));
        assert!(matches!(
            AuthMode::Token {
                operator: None,
                viewer: None
            }
            .operator(&h),
            Err(ApiError::ReadOnly)
        ));
    }

    #[test]
    fn with_a_viewer_token_reading_needs_a_token_or_a_session() {
        let mode = AuthMode::Token {
            operator: Some("op".into()),
            viewer: Some("view".into()),
        };
        assert!(mode.requires_sign_in());
        assert!(matches!(
            mode.principal(&HeaderMap::new()),
            Err(ApiError::SignInRequired)
        ));
        let bearer = |t: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(t));
            h
        };
        let viewer = mode.principal(&bearer("Bearer view")).ok();
        assert_eq!(
            viewer.map(|p| (p.name, p.operator)),
            Some((Some("viewer".into()), false))
        );
        assert!(matches!(
            mode.operator(&bearer("Bearer view")),
            Err(ApiError::Unauthorized)
        ));
        assert_eq!(mode.operator(&bearer("Bearer op")).ok().as_deref(), Some("operator"));
        assert!(matches!(
            mode.principal(&bearer("Bearer nope")),
            Err(ApiError::SignInRequired)
        ));
        // A session cookie signed with the viewer token reads, and only reads.
        let cookie = session::issue(Role::Viewer, "view", chrono::Utc::now().timestamp()).unwrap_or_default();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{}={cookie}", session::COOKIE)).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(mode.principal(&h).ok().map(|p| p.operator), Some(false));
        assert!(matches!(mode.operator(&h), Err(ApiError::Unauthorized)));
    }
}
