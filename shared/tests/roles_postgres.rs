//! The dashboard's PostgreSQL role against the real server (`DATABASE_URL`;
//! each test gets its own migrated database from `#[sqlx::test]`): what the
//! migrations let it do, and the password process gives it.
//!
//! The server here trusts local connections, so a login with the password is
//! not tried; what is checked instead is that the server stored the SCRAM
//! verifier exactly as sent (it hashes anything that is not a valid verifier,
//! which would store something else) and that it verifies the password.

use sqlx::{Connection, PgPool, Row};
use tributary_shared::results::StoreError;
use tributary_shared::results::roles::{READONLY_ROLE, SCRAM_ITERATIONS, enable_login, scram_verifier};

/// A role of this test's own (roles are per server: tests running at the same
/// time must not rotate one another's password).
async fn own_role(pool: &PgPool) -> String {
    let role = format!("tributary_roles_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE ROLE {role} NOLOGIN"))
        .execute(pool)
        .await
        .expect("create role");
    role
}

async fn login_and_verifier(pool: &PgPool, role: &str) -> (bool, String) {
    let row = sqlx::query("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(pool)
        .await
        .expect("pg_authid");
    // No password yet: NULL.
    (row.get(0), row.get::<Option<String>, _>(1).unwrap_or_default())
}

fn verifies(password: &str, stored: &str) -> bool {
    // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    let Some((head, _)) = stored.rsplit_once('$') else {
        return false;
    };
    let Some((_, salt)) = head.split_once(':') else {
        return false;
    };
    use base64::Engine;
    let Ok(salt) = base64::engine::general_purpose::STANDARD.decode(salt) else {
        return false;
    };
    scram_verifier(password, &salt, SCRAM_ITERATIONS) == stored
}

#[sqlx::test(migrations = "./migrations")]
async fn the_password_arrives_as_a_verifier_the_server_keeps(pool: PgPool) {
    let role = own_role(&pool).await;
    assert!(!login_and_verifier(&pool, &role).await.0);
    let password = "s3cret with 'quotes' and $dollars";
    enable_login(&pool.connect_options(), &role, password)
        .await
        .expect("enable login");
    let (login, stored) = login_and_verifier(&pool, &role).await;
    assert!(login, "the role may log in");
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(
        verifies(password, &stored),
        "the stored verifier is the one sent, for this password"
    );
    assert!(!verifies("another password", &stored));

    // Every start sets it again: a rotated secret replaces the old password (new salt, new verifier).
    enable_login(&pool.connect_options(), &role, "rotated")
        .await
        .expect("rotate");
    let (_, rotated) = login_and_verifier(&pool, &role).await;
    assert!(verifies("rotated", &rotated) && !verifies(password, &rotated));
    sqlx::raw_sql(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await
        .expect("drop role");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_missing_role_or_an_empty_password_is_an_error(pool: PgPool) {
    let err = enable_login(&pool.connect_options(), "tributary_no_such_role", "x")
        .await
        .expect_err("no such role");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let role = own_role(&pool).await;
    let err = enable_login(&pool.connect_options(), &role, "")
        .await
        .expect_err("empty");
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert!(!login_and_verifier(&pool, &role).await.0, "nothing changed");
    sqlx::raw_sql(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await
        .expect("drop role");
}

/// Runs `sql` as the dashboard's role; the SQLSTATE when it fails.
async fn as_dashboard(pool: &PgPool, sql: &str) -> Result<(), String> {
    let mut conn = pool.acquire().await.expect("connection");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql(&format!("SET LOCAL ROLE {READONLY_ROLE}"))
        .execute(&mut *tx)
        .await
        .expect("set role");
    let out = sqlx::raw_sql(sql).execute(&mut *tx).await;
    tx.rollback().await.expect("rollback");
    out.map(|_| ()).map_err(|e| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => other.to_string(),
    })
}

#[sqlx::test(migrations = "./migrations")]
async fn the_migrated_role_reads_everything_and_changes_only_an_alerts_state(pool: PgPool) {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(READONLY_ROLE)
        .fetch_one(&pool)
        .await
        .expect("pg_roles");
    assert!(exists, "the migrations create the role");
    for table in ["devices", "aggregates", "alerts", "rollups"] {
        assert_eq!(
            as_dashboard(&pool, &format!("SELECT * FROM {table} LIMIT 1")).await,
            Ok(()),
            "{table}"
        );
    }
    let denied = Err("42501".to_owned()); // insufficient_privilege
    assert_eq!(
        as_dashboard(
            &pool,
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = 'op' WHERE false"
        )
        .await,
        Ok(())
    );
    assert_eq!(
        as_dashboard(&pool, "UPDATE alerts SET resolved_at = now() WHERE false").await,
        Ok(())
    );
    assert_eq!(
        as_dashboard(&pool, "UPDATE alerts SET device_id = 'x' WHERE false").await,
        denied
    );
    assert_eq!(as_dashboard(&pool, "DELETE FROM alerts WHERE false").await, denied);
    assert_eq!(as_dashboard(&pool, "DELETE FROM aggregates WHERE false").await, denied);
    assert_eq!(
        as_dashboard(&pool, "UPDATE devices SET last_seen = now() WHERE false").await,
        denied
    );
    assert_eq!(
        as_dashboard(&pool, "SELECT * FROM rollup_dirty LIMIT 1").await,
        denied,
        "the job's queue is process's"
    );
    assert_eq!(
        as_dashboard(&pool, "CREATE TABLE dashboard_was_here (x int)").await,
        denied
    );
}
