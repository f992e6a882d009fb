//! Browser sessions in token mode: a viewer or operator signs in once with
//! their token (`POST /api/session`) and gets a cookie, so the page and its
//! live event stream (which cannot send an `Authorization` header) are read
//! with it.
//!
//! Guarantees: the cookie holds no token, only its role, its expiry and an
//! HMAC-SHA256 over both keyed with that role's token, so it cannot be
//! forged or stretched, and changing a token ends every session signed
//! with it; it is `HttpOnly` (no script reads it), `SameSite=Strict` (no
//! other site's page sends it, which is what keeps a form elsewhere from
//! acting as the operator) and `Secure` when the request came over HTTPS;
//! signatures are compared in constant time.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "tributary_session";
/// How long a session lasts, in seconds (a working day and a half).
pub const TTL_SECS: i64 = 12 * 3600;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Read, and act on alerts and devices.
    Operator,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            _ => None,
        }
    }
}

fn signature(secret: &str, role: Role, expires: i64) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(format!("tributary-session\n{}\n{expires}", role.as_str()).as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// The cookie value of a session of `role` signed with `secret` (that
/// role's token), valid until `now + TTL_SECS`.
pub fn issue(role: Role, secret: &str, now: i64) -> Option<String> {
    let expires = now + TTL_SECS;
    let sig = signature(secret, role, expires)?;
    Some(format!(
        "v1.{}.{expires}.{}",
        role.as_str(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    ))
}

/// The role of a cookie value, if it is well formed, unexpired and signed
/// with the token `secret_of` gives for its role.
pub fn verify<'a>(value: &str, secret_of: impl Fn(Role) -> Option<&'a str>, now: i64) -> Option<Role> {
    let mut parts = value.split('.');
    let (Some("v1"), Some(role), Some(expires), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let role = Role::parse(role)?;
    let expires: i64 = expires.parse().ok()?;
    if expires <= now || expires > now + TTL_SECS {
        return None;
    }
    let given = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = signature(secret_of(role)?, role, expires)?;
    bool::from(given.ct_eq(&expected)).then_some(role)
}

/// The session cookie's value in a request's `Cookie` headers, if any.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `Set-Cookie` value that stores `value` (or, with `None`, removes the session).
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!("{COOKIE}={v}; Path=/; Max-Age={TTL_SECS}; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secrets(role: Role) -> Option<&'static str> {
        Some(match role {
            Role::Viewer => "viewer-secret",
            Role::Operator => "operator-secret",
        })
    }

    #[test]
    fn a_session_verifies_until_it_expires() {
        let v = issue(Role::Viewer, "viewer-secret", NOW).expect("issue");
        assert_eq!(verify(&v, secrets, NOW + 1), Some(Role::Viewer));
        assert_eq!(verify(&v, secrets, NOW + TTL_SECS), None, "expired");
        let o = issue(Role::Operator, "operator-secret", NOW).expect("issue");
        assert_eq!(verify(&o, secrets, NOW), Some(Role::Operator));
    }

    #[test]
    fn a_session_cannot_be_forged_promoted_or_stretched() {
        let v = issue(Role::Viewer, "viewer-secret", NOW).expect("issue");
        let promoted = v.replacen("viewer", "operator", 1);
        assert_eq!(
            verify(&promoted, secrets, NOW),
            None,
            "a viewer's signature is not an operator's"
        );
        let exp = NOW + TTL_SECS;
        let stretched = v.replacen(&exp.to_string(), &(exp + 3600).to_string(), 1);
        assert_eq!(verify(&stretched, secrets, NOW), None, "the expiry is signed");
        let rotated = |role: Role| match role {
            Role::Viewer => Some("a-new-viewer-secret"),
            Role::Operator => Some("operator-secret"),
        };
        assert_eq!(verify(&v, rotated, NOW), None, "a new token ends the old sessions");
        assert_eq!(verify(&v, |_| None, NOW), None, "no token for the role: no session");
        for bad in [
            "",
            "v1",
            "v1.viewer.x.y",
            "v2.viewer.1.abc",
            "v1.admin.1900000000.abc",
            "v1.viewer.1800003600.!!",
        ] {
            assert_eq!(verify(bad, secrets, NOW), None, "{bad}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            axum::http::HeaderValue::from_static("a=1; tributary_session=v1.viewer.2.x; b=2"),
        );
        assert_eq!(from_headers(&h), Some("v1.viewer.2.x"));
        let set = set_cookie(Some("v"), true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("; Secure"),
            "{set}"
        );
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }
}
