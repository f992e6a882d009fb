//! The SQLite backend of [`DeviceRegistry`], for the all-in-one mode: the
//! same file as the results store, an import in chunks of multi-row upserts
//! inside one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::postgres::outcome;
use super::{
    DeviceRegistry, DeviceStatus, Enrollment, ImportOutcome, NewDevice, RegisteredDevice, RegistryError, RegistryQuery,
    validate_all,
};
use crate::results::SqliteStore;
// Times are integer milliseconds, as in the results tables of the same file.
use crate::results::listing::like_pattern;
use crate::results::sqlite::{ms, time};

/// Rows per statement: 5 binds each stays far under SQLite's bind limit.
const CHUNK: usize = 1000;

const COLUMNS: &str = "SELECT r.device_id, r.display_name, r.device_group, r.tags, r.status, r.key_version,
        r.enrolled_by, r.revision, r.created_at, r.updated_at, d.last_seen";
const SELECT: &str = "SELECT r.device_id, r.display_name, r.device_group, r.tags, r.status, r.key_version,
        r.enrolled_by, r.revision, r.created_at, r.updated_at, d.last_seen
 FROM device_registry r LEFT JOIN devices d ON d.device_id = r.device_id";

/// The registry in the embedded SQLite results file (`shared/migrations-sqlite`).
#[derive(Clone, Debug)]
pub struct SqliteRegistry {
    pool: SqlitePool,
}

impl SqliteRegistry {
    /// A registry on `pool` (a results store's).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Open (creating if missing) the database at `url` (`sqlite://PATH`),
    /// with the results store's settings.
    pub async fn open(url: &str) -> Result<Self, RegistryError> {
        Ok(Self::new(SqliteStore::open(url).await?.pool().clone()))
    }

    async fn required(&self, id: &str) -> Result<RegisteredDevice, RegistryError> {
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }
}

fn device(r: &SqliteRow) -> Result<RegisteredDevice, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let tags: String = r.try_get("tags")?;
    let key_version: i64 = r.try_get("key_version")?;
    Ok(RegisteredDevice {
        id: r.try_get("device_id")?,
        name: r.try_get("display_name")?,
        group: r.try_get("device_group")?,
        tags: serde_json::from_str(&tags).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        status: status.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        key_version: u32::try_from(key_version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        enrolled_by: Enrollment::parse(r.try_get("enrolled_by")?),
        revision: r.try_get("revision")?,
        created_at: time(r.try_get("created_at")?),
        updated_at: time(r.try_get("updated_at")?),
        last_seen: r.try_get::<Option<i64>, _>("last_seen")?.map(time),
    })
}

#[async_trait]
impl DeviceRegistry for SqliteRegistry {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), RegistryError> {
        sqlx::migrate!("./migrations-sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn add(&self, d: &NewDevice, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError> {
        d.validate()?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO device_registry AS r (device_id, display_name, device_group, tags, enrolled_by, created_at, updated_at)
             VALUES (?1, ?2, ?3, json(?4), 'operator', ?5, ?5)
             ON CONFLICT (device_id) DO UPDATE SET
               display_name = excluded.display_name, device_group = excluded.device_group, tags = excluded.tags,
               enrolled_by = 'operator', revision = r.revision + 1, updated_at = excluded.updated_at
             WHERE r.enrolled_by = 'first-contact'",
        )
        .bind(&d.id)
        .bind(&d.name)
        .bind(d.group())
        .bind(d.tags_json())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(RegistryError::Exists(d.id.clone()));
        }
        record_changes(&mut tx, std::slice::from_ref(&d.id), now).await?;
        tx.commit().await?;
        self.required(&d.id).await
    }

    async fn import(&self, devices: &[NewDevice], now: DateTime<Utc>) -> Result<ImportOutcome, RegistryError> {
        validate_all(devices)?;
        let mut revisions = Vec::new();
        let mut written = Vec::new();
        let mut tx = self.pool.begin().await?;
        for chunk in devices.chunks(CHUNK) {
            let values = vec!["(?, ?, ?, json(?), 'operator', ?, ?)"; chunk.len()].join(", ");
            // `json()` stores tags in one canonical text, so the comparison
            // below sees an unchanged tag set as unchanged.
            let sql = format!(
                "INSERT INTO device_registry AS r (device_id, display_name, device_group, tags, enrolled_by, created_at, updated_at)
                 VALUES {values}
                 ON CONFLICT (device_id) DO UPDATE SET
                   display_name = excluded.display_name, device_group = excluded.device_group, tags = excluded.tags,
                   enrolled_by = 'operator', revision = r.revision + 1, updated_at = excluded.updated_at
                 WHERE r.display_name IS NOT excluded.display_name OR r.device_group IS NOT excluded.device_group
                    OR r.tags IS NOT excluded.tags OR r.enrolled_by <> 'operator'
                 RETURNING device_id, revision"
            );
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
            for d in chunk {
                q = q
                    .bind(&d.id)
                    .bind(&d.name)
                    .bind(d.group())
                    .bind(d.tags_json())
                    .bind(ms(now))
                    .bind(ms(now));
            }
            for (id, revision) in q.fetch_all(&mut *tx).await? {
                written.push(id);
                revisions.push(revision);
            }
        }
        record_changes(&mut tx, &written, now).await?;
        tx.commit().await?;
        Ok(outcome(devices.len(), &revisions))
    }

    async fn get(&self, id: &str) -> Result<Option<RegisteredDevice>, RegistryError> {
        let row = sqlx::query(&format!("{SELECT} WHERE r.device_id = ?1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(device).transpose()?)
    }

    async fn list(&self, q: &RegistryQuery) -> Result<Vec<RegisteredDevice>, RegistryError> {
        let rows = sqlx::query(&format!(
            "{SELECT}
             WHERE (?1 IS NULL OR r.device_id > ?1)
               AND (?2 IS NULL OR r.device_group = ?2)
               AND (?3 IS NULL OR r.status = ?3)
               AND (?4 IS NULL OR r.device_id LIKE ?4 ESCAPE '\\' OR r.display_name LIKE ?4 ESCAPE '\\')
             ORDER BY r.device_id LIMIT ?5"
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
            "UPDATE device_registry SET status = ?2, revision = revision + 1, updated_at = ?3
             WHERE device_id = ?1 AND status <> ?2",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            record_changes(&mut tx, &[id.to_owned()], now).await?;
        }
        tx.commit().await?;
        self.required(id).await
    }

    async fn rotate_key(&self, id: &str, now: DateTime<Utc>) -> Result<RegisteredDevice, RegistryError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE device_registry SET key_version = key_version + 1, revision = revision + 1, updated_at = ?2
             WHERE device_id = ?1",
        )
        .bind(id)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(RegistryError::NotFound(id.to_owned()));
        }
        record_changes(&mut tx, &[id.to_owned()], now).await?;
        tx.commit().await?;
        self.required(id).await
    }

    async fn changes_after(&self, seq: i64, limit: u32) -> Result<Vec<(i64, RegisteredDevice)>, RegistryError> {
        let rows = sqlx::query(&format!(
            "WITH c AS (SELECT seq, device_id FROM device_registry_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2)
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
        Ok(sqlx::query("DELETE FROM device_registry_changes WHERE changed_at < ?1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Record a change of each device, in chunks under the bind limit.
/// As [`super::postgres::enroll_first_contact`], for the embedded store.
pub(crate) async fn enroll_first_contact(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let mut created = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO device_registry (device_id, enrolled_by, created_at, updated_at) VALUES {}
             ON CONFLICT (device_id) DO NOTHING RETURNING device_id",
            vec!["(?, 'first-contact', ?, ?)"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for id in chunk {
            q = q.bind(*id).bind(ms(now)).bind(ms(now));
        }
        created.extend(q.fetch_all(&mut **tx).await?);
    }
    record_changes(tx, &created, now).await?;
    Ok(created.len() as u64)
}

async fn record_changes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO device_registry_changes (device_id, changed_at) VALUES {}",
            vec!["(?, ?)"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id).bind(ms(now));
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
