//! The HEC client over HTTPS, as Splunk is reached in production: a local
//! collector serving TLS with a certificate of a CA made for the test (the
//! `openssl` command), trusted through `HecConfig::ca_pem`
//! (`TRIBUTARY_SPLUNK_CA_FILE`), and refused when that CA is not trusted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tributary_shared::splunk::{HecClient, HecConfig, HecError, HecEvent};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 it signed, in a directory of this test's own.
fn certificates() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-hec-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=Tributary HEC test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    dir
}

/// axum's listener over TLS: each accepted connection is handshaken first.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate fails its handshake: wait for the next.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn collector(dir: &Path, received: Arc<AtomicUsize>) -> String {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = Router::new().route(
        "/services/collector/event",
        post(move |body: axum::body::Bytes| async move {
            assert!(!body.is_empty());
            received.fetch_add(1, Ordering::SeqCst);
            r#"{"text":"Success","code":0}"#
        }),
    );
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("https://127.0.0.1:{}", addr.port())
}

fn event() -> Vec<HecEvent> {
    vec![HecEvent {
        time: 1_795_608_000.5,
        host: "dev-1".into(),
        source: "tributary:analyze".into(),
        sourcetype: "tributary:aggregate".into(),
        event: json!({"n": 1}),
    }]
}

#[tokio::test]
async fn sends_over_https_when_the_collectors_ca_is_trusted_and_only_then() {
    let dir = certificates();
    let received = Arc::new(AtomicUsize::new(0));
    let url = collector(&dir, received.clone()).await;
    let cfg = |ca: Option<Vec<u8>>| HecConfig {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(10),
        ca_pem: ca,
        ..HecConfig::new(url.clone(), "secret-token")
    };

    // The system's roots do not know the test CA: the certificate is refused, nothing is sent.
    let refused = HecClient::new(cfg(None)).expect("client").send(&event()).await;
    assert!(matches!(refused, Err(HecError::Unavailable(_))), "{refused:?}");
    assert_eq!(received.load(Ordering::SeqCst), 0);

    // With the CA's certificate (what TRIBUTARY_SPLUNK_CA_FILE holds): delivered over TLS.
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
    HecClient::new(cfg(Some(ca)))
        .expect("client")
        .send(&event())
        .await
        .expect("delivered over https");
    assert_eq!(received.load(Ordering::SeqCst), 1);

    // A CA file that is not PEM is a clear settings error, not a silent fallback to the system's roots.
    let bad = HecClient::new(cfg(Some(b"not a certificate".to_vec())));
    assert!(matches!(bad, Err(HecError::Rejected { .. })), "{:?}", bad.err());
    let _ = std::fs::remove_dir_all(&dir);
}
