//! The cache contract against the real Redis (`REDIS_URL`, default
//! 127.0.0.1:6379). Keys and channels carry a per-run prefix, so runs never
//! see each other's data. Fails (never skips) when Redis is not there.

use tributary_shared::cache::{KvCache, RedisCache, contract};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(name: &str) -> String {
    format!("tributary-test:{}:{}:{name}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}

async fn cache() -> RedisCache {
    let c = RedisCache::new(&url()).expect("valid REDIS_URL");
    c.get("tributary-test:ping").await.unwrap_or_else(|e| panic!("these tests need a real Redis at {}: {e}", url()));
    c
}

#[tokio::test]
async fn strings_round_trip_and_expire() {
    contract::strings_round_trip_and_expire(&cache().await, &prefix("strings")).await;
}

#[tokio::test]
async fn sorted_sets_keep_the_newest() {
    contract::sorted_sets_keep_the_newest(&cache().await, &prefix("zset")).await;
}

#[tokio::test]
async fn published_messages_reach_followers() {
    let c: &'static dyn KvCache = Box::leak(Box::new(cache().await));
    contract::published_messages_reach_followers(c, &prefix("pubsub")).await;
}
