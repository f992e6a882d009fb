//! The dashboard's PostgreSQL role: its password, set by the process that
//! migrates the database, so no one creates or alters the role by hand.
//!
//! The role itself comes from a migration (`tributary_readonly`: no login,
//! reads the results, may change an alert's state). [`enable_login`] gives
//! it LOGIN and a password. The password never reaches the server in clear:
//! the statement carries a SCRAM-SHA-256 verifier computed here (RFC 5802,
//! RFC 7677; what `psql`'s `\password` sends), which PostgreSQL stores as it
//! is, so neither the server's statement log nor `pg_stat_activity` sees it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreError;

type HmacSha256 = Hmac<Sha256>;

/// PostgreSQL's default iteration count for SCRAM-SHA-256 (`scram_iterations`).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The role the migrations create for the dashboard.
pub const READONLY_ROLE: &str = "tributary_readonly";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password`:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).
/// The password is used as bytes, without SASLprep: the same as PostgreSQL's
/// for passwords of printable ASCII, which is what Key Vault secrets hold here.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    // PBKDF2-HMAC-SHA256 with one 32-byte block: U1 = HMAC(p, salt || 1), Ui = HMAC(p, Ui-1).
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &first);
    let mut salted = u;
    for _ in 1..iterations {
        u = hmac(password.as_bytes(), &u);
        for (s, b) in salted.iter_mut().zip(u) {
            *s ^= b;
        }
    }
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// Let `role` log in with `password`, connecting as the administrator
/// (`admin`, the one that ran the migrations). Idempotent: run at every
/// start, it also rotates the password when the secret changed.
pub async fn enable_login(admin: &PgConnectOptions, role: &str, password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::Rejected(format!("the password for role {role} is empty")));
    }
    let salt = uuid::Uuid::new_v4().into_bytes();
    let verifier = scram_verifier(password, &salt, SCRAM_ITERATIONS);
    // A pool of one, not a bare connection: its futures are Send wherever
    // process runs this (a bare `&mut PgConnection` executor is not, in sqlx 0.8).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.clone())
        .await?;
    // Identifiers and literals cannot be bind parameters of ALTER ROLE: the
    // server quotes them (%I, %L), then the statement runs.
    let altered = async {
        let (statement,): (String,) = sqlx::query_as("SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1, $2)")
            .bind(role)
            .bind(&verifier)
            .fetch_one(&pool)
            .await?;
        sqlx::raw_sql(&statement).execute(&pool).await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    pool.close().await;
    Ok(altered?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_matches_an_independent_pbkdf2() {
        // Expected: Python's hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096), then hmac and sha256,
        // an implementation independent of this one.
        let v = scram_verifier("pencil", b"0123456789abcdef", 4096);
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }

    #[test]
    fn a_new_salt_gives_a_new_verifier_for_the_same_password() {
        assert_ne!(
            scram_verifier("pencil", b"salt-one-16bytes", 16),
            scram_verifier("pencil", b"salt-two-16bytes", 16)
        );
    }
}
