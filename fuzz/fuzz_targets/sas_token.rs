//! Fuzz the device token check, `tributary_shared::auth` (FleetKey,
//! DeviceKey, SAS token minting and verification).
//!
//! Two modes, chosen by the parity of byte 0:
//! - even (seeds start with `R`): the rest, as text, is a token or an
//!   `Authorization` header checked against a fixed fleet key and clock. A
//!   token that verifies names a valid device, is refused by any other fleet
//!   key, and its canonical re-mint verifies too; the header forms
//!   (`SharedAccessSignature `, `Bearer `) agree with the bare token; any
//!   other scheme is refused.
//! - odd (seeds start with `S`): the rest drives a structured case: a fleet
//!   secret, two different devices A and B, a clock, an expiry, a maximum
//!   lifetime, one tampering and a key version. A token minted by FleetKey
//!   for A at that version verifies as A at that version exactly when
//!   unexpired and within the maximum lifetime (Expired / TooLong otherwise);
//!   it never verifies for B (re-targeted, or signed with B's key), nor under
//!   another fleet key; a token of A's next version cannot claim this one;
//!   any one-byte change, truncation or extension of it is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_shared::auth::{AuthError, FleetKey, Verified};
use tributary_shared::model::valid_id;

/// Raw mode's fleet key and clock (the seeds' valid tokens are minted with them).
const FLEET: &str = "fuzz-fleet-key";
const NOW: u64 = 1_800_000_000;
const TTL: u64 = 86_400;

const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";

/// Reads the structured input; yields zeros once exhausted.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u64(&mut self, n: usize) -> u64 {
        (0..n).fold(0u64, |acc, _| (acc << 8) | u64::from(self.byte()))
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// A valid device id: 1..=128 characters of the id alphabet.
    fn device(&mut self) -> String {
        let len = 1 + usize::from(self.byte()) % 128;
        (0..len)
            .map(|_| char::from(ID_CHARS[usize::from(self.byte()) % ID_CHARS.len()]))
            .collect()
    }
}

fn refused(r: &Result<Verified, AuthError>) -> bool {
    r.is_err()
}

fn raw(text: &str) {
    let fleet = FleetKey::new(FLEET);
    let got = fleet.verify(text, NOW, TTL);
    if let Ok(verified) = &got {
        let device = &verified.device;
        assert!(valid_id(device), "verified an invalid device id {device:?}");
        assert_eq!(
            FleetKey::new("another-fleet").verify(text, NOW, TTL),
            Err(AuthError::BadSignature),
            "another fleet key accepted the token"
        );
        // The last `se=` wins, as in verify; its canonical token verifies the same.
        let se: u64 = text
            .split('&')
            .filter_map(|p| p.strip_prefix("se="))
            .last()
            .and_then(|s| s.parse().ok())
            .expect("a verified token has se");
        assert_eq!(
            fleet.verify(
                &fleet.device_key_at(device, verified.key_version).token(device, se),
                NOW,
                TTL
            ),
            Ok(verified.clone())
        );
        // A token that verifies now is expired at its expiry.
        assert_eq!(fleet.verify(text, se, u64::MAX), Err(AuthError::Expired));
    }
    // Header forms agree with the bare token (after trimming).
    let trimmed = text.trim();
    let bare = fleet.verify(trimmed, NOW, TTL);
    assert_eq!(
        fleet.verify_header(Some(&format!("SharedAccessSignature {text}")), NOW, TTL),
        bare
    );
    assert_eq!(fleet.verify_header(Some(&format!("Bearer {text}")), NOW, TTL), bare);
    // The text as a whole header: verified only under a known scheme.
    let as_header = fleet.verify_header(Some(text), NOW, TTL);
    if !(text.starts_with("SharedAccessSignature ") || text.starts_with("Bearer ")) {
        assert_eq!(as_header, Err(AuthError::Malformed("unknown scheme")));
    }
    assert_eq!(fleet.verify_header(None, NOW, TTL), Err(AuthError::Missing));
    // Error messages never carry key material.
    if let Err(e) = &got {
        assert!(!e.to_string().contains(FLEET));
    }
}

fn structured(data: &[u8]) {
    let mut c = Cursor(data);
    let secret_len = usize::from(c.byte() % 65);
    let secret = c.bytes(secret_len);
    let a = c.device();
    let mut b = c.device();
    if b == a {
        if b.len() < 128 {
            b.push('x')
        } else {
            b.pop();
        }
    }
    let now = c.u64(8);
    let expiry = now.saturating_add_signed(c.u64(4) as u32 as i32 as i64);
    let ttl = c.u64(4);
    let (tamper_pos, tamper_byte, tamper_op) = (c.u64(2) as usize, c.byte(), c.byte());
    let version = u32::from(c.byte() % 3);

    let fleet = FleetKey::new(&secret);
    let key_a = fleet.device_key_at(&a, version);
    let token = key_a.token(&a, expiry);

    // Minted by the fleet key: verifies as A exactly within its lifetime.
    let expected = if expiry <= now {
        Err(AuthError::Expired)
    } else if expiry - now > ttl {
        Err(AuthError::TooLong(ttl))
    } else {
        Ok(Verified {
            device: a.clone(),
            key_version: version,
        })
    };
    assert_eq!(
        fleet.verify(&token, now, ttl),
        expected,
        "token {token} now {now} ttl {ttl}"
    );
    assert_eq!(
        fleet.verify_header(Some(&format!("SharedAccessSignature {token}")), now, ttl),
        expected
    );
    assert_eq!(
        fleet.verify_header(Some(&format!("Bearer {token}")), now, ttl),
        expected
    );
    // Signature failures take precedence: whatever the clock, A's token never verifies for B.
    let retargeted = format!(
        "sr={b}&{}",
        token.split_once('&').expect("sr=..&se=..[&kv=..]&sig=..").1
    );
    assert_eq!(
        fleet.verify(&retargeted, now, ttl),
        Err(AuthError::BadSignature),
        "A's token verified for B"
    );
    assert_eq!(
        fleet.verify(&fleet.device_key_at(&b, version).token(&a, expiry), now, ttl),
        Err(AuthError::BadSignature),
        "B's key signed for A"
    );
    assert_eq!(
        fleet.verify(&key_a.token(&b, expiry), now, ttl),
        Err(AuthError::BadSignature),
        "A's key signed for B"
    );
    // A token from A's next key version cannot claim this version.
    let next = version + 1;
    let claimed = fleet.device_key_at(&a, next).token(&a, expiry).replace(
        &format!("&kv={next}"),
        &if version == 0 {
            String::new()
        } else {
            format!("&kv={version}")
        },
    );
    assert_eq!(
        fleet.verify(&claimed, now, ttl),
        Err(AuthError::BadSignature),
        "a token of key version {next} verified as version {version}"
    );
    // Another fleet key refuses it.
    let mut other = secret.clone();
    other.push(0x5a);
    assert_eq!(
        FleetKey::new(&other).verify(&token, now, ttl),
        Err(AuthError::BadSignature),
        "another fleet key accepted A's token"
    );
    // Keys never show in Debug output.
    assert!(!format!("{key_a:?}").contains(&key_a.to_base64()));

    // One tampering: the result is never a verified token.
    let mut t = token.clone().into_bytes();
    let pos = tamper_pos % t.len();
    match tamper_op % 3 {
        0 => {
            if t[pos] == tamper_byte {
                return;
            }
            t[pos] = tamper_byte;
        }
        1 => t.truncate(pos),
        _ => t.push(tamper_byte),
    }
    let tampered = String::from_utf8_lossy(&t);
    let got = fleet.verify(&tampered, now, ttl);
    assert!(
        refused(&got),
        "tampered token {tampered:?} (from {token}) verified as {got:?}"
    );
    assert!(
        !matches!(got, Err(AuthError::Expired) | Err(AuthError::TooLong(_))),
        "a tampered token got past the signature check: {got:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(&String::from_utf8_lossy(rest));
    } else {
        structured(rest);
    }
});
