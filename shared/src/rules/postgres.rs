//! The PostgreSQL backend of [`RuleStore`]. Rule writers take a table lock
//! that only they conflict on (readers never wait), so the count limit and
//! the revision sequence hold under concurrent writers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::{AlertRule, MAX_RULES, RuleError, RuleSpec, RuleStore, Scope, Written, decide};
use crate::results::PgStore;

const SELECT: &str = "SELECT rule_id, metric, condition, threshold, hold_seconds, severity, scope_kind, scope,
        description, revision, deleted, created_at, updated_at FROM alert_rules";

/// The rules in PostgreSQL (`shared/migrations`).
#[derive(Clone, Debug)]
pub struct PgRules {
    pool: PgPool,
}

impl PgRules {
    /// Rules on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Rules on a lazily connecting pool (calls fail with
    /// [`crate::results::StoreError::Unavailable`] until PostgreSQL answers).
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, RuleError> {
        Ok(Self::new(PgStore::connect_lazy(url, max_connections)?.pool().clone()))
    }
}

fn decode<E: std::fmt::Display>(e: E) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn rule(r: &PgRow) -> Result<AlertRule, sqlx::Error> {
    let scope = Scope::from_parts(r.try_get("scope_kind")?, r.try_get("scope")?).map_err(decode)?;
    let hold: i32 = r.try_get("hold_seconds")?;
    let (group, device) = match scope {
        Scope::Group(g) => (Some(g), None),
        Scope::Device(d) => (None, Some(d)),
    };
    Ok(AlertRule {
        id: r.try_get("rule_id")?,
        spec: RuleSpec {
            metric: r.try_get("metric")?,
            condition: r.try_get::<&str, _>("condition")?.parse().map_err(decode)?,
            threshold: r.try_get("threshold")?,
            hold_seconds: u32::try_from(hold).map_err(decode)?,
            severity: r.try_get::<&str, _>("severity")?.parse().map_err(decode)?,
            group,
            device,
            description: r.try_get("description")?,
        },
        revision: r.try_get("revision")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        deleted: r.try_get("deleted")?,
    })
}

async fn stored(tx: &mut Transaction<'_, Postgres>, id: &str) -> Result<Option<AlertRule>, RuleError> {
    let row = sqlx::query(&format!("{SELECT} WHERE rule_id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.as_ref().map(rule).transpose()?)
}

#[async_trait]
impl RuleStore for PgRules {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn put(&self, id: &str, spec: &RuleSpec, now: DateTime<Utc>) -> Result<(AlertRule, Written), RuleError> {
        spec.validate(id)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE alert_rules IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let before = stored(&mut tx, id).await?;
        let written = decide(before.as_ref(), spec);
        if written == Written::Created {
            let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM alert_rules WHERE NOT deleted")
                .fetch_one(&mut *tx)
                .await?;
            if count >= MAX_RULES as i64 {
                return Err(RuleError::TooMany);
            }
        }
        let scope = spec.scope();
        let row = match (&before, written) {
            (Some(r), Written::Unchanged) => {
                tx.commit().await?;
                return Ok((r.clone(), written));
            }
            (None, _) => sqlx::query(
                "INSERT INTO alert_rules (rule_id, metric, condition, threshold, hold_seconds, severity,
                        scope_kind, scope, description, revision, deleted, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, false, $10, $10)
                     RETURNING *",
            ),
            (Some(_), _) => sqlx::query(
                "UPDATE alert_rules SET metric = $2, condition = $3, threshold = $4, hold_seconds = $5,
                    severity = $6, scope_kind = $7, scope = $8, description = $9, revision = revision + 1,
                    created_at = CASE WHEN deleted THEN $10 ELSE created_at END, deleted = false, updated_at = $10
                 WHERE rule_id = $1 RETURNING *",
            ),
        }
        .bind(id)
        .bind(&spec.metric)
        .bind(spec.condition.as_str())
        .bind(spec.threshold)
        .bind(i32::try_from(spec.hold_seconds).unwrap_or(i32::MAX))
        .bind(spec.severity.as_str())
        .bind(scope.kind())
        .bind(scope.name())
        .bind(&spec.description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let after = rule(&row)?;
        tx.commit().await?;
        Ok((after, written))
    }

    async fn get(&self, id: &str) -> Result<Option<AlertRule>, RuleError> {
        let row = sqlx::query(&format!("{SELECT} WHERE rule_id = $1 AND NOT deleted"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(rule).transpose()?)
    }

    async fn list(&self) -> Result<Vec<AlertRule>, RuleError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE NOT deleted ORDER BY rule_id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(rule).collect::<Result<_, _>>()?)
    }

    async fn delete(&self, id: &str, now: DateTime<Utc>) -> Result<AlertRule, RuleError> {
        let row = sqlx::query(
            "UPDATE alert_rules SET deleted = true, revision = revision + 1, updated_at = $2
             WHERE rule_id = $1 AND NOT deleted RETURNING *",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| RuleError::NotFound(id.to_owned()))?;
        Ok(rule(&row)?)
    }

    async fn records(&self) -> Result<Vec<AlertRule>, RuleError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY rule_id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(rule).collect::<Result<_, _>>()?)
    }
}
