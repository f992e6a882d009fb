//! The SQLite backend of [`RuleStore`], for the all-in-one mode: the same
//! file as the results store, times in integer milliseconds as there.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::{AlertRule, MAX_RULES, RuleError, RuleSpec, RuleStore, Scope, Written, decide};
use crate::results::SqliteStore;
use crate::results::sqlite::{ms, time};

const SELECT: &str = "SELECT rule_id, metric, condition, threshold, hold_seconds, severity, scope_kind, scope,
        description, revision, deleted, created_at, updated_at FROM alert_rules";

/// The rules in the embedded SQLite results file (`shared/migrations-sqlite`).
#[derive(Clone, Debug)]
pub struct SqliteRules {
    pool: SqlitePool,
}

impl SqliteRules {
    /// Rules on `pool` (a results store's).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Open (creating if missing) the database at `url` (`sqlite://PATH`),
    /// with the results store's settings.
    pub async fn open(url: &str) -> Result<Self, RuleError> {
        Ok(Self::new(SqliteStore::open(url).await?.pool().clone()))
    }
}

fn decode<E: std::fmt::Display>(e: E) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn rule(r: &SqliteRow) -> Result<AlertRule, sqlx::Error> {
    let scope = Scope::from_parts(r.try_get("scope_kind")?, r.try_get("scope")?).map_err(decode)?;
    let hold: i64 = r.try_get("hold_seconds")?;
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
        created_at: time(r.try_get("created_at")?),
        updated_at: time(r.try_get("updated_at")?),
        deleted: r.try_get("deleted")?,
    })
}

async fn stored(tx: &mut Transaction<'_, Sqlite>, id: &str) -> Result<Option<AlertRule>, RuleError> {
    let row = sqlx::query(&format!("{SELECT} WHERE rule_id = ?"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.as_ref().map(rule).transpose()?)
}

#[async_trait]
impl RuleStore for SqliteRules {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn put(&self, id: &str, spec: &RuleSpec, now: DateTime<Utc>) -> Result<(AlertRule, Written), RuleError> {
        spec.validate(id)?;
        let mut tx = self.pool.begin().await?;
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, 0, ?10, ?10)
                 RETURNING *",
            ),
            (Some(_), _) => sqlx::query(
                "UPDATE alert_rules SET metric = ?2, condition = ?3, threshold = ?4, hold_seconds = ?5,
                    severity = ?6, scope_kind = ?7, scope = ?8, description = ?9, revision = revision + 1,
                    created_at = CASE WHEN deleted THEN ?10 ELSE created_at END, deleted = 0, updated_at = ?10
                 WHERE rule_id = ?1 RETURNING *",
            ),
        }
        .bind(id)
        .bind(&spec.metric)
        .bind(spec.condition.as_str())
        .bind(spec.threshold)
        .bind(i64::from(spec.hold_seconds))
        .bind(spec.severity.as_str())
        .bind(scope.kind())
        .bind(scope.name())
        .bind(&spec.description)
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?;
        let after = rule(&row)?;
        tx.commit().await?;
        Ok((after, written))
    }

    async fn get(&self, id: &str) -> Result<Option<AlertRule>, RuleError> {
        let row = sqlx::query(&format!("{SELECT} WHERE rule_id = ? AND NOT deleted"))
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
            "UPDATE alert_rules SET deleted = 1, revision = revision + 1, updated_at = ?2
             WHERE rule_id = ?1 AND NOT deleted RETURNING *",
        )
        .bind(id)
        .bind(ms(now))
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
