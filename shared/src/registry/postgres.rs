//! The PostgreSQL backend of [`DeviceRegistry`]: an import is one `UNNEST`
//! upsert in one transaction, whatever its size.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::{
    DeviceRegistry, DeviceStatus, Enrollment, ImportOutcome, NewDevice, RegisteredDevice, RegistryError, RegistryQuery,
    validate_all,
};
use crate::results::PgStore;
use crate::results::listing::like_pattern;

const COLUMNS: &str =
    "SELECT r.device_id, r.display_name, r.device_group, r.tags::text AS tags, r.status, r.key_version,
        r.enrolled_by, r.revision, r.created_at, r.updated_at, d.last_seen";
const SELECT: &str =
    "SELECT r.device_id, r.display_name, r.device_group, r.tags::text AS tags, r.status, r.key_version,
        r.enrolled_by, r.revision, r.created_at, r.updated_at, d.last_seen
 FROM device_registry r LEFT JOIN devices d ON d.device_id = r.device_id";

/// The registry in PostgreSQL (`shared/migrations`).
#[derive(Clone, Debug)]
pub struct PgRegistry {
    pool: PgPool,
}

impl PgRegistry {
    /// A registry on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A registry on a lazily connecting pool (calls fail with
    /// [`crate::results::StoreError::Unavailable`] until PostgreSQL answers).
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, RegistryError> {
        // The results store's pool settings: the registry is in the same database.
        Ok(Self::new(PgStore::connect_lazy(url, max_connections)?.pool().clone()))
    }
}

fn device(r: &PgRow) -> Result<RegisteredDevice, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let tags: String = r.try_get("tags")?;
    let key_version: i32 = r.try_get("key_version")?;
    Ok(RegisteredDevice {
        id: r.try_get("device_id")?,
        name: r.try_get("display_name")?,
        group: r.try_get("device_group")?,
        tags: serde_json::from_str(&tags).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        status: status.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        key_version: u32::try_from(key_version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        enrolled_by: Enrollment::parse(r.try_get("enrolled_by")?),
        revision: r.try_get("revision")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        last_seen: r.try_get("last_seen")?,
    })
}

impl PgRegistry {
    async fn required(&self, id: &str) -> Result<RegisteredDevice, RegistryError> {
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }
}

#[async_trait]
impl DeviceRegistry for PgRegistry {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), RegistryError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    async fn add(&self, d: &NewDevice, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError> {
        d.validate()?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO device_registry AS r (device_id, display_name, device_group, tags, enrolled_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4::jsonb, 'operator', $5, $5)
             ON CONFLICT (device_id) DO UPDATE SET
               display_name = EXCLUDED.display_name, device_group = EXCLUDED.device_group, tags = EXCLUDED.tags,
               enrolled_by = 'operator', revision = r.revision + 1, updated_at = EXCLUDED.updated_at
             WHERE r.enrolled_by = 'first-contact'",
        )
        .bind(&d.id)
        .bind(&d.name)
        .bind(d.group())
        .bind(d.tags_json())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(RegistryError::Exists(d.id.clone()));
        }
        record_change(&mut tx, &d.id, now).await?;
        tx.commit().await?;
        self.required(&d.id).await
    }

    async fn import(&self, devices: &[NewDevice], now: DateTime<Utc>) -> Result<ImportOutcome, RegistryError> {
        validate_all(devices)?;
        if devices.is_empty() {
            return Ok(ImportOutcome::default());
        }
        // One statement: the upsert, and a change recorded for each row it
        // wrote. A device the file describes as it is already is not
        // touched, so importing a file again moves no revision.
        let revisions: Vec<i64> = sqlx::query_scalar(
            "WITH written AS (
               INSERT INTO device_registry AS r (device_id, display_name, device_group, tags, enrolled_by, created_at, updated_at)
               SELECT id, name, grp, tags::jsonb, 'operator', $5, $5
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS t(id, name, grp, tags)
               ON CONFLICT (device_id) DO UPDATE SET
                 display_name = EXCLUDED.display_name, device_group = EXCLUDED.device_group, tags = EXCLUDED.tags,
                 enrolled_by = 'operator', revision = r.revision + 1, updated_at = EXCLUDED.updated_at
               WHERE (r.display_name, r.device_group, r.tags, r.enrolled_by) IS DISTINCT FROM
                     (EXCLUDED.display_name, EXCLUDED.device_group, EXCLUDED.tags, 'operator')
               RETURNING r.device_id, r.revision
             ), recorded AS (
               INSERT INTO device_registry_changes (device_id, changed_at) SELECT device_id, $5 FROM written
             )
             SELECT revision FROM written",
        )
        .bind(devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>())
        .bind(devices.iter().map(|d| d.name.as_deref()).collect::<Vec<_>>())
        .bind(devices.iter().map(NewDevice::group).collect::<Vec<_>>())
        .bind(devices.iter().map(NewDevice::tags_json).collect::<Vec<_>>())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(outcome(devices.len(), &revisions))
    }

    async fn get(&self, id: &str) -> Result<Option<RegisteredDevice>, RegistryError> {
        let row = sqlx::query(&format!("{SELECT} WHERE r.device_id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(device).transpose()?)
    }

    async fn list(&self, q: &RegistryQuery) -> Result<Vec<RegisteredDevice>, RegistryError> {
        let rows = sqlx::query(&format!(
            "{SELECT}
             WHERE ($1::text IS NULL OR r.device_id > $1)
               AND ($2::text IS NULL OR r.device_group = $2)
               AND ($3::text IS NULL OR r.status = $3)
               AND ($4::text IS NULL OR r.device_id ILIKE $4 OR r.display_name ILIKE $4)
             ORDER BY r.device_id LIMIT $5"
        ))
        .bind(&q.after)
        .bind(&q.group)
        .bind(q.status.map(DeviceStatus::as_str))
        .bind(q.search.as_deref().map(like_pattern))
        .bind(q.effective_limit())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(device).collect::<Result<_, _>>()?)
    }

    async fn count(&self) -> Result<u64, RegistryError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM device_registry")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn set_status(
        &self,
        id: &str,
        status: DeviceStatus,
        now: DateTime<Utc>,
    ) -> Result<RegisteredDevice, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE device_registry SET status = $2, revision = revision + 1, updated_at = $3
             WHERE device_id = $1 AND status <> $2",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            record_change(&mut tx, id, now).await?;
        }
        tx.commit().await?;
        self.required(id).await
    }

    async fn rotate_key(&self, id: &str, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE device_registry SET key_version = key_version + 1, revision = revision + 1, updated_at = $2
             WHERE device_id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(RegistryError::NotFound(id.to_owned()));
        }
        record_change(&mut tx, id, now).await?;
        tx.commit().await?;
        self.required(id).await
    }

    async fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<(i64, RegisteredDevice)>, RegistryError> {
        let rows = sqlx::query(&format!(
            "WITH c AS (SELECT seq, device_id FROM device_registry_changes WHERE seq > $1 ORDER BY seq LIMIT $2)
             {COLUMNS}, c.seq FROM c JOIN device_registry r ON r.device_id = c.device_id
             LEFT JOIN devices d ON d.device_id = r.device_id ORDER BY c.seq"
        ))
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((r.try_get::<i64, _>("seq")?, device(r)?));
        }
        Ok(out)
    }

    async fn last_change(&self) -> Result<i64, RegistryError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM device_registry_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn prune_changes(&self, before: DateTime<Utc>) -> Result<u64, RegistryError> {
        Ok(sqlx::query("DELETE FROM device_registry_changes WHERE changed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO device_registry_changes (device_id, changed_at) VALUES ($1, $2)")
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Open enrollment's "first contact": of `ids` (devices whose windows are
/// being stored), register the ones not registered yet, active at key
/// version 0, and record a change for each so the relay publishes them.
/// Runs in the results store's write transaction, so a device is in the
/// registry from the moment its first window is stored. A registered
/// device (disabled or not) is left as it is. Returns how many were new.
pub(crate) async fn enroll_first_contact(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let created: i64 = sqlx::query_scalar(
        "WITH created AS (
           INSERT INTO device_registry (device_id, enrolled_by, created_at, updated_at)
           SELECT id, 'first-contact', $2, $2 FROM UNNEST($1::text[]) AS t(id)
           ON CONFLICT (device_id) DO NOTHING
           RETURNING device_id
         ), recorded AS (
           INSERT INTO device_registry_changes (device_id, changed_at) SELECT device_id, $2 FROM created
         )
         SELECT count(*) FROM created",
    )
    .bind(ids)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(created.unsigned_abs())
}

/// Created rows come back at revision 1, changed ones above it; rows the
/// upsert left alone do not come back.
pub(super) fn outcome(total: usize, revisions: &[i64]) -> ImportOutcome {
    let created = revisions.iter().filter(|&&r| r == 1).count() as u64;
    let updated = revisions.len() as u64 - created;
    ImportOutcome {
        created,
        updated,
        unchanged: total as u64 - created - updated,
    }
}
