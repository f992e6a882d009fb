//! The Redis backend of [`KvCache`]: one multiplexed connection (a
//! `ConnectionManager` that reconnects by itself), every call bounded by a
//! short timeout so a hung Redis never stalls a caller.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Mutex, broadcast};

use super::{CacheError, CacheOp, KvCache};

const OP_TIMEOUT: Duration = Duration::from_secs(2);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A cache in Redis.
pub struct RedisCache {
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
}

impl RedisCache {
    /// A cache on `url`; connects lazily, so Redis may be down at start.
    pub fn new(url: &str) -> Result<Self, CacheError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(OP_TIMEOUT * 2, self.client.get_connection_manager_with_config(cfg))
            .await
            .map_err(|_| CacheError("connect timed out".into()))??;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn bounded<T>(fut: impl Future<Output = Result<T, redis::RedisError>>) -> Result<T, CacheError> {
        tokio::time::timeout(OP_TIMEOUT, fut)
            .await
            .map_err(|_| CacheError("timed out".into()))?
            .map_err(CacheError::from)
    }
}

#[async_trait]
impl KvCache for RedisCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn apply(&self, ops: Vec<CacheOp>) -> Result<(), CacheError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for op in ops {
            match op {
                CacheOp::Set { key, value, ttl_secs } => pipe.set_ex(key, value, ttl_secs).ignore(),
                CacheOp::Delete(key) => pipe.del(key).ignore(),
                CacheOp::ZAdd { key, member, score } => pipe.zadd(key, member, score).ignore(),
                // Ranks 0..len-keep-1 are the lowest scores.
                CacheOp::ZKeepHighest { key, keep } => pipe.zremrangebyrank(key, 0, -(keep as isize) - 1).ignore(),
                CacheOp::Expire { key, ttl_secs } => pipe.expire(key, ttl_secs as i64).ignore(),
                CacheOp::Publish { channel, message } => pipe.publish(channel, message).ignore(),
            };
        }
        let mut conn = self.connection().await?;
        Self::bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let mut conn = self.connection().await?;
        Self::bounded(conn.get(key)).await
    }

    async fn members_newest_first(&self, key: &str) -> Result<Vec<String>, CacheError> {
        let mut conn = self.connection().await?;
        Self::bounded(conn.zrevrange(key, 0, -1)).await
    }

    async fn follow(&self, channel: &str, sink: broadcast::Sender<String>) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(channel).await {
                    Ok(()) => {
                        tracing::info!(channel, "following change notifications");
                        delay = Duration::from_millis(200);
                        // Messages may have been missed while disconnected.
                        let _ = sink.send("{\"kind\":\"reload\"}".to_owned());
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            if let Ok(payload) = msg.get_payload::<String>() {
                                let _ = sink.send(payload);
                            }
                        }
                        tracing::warn!(channel, "change notifications stream ended; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, channel, "subscribing to change notifications failed"),
                },
                Err(e) => tracing::debug!(error = %e, "Redis unavailable for change notifications"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}
