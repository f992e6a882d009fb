//! Device authentication without a database lookup.
//!
//! As in Azure DPS group enrollment, each device's key is derived from one
//! fleet key and the device's key version (see the device registry): version
//! 0 is `HMAC-SHA256(fleet_key, device_id)`, version `n > 0` is
//! `HMAC-SHA256(fleet_key, "<device_id>\n<n>")`. A device (or
//! `tributary token`) signs short-lived tokens with it, in the shape of an IoT
//! Hub SAS token: `sr=<device>&se=<unix expiry>[&kv=<n>]&sig=<base64url HMAC-SHA256(device_key, "<device>\n<expiry>")>`
//! (`kv` is left out for version 0, so tokens from before versions existed
//! are unchanged). The server re-derives the key from the fleet key, so it
//! needs no database lookup, and compares signatures in constant time.
//!
//! Guarantees: a token names exactly one device and one key version (the
//! version is bound by the key that signed it: changing `kv` breaks the
//! signature); it is rejected once expired and when its lifetime exceeds the
//! configured maximum (which bounds how long a leaked token can be replayed).
//! Whether that version is the device's current one is the registry's
//! question, not this module's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. Every variant maps to 401; the message is safe to
/// show to the device (it never contains key material).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error(
        "missing Authorization header (expected 'SharedAccessSignature sr=..&se=..&sig=..' or 'Bearer <same token>')"
    )]
    Missing,
    /// The header or token could not be parsed.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's expiry is in the past.
    #[error("token expired")]
    Expired,
    /// The token lives longer than the server allows.
    #[error("token lifetime exceeds the allowed maximum of {0} s")]
    TooLong(u64),
    /// The signature does not match.
    #[error("invalid signature")]
    BadSignature,
}

/// The secret every device key derives from.
#[derive(Clone)]
pub struct FleetKey(Vec<u8>);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(<redacted>)")
    }
}

impl FleetKey {
    /// A fleet key from its secret bytes (any length; 32 random bytes recommended).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    /// The key of one device at key version 0: what is provisioned onto it
    /// at the factory.
    pub fn device_key(&self, device: &str) -> DeviceKey {
        self.device_key_at(device, 0)
    }

    /// The key of one device at a key version (each rotation of the device's
    /// key moves it to the next version).
    pub fn device_key_at(&self, device: &str, version: u32) -> DeviceKey {
        let bytes = if version == 0 {
            hmac(&self.0, device.as_bytes())
        } else {
            // Device ids never contain a newline, so no (id, version) pair
            // derives the same key as another, nor as a version-0 id.
            hmac(&self.0, format!("{device}\n{version}").as_bytes())
        };
        DeviceKey { bytes, version }
    }

    /// Check an `Authorization` header value and return the device it authenticates.
    pub fn verify_header(&self, header: Option<&str>, now_unix: u64, max_ttl_secs: u64) -> Result<Verified, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("SharedAccessSignature ")
            .or_else(|| header.strip_prefix("Bearer "))
            .ok_or(AuthError::Malformed("unknown scheme"))?;
        self.verify(token.trim(), now_unix, max_ttl_secs)
    }

    /// Check a token and return the device (and key version) it authenticates.
    pub fn verify(&self, token: &str, now_unix: u64, max_ttl_secs: u64) -> Result<Verified, AuthError> {
        let (mut sr, mut se, mut kv, mut sig) = (None, None, None, None);
        for part in token.split('&') {
            let (k, v) = part
                .split_once('=')
                .ok_or(AuthError::Malformed("expected key=value pairs"))?;
            match k {
                "sr" => sr = Some(v),
                "se" => se = Some(v),
                "kv" => kv = Some(v),
                "sig" => sig = Some(v),
                _ => return Err(AuthError::Malformed("unknown token field")),
            }
        }
        let device = sr.ok_or(AuthError::Malformed("missing sr"))?;
        if !crate::model::valid_id(device) {
            return Err(AuthError::Malformed("sr is not a valid device id"));
        }
        let expiry: u64 = se
            .ok_or(AuthError::Malformed("missing se"))?
            .parse()
            .map_err(|_| AuthError::Malformed("se is not a unix time"))?;
        let key_version = match kv {
            None => 0,
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse::<u32>()
                .map_err(|_| AuthError::Malformed("kv is out of range"))?,
            Some(_) => return Err(AuthError::Malformed("kv is not a key version")),
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig.ok_or(AuthError::Malformed("missing sig"))?)
            .map_err(|_| AuthError::Malformed("sig is not base64url"))?;

        // Check the signature first so an attacker learns nothing about expiry rules from unsigned tokens.
        let key = self.device_key_at(device, key_version);
        let mut mac = HmacSha256::new_from_slice(&key.bytes).map_err(|_| AuthError::BadSignature)?;
        mac.update(string_to_sign(device, expiry).as_bytes());
        mac.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;

        if expiry <= now_unix {
            return Err(AuthError::Expired);
        }
        if expiry - now_unix > max_ttl_secs {
            return Err(AuthError::TooLong(max_ttl_secs));
        }
        Ok(Verified {
            device: device.to_owned(),
            key_version,
        })
    }
}

/// What a valid token proves: who signed it, with which of its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The device the token names (`sr`).
    pub device: String,
    /// The key version that signed it (`kv`, 0 when absent).
    pub key_version: u32,
}

/// One device's key at one key version.
#[derive(Clone)]
pub struct DeviceKey {
    bytes: Vec<u8>,
    version: u32,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

impl DeviceKey {
    /// The key as base64 (standard alphabet), for provisioning.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    /// The key version this key is.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Mint a token for `device` that expires at `expiry_unix`.
    pub fn token(&self, device: &str, expiry_unix: u64) -> String {
        let sig = URL_SAFE_NO_PAD.encode(hmac(&self.bytes, string_to_sign(device, expiry_unix).as_bytes()));
        if self.version == 0 {
            format!("sr={device}&se={expiry_unix}&sig={sig}")
        } else {
            format!("sr={device}&se={expiry_unix}&kv={}&sig={sig}", self.version)
        }
    }
}

fn string_to_sign(device: &str, expiry: u64) -> String {
    format!("{device}\n{expiry}")
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Seconds since the Unix epoch, from the system clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn v0(device: &str) -> Verified {
        Verified {
            device: device.into(),
            key_version: 0,
        }
    }

    #[test]
    fn key_versions_give_distinct_keys_and_tokens_carry_theirs() {
        let fleet = FleetKey::new("fleet-secret");
        // Version 0 is the derivation from before versions existed: its tokens have no kv.
        let v0_token = fleet.device_key("truck-7").token("truck-7", 4_600);
        assert!(!v0_token.contains("kv="), "{v0_token}");
        assert_eq!(fleet.device_key_at("truck-7", 0).token("truck-7", 4_600), v0_token);

        let v3 = fleet.device_key_at("truck-7", 3);
        assert_eq!(v3.version(), 3);
        assert_ne!(v3.to_base64(), fleet.device_key("truck-7").to_base64());
        assert_ne!(v3.to_base64(), fleet.device_key_at("truck-7", 2).to_base64());
        let token = v3.token("truck-7", 4_600);
        assert!(token.contains("&kv=3&"), "{token}");
        assert_eq!(
            fleet.verify(&token, 1_000, DAY),
            Ok(Verified {
                device: "truck-7".into(),
                key_version: 3
            })
        );
        // The version is bound by the key: claiming another one breaks the signature.
        for other in ["kv=2", "kv=4", "kv=0"] {
            let claimed = token.replace("kv=3", other);
            assert_eq!(
                fleet.verify(&claimed, 1_000, DAY),
                Err(AuthError::BadSignature),
                "{other}"
            );
        }
        assert_eq!(
            fleet.verify(&token.replace("&kv=3", ""), 1_000, DAY),
            Err(AuthError::BadSignature)
        );
        // A version-0 token claiming a version is refused too.
        let claimed = v0_token.replace("&sig=", "&kv=1&sig=");
        assert_eq!(fleet.verify(&claimed, 1_000, DAY), Err(AuthError::BadSignature));
        // No id and version derive another id's key ("a\n1" is not a valid id).
        assert_ne!(
            fleet.device_key_at("a", 1).to_base64(),
            fleet.device_key("a1").to_base64()
        );
    }

    #[test]
    fn minted_token_verifies_for_its_device_only() {
        let fleet = FleetKey::new("fleet-secret");
        let token = fleet.device_key("truck-7").token("truck-7", 1_000 + 3_600);
        assert_eq!(fleet.verify(&token, 1_000, DAY), Ok(v0("truck-7")));
        assert_eq!(
            fleet.verify_header(Some(&format!("SharedAccessSignature {token}")), 1_000, DAY),
            Ok(v0("truck-7"))
        );
        assert_eq!(
            fleet.verify_header(Some(&format!("Bearer {token}")), 1_000, DAY),
            Ok(v0("truck-7"))
        );

        // Another device's key cannot sign for truck-7, and the token cannot be re-targeted.
        let forged = fleet.device_key("truck-8").token("truck-7", 4_600);
        assert_eq!(fleet.verify(&forged, 1_000, DAY), Err(AuthError::BadSignature));
        let retargeted = token.replace("sr=truck-7", "sr=truck-8");
        assert_eq!(fleet.verify(&retargeted, 1_000, DAY), Err(AuthError::BadSignature));
        // Nor can its expiry be extended.
        let extended = token.replace("se=4600", "se=9600");
        assert_eq!(fleet.verify(&extended, 1_000, DAY), Err(AuthError::BadSignature));
        // A different fleet key rejects it.
        assert_eq!(
            FleetKey::new("other").verify(&token, 1_000, DAY),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_and_lifetime_are_enforced() {
        let fleet = FleetKey::new("k");
        let t = fleet.device_key("d").token("d", 2_000);
        assert_eq!(fleet.verify(&t, 2_000, DAY), Err(AuthError::Expired));
        assert_eq!(fleet.verify(&t, 1_999, DAY), Ok(v0("d")));
        assert_eq!(fleet.verify(&t, 1_000, 500), Err(AuthError::TooLong(500)));
    }

    #[test]
    fn malformed_headers_are_refused_not_panicked_on() {
        let fleet = FleetKey::new("k");
        assert_eq!(fleet.verify_header(None, 0, DAY), Err(AuthError::Missing));
        for h in [
            "Basic abc",
            "Bearer ",
            "Bearer sr=d",
            "Bearer sr=d&se=x&sig=AA",
            "Bearer sr=d&se=1&sig=%%%",
            "Bearer sr=&se=1&sig=AA",
            "Bearer a&b",
            "Bearer sr=d&se=1&sig=AA&x=1",
            "Bearer sr=d&se=1&kv=&sig=AA",
            "Bearer sr=d&se=1&kv=-1&sig=AA",
            "Bearer sr=d&se=1&kv=+1&sig=AA",
            "Bearer sr=d&se=1&kv=99999999999&sig=AA",
        ] {
            assert!(
                matches!(fleet.verify_header(Some(h), 0, DAY), Err(AuthError::Malformed(_))),
                "{h}"
            );
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let fleet = FleetKey::new("super-secret");
        assert!(!format!("{fleet:?}").contains("super"));
        assert!(!format!("{:?}", fleet.device_key("d")).contains(&fleet.device_key("d").to_base64()));
    }
}
