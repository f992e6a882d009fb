//! The local backend of [`RawStore`](super::RawStore) for the all-in-one
//! mode: one SQLite file in the data directory standing in for Cosmos DB.
//!
//! Same contract as the Cosmos DB backend: one row per reading keyed like a
//! Cosmos document (partition = device, id = reading id), upserts so replays
//! leave one row, range queries per device oldest first, a page at a time
//! (the continuation is the last row's `(eventTime, id)`).

use std::str::FromStr;
use std::time::Duration;

use crate::model::Reading;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{Page, RawStore, StoreError};

/// Raw readings in an SQLite file.
#[derive(Clone, Debug)]
pub struct LocalRawStore {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl LocalRawStore {
    /// Open (creating if missing) the store at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Permanent(format!("raw store URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS raw_readings (
                 device_id TEXT NOT NULL,
                 id        TEXT NOT NULL,
                 event_ms  INTEGER NOT NULL,
                 doc       TEXT NOT NULL,
                 PRIMARY KEY (device_id, id)
             ) WITHOUT ROWID",
        )
        .execute(&pool)
        .await
        .map_err(unavailable)?;
        sqlx::query("CREATE INDEX IF NOT EXISTS raw_readings_time ON raw_readings (device_id, event_ms, id)")
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(Self { pool })
    }

    /// Number of stored readings (for tests and the status line).
    pub async fn count(&self) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM raw_readings")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(n)
    }
}

#[async_trait]
impl RawStore for LocalRawStore {
    async fn upsert_batch(&self, readings: &[Reading]) -> Vec<Result<(), StoreError>> {
        let write = async {
            let mut tx = self.pool.begin().await?;
            for chunk in readings.chunks(5000) {
                let mut q =
                    sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO raw_readings (device_id, id, event_ms, doc) ");
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.device_id)
                        .push_bind(&r.id)
                        .push_bind(r.event_time.timestamp_millis())
                        .push_bind(serde_json::to_string(r).unwrap_or_default());
                });
                q.push(" ON CONFLICT (device_id, id) DO UPDATE SET event_ms = excluded.event_ms, doc = excluded.doc");
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        };
        // One transaction: all stored or none (then every reading reports the same retryable failure).
        match write.await {
            Ok(()) => readings.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                let err = unavailable(e);
                readings.iter().map(|_| Err(err.clone())).collect()
            }
        }
    }

    async fn query_device_range(
        &self,
        device: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page_size: u32,
        continuation: Option<String>,
    ) -> Result<Page, StoreError> {
        let (after_ms, after_id) = match continuation.as_deref() {
            None => (i64::MIN, String::new()),
            Some(c) => {
                let (ms, id) = c
                    .split_once(':')
                    .ok_or_else(|| StoreError::Permanent(format!("bad continuation '{c}'")))?;
                (
                    ms.parse()
                        .map_err(|_| StoreError::Permanent(format!("bad continuation '{c}'")))?,
                    id.to_owned(),
                )
            }
        };
        let limit = i64::from(page_size.max(1));
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT event_ms, id, doc FROM raw_readings
             WHERE device_id = ? AND event_ms >= ? AND event_ms < ? AND (event_ms, id) > (?, ?)
             ORDER BY event_ms, id LIMIT ?",
        )
        .bind(device)
        .bind(from.timestamp_millis())
        .bind(to.timestamp_millis())
        .bind(after_ms)
        .bind(&after_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for (ms, id, doc) in rows.into_iter().take(limit as usize) {
            items.push(
                serde_json::from_str::<Reading>(&doc)
                    .map_err(|e| StoreError::Permanent(format!("stored document is not a Reading: {e}")))?,
            );
            last = Some(format!("{ms}:{id}"));
        }
        Ok(Page {
            items,
            continuation: if more { last } else { None },
        })
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
