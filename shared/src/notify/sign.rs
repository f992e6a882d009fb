//! The signature of a delivery: header [`HEADER`] =
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as Stripe
//! and others do. The timestamp is inside what is signed, so a receiver that
//! refuses a `t` outside its replay window ([`verify`]) cannot be made to
//! accept an old delivery again; the idempotency key then drops a retry
//! within the window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signature's header.
pub const HEADER: &str = "x-tributary-signature";
/// The idempotency key's header (see [`super::idempotency_key`]).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// How far a receiver should accept a signature's time from its own clock.
pub const REPLAY_WINDOW_SECS: i64 = 300;

fn mac(secret: &str, t: i64, body: &[u8]) -> HmacSha256 {
    let mut m =
        HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value for `body` sent at unix time `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=<integer>,v1=<64 hex digits>`.
    #[error("the signature header is not t=<unix seconds>,v1=<hex>")]
    Malformed,
    /// Its time is outside the replay window.
    #[error("the signature's time is {skew_secs} s from now, outside the {window_secs} s window")]
    Stale {
        /// Seconds between the signature's time and now.
        skew_secs: i64,
        /// The window.
        window_secs: i64,
    },
    /// It was not made with this secret over this body.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Check `header` for `body` at unix time `now` (what a receiver does).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, window_secs: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if v1.len() != 64 || !v1.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::Malformed);
    }
    let skew = (now - t).abs();
    if skew > window_secs {
        return Err(SignatureError::Stale {
            skew_secs: skew,
            window_secs,
        });
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    // Constant time: the comparison is the MAC crate's.
    mac(secret, t, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_secret_body_and_time() {
        let body = br#"{"alert":"x"}"#;
        let h = signature("s3cret-0123456789", 1_800_000_000, body);
        assert!(
            h.starts_with("t=1800000000,v1=") && h.len() == "t=1800000000,v1=".len() + 64,
            "{h}"
        );
        assert_eq!(verify("s3cret-0123456789", &h, body, 1_800_000_100, 300), Ok(()));
        assert_eq!(
            verify("another-secret-xyz", &h, body, 1_800_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret-0123456789", &h, br#"{"alert":"y"}"#, 1_800_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret-0123456789", &h, body, 1_800_000_301, 300),
            Err(SignatureError::Stale {
                skew_secs: 301,
                window_secs: 300
            }),
            "a replay after the window"
        );
        // The time is signed: moving it breaks the signature.
        let moved = h.replace("t=1800000000", "t=1800000200");
        assert_eq!(
            verify("s3cret-0123456789", &moved, body, 1_800_000_200, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz"] {
            assert_eq!(
                verify("k", bad, body, 1, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_signature_matches_an_independent_hmac() {
        // Computed with Python's hmac module over "<t>.<body>".
        assert_eq!(
            signature("s3cret-0123456789", 1_800_000_000, br#"{"alert":"x"}"#),
            "t=1800000000,v1=ab9cd88779e2bbd9c40151aa0ebea080ec23e5e12ad62ed5cb745964bc22e028"
        );
        assert_eq!(
            signature("Jefe", 0, b"what do ya want for nothing?"),
            "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
    }
}
