//! The cache contract against the real Redis (`REDIS_URL`, default
//! 127.0.0.1:6379). Keys and channels carry a per-run prefix, so runs never
//! see each other's data. Fails (never skips) when Redis is not there.

use tributary_shared::cache::{KvCache, RedisCache};
use tributary_testkit::cache as contract;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(name: &str) -> String {
    format!(
        "tributary-test:{}:{}:{name}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

async fn cache() -> RedisCache {
    let c = RedisCache::new(&url()).expect("valid REDIS_URL");
    c.get("tributary-test:ping")
        .await
        .unwrap_or_else(|e| panic!("these tests need a real Redis at {}: {e}", url()));
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

/// A Redis of this test's own with TLS only (`--port 0 --tls-port P`) and a
/// self-signed certificate made with the `openssl` command, as Azure Cache for
/// Redis serves TLS only: `rediss://` works, plain `redis://` does not.
#[tokio::test]
async fn tls_connections_work_and_plaintext_is_refused() {
    let dir = std::env::temp_dir().join(format!("tributary-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command makes the test certificate");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed"),
    );
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "redis-server with TLS did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // `#insecure`: the self-signed test certificate is not in any trust store.
    let tls = RedisCache::new(&format!("rediss://127.0.0.1:{port}/#insecure")).expect("rediss URL");
    contract::strings_round_trip_and_expire(&tls, &prefix("tls")).await;
    let plain = RedisCache::new(&format!("redis://127.0.0.1:{port}")).expect("redis URL");
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), plain.get("k")).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext client must not get an answer from a TLS-only Redis"
    );
}
