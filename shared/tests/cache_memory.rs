//! The cache contract against the in-process backend.

use tributary_shared::cache::MemoryCache;
use tributary_testkit::cache as contract;

#[tokio::test]
async fn strings_round_trip_and_expire() {
    contract::strings_round_trip_and_expire(&MemoryCache::default(), "t").await;
}

#[tokio::test]
async fn sorted_sets_keep_the_newest() {
    contract::sorted_sets_keep_the_newest(&MemoryCache::default(), "t").await;
}

#[tokio::test]
async fn published_messages_reach_followers() {
    let c: &'static MemoryCache = Box::leak(Box::new(MemoryCache::default()));
    contract::published_messages_reach_followers(c, "t").await;
}
