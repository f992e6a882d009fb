//! The SQLite backend of [`ChannelStore`], for the all-in-one mode
//! (`shared/migrations-sqlite`; times in integer milliseconds).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::store::{ChannelError, ChannelStore, DeadLetter, MAX_CHANNELS, MAX_DEAD_LETTERS, decide};
use super::{Channel, ChannelSpec};
use crate::results::SqliteStore;
use crate::results::sqlite::{ms, time};
use crate::rules::Written;

const SELECT: &str = "SELECT channel_id, url, format, secret, groups, min_severity, enabled FROM notify_channels";
const LETTERS: &str = "SELECT channel_id, idempotency_key, alert_id, device_id, severity, state, attempts, status,
        error, body, failed_at, alert, group_name FROM notify_dead_letters";

/// Channels in the embedded SQLite results file.
#[derive(Clone, Debug)]
pub struct SqliteChannels {
    pub(super) pool: SqlitePool,
}

impl SqliteChannels {
    /// Channels on `pool` (a results store's).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Open (creating if missing) the database at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<Self, ChannelError> {
        Ok(Self::new(SqliteStore::open(url).await?.pool().clone()))
    }
}

pub(super) fn decode<E: std::fmt::Display>(e: E) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn channel(r: &SqliteRow) -> Result<Channel, sqlx::Error> {
    Ok(Channel {
        id: r.try_get("channel_id")?,
        spec: ChannelSpec {
            url: r.try_get("url")?,
            format: r.try_get::<&str, _>("format")?.parse().map_err(decode)?,
            secret: r.try_get("secret")?,
            groups: serde_json::from_str(r.try_get("groups")?).map_err(decode)?,
            min_severity: r.try_get::<&str, _>("min_severity")?.parse().map_err(decode)?,
            enabled: r.try_get("enabled")?,
        },
    })
}

fn letter(r: &SqliteRow) -> Result<DeadLetter, sqlx::Error> {
    Ok(DeadLetter {
        channel_id: r.try_get("channel_id")?,
        key: r.try_get("idempotency_key")?,
        alert_id: r.try_get("alert_id")?,
        device_id: r.try_get("device_id")?,
        severity: r.try_get::<&str, _>("severity")?.parse().map_err(decode)?,
        state: r.try_get("state")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).map_err(decode)?,
        status: r
            .try_get::<Option<i64>, _>("status")?
            .map(u16::try_from)
            .transpose()
            .map_err(decode)?,
        error: r.try_get("error")?,
        body: r.try_get("body")?,
        failed_at: time(r.try_get("failed_at")?),
        alert: r
            .try_get::<Option<&str>, _>("alert")?
            .map(super::queue::alert_of)
            .transpose()?,
        group: r.try_get("group_name")?,
    })
}

/// Keep (or update) a dead letter, on `e` (a pool or a transaction).
pub(crate) async fn insert_letter<'e, E: sqlx::SqliteExecutor<'e>>(e: E, l: &DeadLetter) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO notify_dead_letters (channel_id, idempotency_key, alert_id, device_id, severity, state, attempts,
            status, error, body, failed_at, alert, group_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (channel_id, idempotency_key) DO UPDATE SET
           attempts = notify_dead_letters.attempts + excluded.attempts, status = excluded.status,
           error = excluded.error, body = excluded.body, failed_at = excluded.failed_at,
           alert = COALESCE(excluded.alert, notify_dead_letters.alert),
           group_name = COALESCE(excluded.group_name, notify_dead_letters.group_name)",
    )
    .bind(&l.channel_id)
    .bind(&l.key)
    .bind(&l.alert_id)
    .bind(&l.device_id)
    .bind(l.severity.as_str())
    .bind(&l.state)
    .bind(i64::from(l.attempts))
    .bind(l.status.map(i64::from))
    .bind(&l.error)
    .bind(&l.body)
    .bind(ms(l.failed_at))
    .bind(l.alert.as_ref().map(super::queue::alert_json))
    .bind(&l.group)
    .execute(e)
    .await?;
    Ok(())
}

#[async_trait]
impl ChannelStore for SqliteChannels {
    async fn put(&self, id: &str, spec: &ChannelSpec, now: DateTime<Utc>) -> Result<(Channel, Written), ChannelError> {
        spec.validate(id)?;
        let mut tx = self.pool.begin().await?;
        let before = sqlx::query(&format!("{SELECT} WHERE channel_id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(channel)
            .transpose()?;
        let written = decide(before.as_ref().map(|c| &c.spec), spec);
        let groups = serde_json::to_string(&spec.groups).unwrap_or_else(|_| "[]".into());
        match written {
            Written::Unchanged => {}
            Written::Created => {
                let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM notify_channels")
                    .fetch_one(&mut *tx)
                    .await?;
                if count >= MAX_CHANNELS as i64 {
                    return Err(ChannelError::TooMany);
                }
                sqlx::query(
                    "INSERT INTO notify_channels (channel_id, url, format, secret, groups, min_severity, enabled, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                )
                .bind(id)
                .bind(&spec.url)
                .bind(spec.format.as_str())
                .bind(&spec.secret)
                .bind(&groups)
                .bind(spec.min_severity.as_str())
                .bind(spec.enabled)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            }
            Written::Updated => {
                sqlx::query(
                    "UPDATE notify_channels SET url = ?2, format = ?3, secret = ?4, groups = ?5, min_severity = ?6,
                        enabled = ?7, updated_at = ?8 WHERE channel_id = ?1",
                )
                .bind(id)
                .bind(&spec.url)
                .bind(spec.format.as_str())
                .bind(&spec.secret)
                .bind(&groups)
                .bind(spec.min_severity.as_str())
                .bind(spec.enabled)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok((
            Channel {
                id: id.to_owned(),
                spec: spec.clone(),
            },
            written,
        ))
    }

    async fn get(&self, id: &str) -> Result<Option<Channel>, ChannelError> {
        let row = sqlx::query(&format!("{SELECT} WHERE channel_id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(channel).transpose()?)
    }

    async fn list(&self) -> Result<Vec<Channel>, ChannelError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY channel_id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(channel).collect::<Result<_, _>>()?)
    }

    async fn delete(&self, id: &str) -> Result<(), ChannelError> {
        let mut tx = self.pool.begin().await?;
        for table in ["notify_dead_letters", "notify_queue", "notify_leases"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE channel_id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM notify_channels WHERE channel_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(ChannelError::NotFound(id.to_owned()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letter(&self, l: &DeadLetter) -> Result<(), ChannelError> {
        insert_letter(&self.pool, l).await?;
        Ok(())
    }

    async fn dead_letters(&self, channel_id: &str, limit: u32) -> Result<(Vec<DeadLetter>, u64), ChannelError> {
        let rows = sqlx::query(&format!(
            "{LETTERS} WHERE channel_id = ? ORDER BY failed_at DESC, idempotency_key LIMIT ?"
        ))
        .bind(channel_id)
        .bind(i64::from(limit.clamp(1, MAX_DEAD_LETTERS)))
        .fetch_all(&self.pool)
        .await?;
        let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM notify_dead_letters WHERE channel_id = ?")
            .bind(channel_id)
            .fetch_one(&self.pool)
            .await?;
        Ok((
            rows.iter().map(letter).collect::<Result<_, _>>()?,
            u64::try_from(total).unwrap_or(0),
        ))
    }
}
