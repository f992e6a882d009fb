//! The PostgreSQL backend of [`DeliveryQueue`] (`shared/migrations`), on the
//! channel store's pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::postgres::{PgChannels, decode, insert_letter};
use super::queue::{Backlog, DeliveryQueue, MAX_RESEND, Pending, Queued, Resent, Retry, alert_json, alert_of};
use super::store::{ChannelError, DeadLetter};

const PENDING: &str = "SELECT seq, channel_id, idempotency_key, alert, group_name, attempts, first_attempt_at,
        next_attempt_at, last_status, last_error FROM notify_queue";
/// Rows per INSERT: well under PostgreSQL's 65535 bind parameters.
const CHUNK: usize = 1000;

fn pending(r: &PgRow) -> Result<Pending, sqlx::Error> {
    Ok(Pending {
        seq: r.try_get("seq")?,
        queued: Queued {
            channel_id: r.try_get("channel_id")?,
            key: r.try_get("idempotency_key")?,
            alert: alert_of(r.try_get("alert")?)?,
            group: r.try_get("group_name")?,
        },
        attempts: u32::try_from(r.try_get::<i32, _>("attempts")?).map_err(decode)?,
        first_attempt_at: r.try_get("first_attempt_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status: r
            .try_get::<Option<i32>, _>("last_status")?
            .map(u16::try_from)
            .transpose()
            .map_err(decode)?,
        last_error: r.try_get("last_error")?,
    })
}

async fn exists(pool: &sqlx::PgPool, channel: &str) -> Result<(), ChannelError> {
    let found = sqlx::query("SELECT 1 FROM notify_channels WHERE channel_id = $1")
        .bind(channel)
        .fetch_optional(pool)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ChannelError::NotFound(channel.to_owned()))
}

#[async_trait]
impl DeliveryQueue for PgChannels {
    async fn enqueue(&self, items: &[Queued], now: DateTime<Utc>) -> Result<u64, ChannelError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in items.chunks(CHUNK) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO notify_queue (channel_id, idempotency_key, alert, group_name, enqueued_at, next_attempt_at) ",
            );
            q.push_values(chunk, |mut b, i| {
                b.push_bind(&i.channel_id)
                    .push_bind(&i.key)
                    .push_bind(alert_json(&i.alert))
                    .push_bind(&i.group)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (channel_id, idempotency_key) DO NOTHING");
            added += q.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<String>, ChannelError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT channel_id FROM notify_queue WHERE next_attempt_at <= $1 AND seq IN
               (SELECT min(seq) FROM notify_queue WHERE done_at IS NULL GROUP BY channel_id)
             ORDER BY channel_id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    async fn lease(
        &self,
        channel: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, ChannelError> {
        let got = sqlx::query(
            "INSERT INTO notify_leases (channel_id, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (channel_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
             WHERE notify_leases.holder = EXCLUDED.holder OR notify_leases.expires_at <= $4
             RETURNING channel_id",
        )
        .bind(channel)
        .bind(holder)
        .bind(until)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(got.is_some())
    }

    async fn release(&self, channel: &str, holder: &str) -> Result<(), ChannelError> {
        sqlx::query("DELETE FROM notify_leases WHERE channel_id = $1 AND holder = $2")
            .bind(channel)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn head(&self, channel: &str) -> Result<Option<Pending>, ChannelError> {
        let row = sqlx::query(&format!(
            "{PENDING} WHERE channel_id = $1 AND done_at IS NULL ORDER BY seq LIMIT 1"
        ))
        .bind(channel)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(pending).transpose()?)
    }

    async fn delivered(&self, seq: i64, now: DateTime<Utc>) -> Result<(), ChannelError> {
        sqlx::query("UPDATE notify_queue SET done_at = $2, attempts = attempts + 1 WHERE seq = $1")
            .bind(seq)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn retry(&self, seq: i64, r: &Retry) -> Result<(), ChannelError> {
        sqlx::query(
            "UPDATE notify_queue SET attempts = $2, first_attempt_at = $3, next_attempt_at = $4, last_status = $5,
                last_error = $6 WHERE seq = $1",
        )
        .bind(seq)
        .bind(i32::try_from(r.attempts).unwrap_or(i32::MAX))
        .bind(r.first_attempt_at)
        .bind(r.next_attempt_at)
        .bind(r.status.map(i32::from))
        .bind(&r.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn give_up(&self, seq: i64, letter: &DeadLetter, now: DateTime<Utc>) -> Result<(), ChannelError> {
        let mut tx = self.pool.begin().await?;
        insert_letter(&mut *tx, letter).await?;
        sqlx::query("UPDATE notify_queue SET done_at = $2, attempts = $3 WHERE seq = $1")
            .bind(seq)
            .bind(now)
            .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn resend(&self, channel: &str, keys: Option<&[String]>, now: DateTime<Utc>) -> Result<Resent, ChannelError> {
        exists(&self.pool, channel).await?;
        let mut tx = self.pool.begin().await?;
        // Oldest first, so they go again in the order they first came.
        let rows: Vec<(String, Option<String>, Option<String>)> = match keys {
            Some(keys) => {
                sqlx::query_as(
                    "SELECT idempotency_key, alert, group_name FROM notify_dead_letters
                     WHERE channel_id = $1 AND idempotency_key = ANY($2) ORDER BY failed_at, idempotency_key LIMIT $3",
                )
                .bind(channel)
                .bind(keys)
                .bind(i64::from(MAX_RESEND))
                .fetch_all(&mut *tx)
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT idempotency_key, alert, group_name FROM notify_dead_letters
                     WHERE channel_id = $1 ORDER BY failed_at, idempotency_key LIMIT $2",
                )
                .bind(channel)
                .bind(i64::from(MAX_RESEND))
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut done = Resent::default();
        for (key, alert, group) in rows {
            let (Some(alert), Some(group)) = (alert, group) else {
                done.not_resendable += 1;
                continue;
            };
            sqlx::query("DELETE FROM notify_queue WHERE channel_id = $1 AND idempotency_key = $2")
                .bind(channel)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO notify_queue (channel_id, idempotency_key, alert, group_name, enqueued_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(channel)
            .bind(&key)
            .bind(&alert)
            .bind(&group)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM notify_dead_letters WHERE channel_id = $1 AND idempotency_key = $2")
                .bind(channel)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            done.resent += 1;
        }
        tx.commit().await?;
        Ok(done)
    }

    async fn backlog(&self) -> Result<Vec<Backlog>, ChannelError> {
        let rows = sqlx::query(
            "SELECT q.channel_id, h.n, q.enqueued_at, q.attempts, q.next_attempt_at, q.last_error
             FROM notify_queue q JOIN (SELECT min(seq) AS head, count(*) AS n FROM notify_queue
                                       WHERE done_at IS NULL GROUP BY channel_id) h ON q.seq = h.head
             ORDER BY q.channel_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let backlog = rows
            .iter()
            .map(|r| -> Result<Backlog, sqlx::Error> {
                Ok(Backlog {
                    channel_id: r.try_get("channel_id")?,
                    queued: u64::try_from(r.try_get::<i64, _>("n")?).map_err(decode)?,
                    oldest_queued_at: Some(r.try_get("enqueued_at")?),
                    attempts: u32::try_from(r.try_get::<i32, _>("attempts")?).map_err(decode)?,
                    next_attempt_at: Some(r.try_get("next_attempt_at")?),
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(backlog)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, ChannelError> {
        let gone = sqlx::query("DELETE FROM notify_queue WHERE done_at IS NOT NULL AND done_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(gone)
    }
}
