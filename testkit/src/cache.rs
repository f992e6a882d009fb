//! The behaviour every [`KvCache`] backend must show, run against Redis and
//! the in-process cache by `shared/tests/cache_*.rs`. Each check takes an
//! empty cache and a key prefix of its own.

use std::time::Duration;

use tokio::sync::broadcast;

use tributary_shared::cache::{CacheOp, KvCache};

fn set(key: &str, value: &str, ttl_secs: u64) -> CacheOp {
    CacheOp::Set {
        key: key.into(),
        value: value.into(),
        ttl_secs,
    }
}

/// Strings are set, read, overwritten, deleted and expire.
pub async fn strings_round_trip_and_expire(c: &dyn KvCache, prefix: &str) {
    let k = |s: &str| format!("{prefix}:{s}");
    c.apply(vec![set(&k("a"), "1", 60), set(&k("b"), "2", 1)])
        .await
        .expect("apply");
    assert_eq!(c.get(&k("a")).await.expect("get").as_deref(), Some("1"));
    assert_eq!(c.get(&k("missing")).await.expect("get"), None);
    c.apply(vec![set(&k("a"), "3", 60), CacheOp::Delete(k("b"))])
        .await
        .expect("apply");
    assert_eq!(
        c.get(&k("a")).await.expect("get").as_deref(),
        Some("3"),
        "later ops win"
    );
    assert_eq!(c.get(&k("b")).await.expect("get"), None, "deleted");
    c.apply(vec![set(&k("c"), "x", 1)]).await.expect("apply");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(c.get(&k("c")).await.expect("get"), None, "expired after its TTL");
    assert_eq!(
        c.get(&k("a")).await.expect("get").as_deref(),
        Some("3"),
        "others live on"
    );
}

/// A sorted set keeps the highest-scored members, newest first.
pub async fn sorted_sets_keep_the_newest(c: &dyn KvCache, prefix: &str) {
    let key = format!("{prefix}:recent");
    let mut ops: Vec<CacheOp> = (0..10)
        .map(|i| CacheOp::ZAdd {
            key: key.clone(),
            member: format!("m{i}"),
            score: i * 10,
        })
        .collect();
    ops.push(CacheOp::ZAdd {
        key: key.clone(),
        member: "m0".into(),
        score: 1000,
    });
    ops.push(CacheOp::ZKeepHighest {
        key: key.clone(),
        keep: 3,
    });
    ops.push(CacheOp::Expire {
        key: key.clone(),
        ttl_secs: 60,
    });
    c.apply(ops).await.expect("apply");
    assert_eq!(
        c.members_newest_first(&key).await.expect("members"),
        vec!["m0", "m9", "m8"],
        "rescored member moves; only 3 kept"
    );
    c.apply(vec![CacheOp::Delete(key.clone())]).await.expect("delete");
    assert!(c.members_newest_first(&key).await.expect("members").is_empty());
}

/// Published messages reach a follower in order.
pub async fn published_messages_reach_followers(c: &'static dyn KvCache, prefix: &str) {
    let channel = format!("{prefix}:changes");
    let (tx, mut rx) = broadcast::channel(64);
    let ch = channel.clone();
    let follower = tokio::spawn(async move { c.follow(&ch, tx).await });
    // Publish until the follower is subscribed (a subscription takes a moment to start on Redis).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    'outer: while tokio::time::Instant::now() < deadline {
        c.apply(vec![CacheOp::Publish {
            channel: channel.clone(),
            message: "ping".into(),
        }])
        .await
        .expect("publish");
        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            if m == "ping" {
                break 'outer;
            }
        }
    }
    for i in 0..5 {
        c.apply(vec![CacheOp::Publish {
            channel: channel.clone(),
            message: format!("m{i}"),
        }])
        .await
        .expect("publish");
    }
    while got.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("open");
        if m.starts_with('m') {
            got.push(m);
        }
    }
    assert_eq!(got, vec!["m0", "m1", "m2", "m3", "m4"]);
    follower.abort();
}
