//! `wss://` with a custom root CA: a TLS-terminating proxy with a certificate from a
//! throwaway CA sits in front of the real gateway. A client given that CA connects and
//! delivers; a client on the default roots refuses the certificate and keeps retrying.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod sdk_support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use sdk_support::gateway::{Backend, APP};
use sdk_support::{wait_for, wait_snapshot, Recorder, Seen, Tokens};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, ConnectionStatus, ErrorKind, TetherClient};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(20);

/// A CA (its PEM) and a TLS listener for `localhost` signed by it, forwarding to `upstream`.
async fn tls_front(upstream: SocketAddr) -> (String, SocketAddr) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return; // the client refused our certificate
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (ca_cert.pem(), addr)
}

fn client(
    url: &str,
    ca: Option<String>,
    dir: &tempfile::TempDir,
) -> (
    Arc<TetherClient>,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
) {
    let mut config = ClientConfig::new(url, APP, "tls-phone", dir.path().to_str().unwrap());
    config.tls_root_ca_pem = ca;
    config.backoff_base_ms = 100;
    config.backoff_cap_ms = 500;
    let (recorder, seen) = Recorder::new();
    let client = TetherClient::new(
        config,
        recorder,
        Tokens::fixed(&Backend::token("tls-user", 3600)),
    )
    .unwrap();
    (client, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_custom_root_connects_and_the_default_roots_refuse_it() {
    let backend = Backend::start(|_| {}).await;
    let (ca_pem, addr) = tls_front(backend.addr).await;
    let url = format!("wss://localhost:{}/ws", addr.port());

    let dir = tempfile::tempdir().unwrap();
    let (trusted, _seen) = client(&url, Some(ca_pem), &dir);
    trusted.connect();
    let mut watch = trusted.watch();
    wait_snapshot(&mut watch, WAIT, |s| {
        s.status == ConnectionStatus::Connected
    })
    .await;
    let id = trusted
        .send_message("chat".into(), r#"{"over":"tls"}"#.into())
        .await
        .unwrap();
    wait_snapshot(&mut watch, WAIT, |s| s.queued == 0).await;
    let stored = backend.wait_inbound(1, WAIT).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, id);
    trusted.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let (untrusted, mut seen) = client(&url, None, &dir);
    untrusted.connect();
    let error = wait_for(&mut seen, WAIT, |e| matches!(e, Seen::Error(_))).await;
    let Seen::Error(error) = error else {
        unreachable!()
    };
    assert_eq!(error.kind(), ErrorKind::Network);
    assert!(
        error.message().to_lowercase().contains("certificate"),
        "{}",
        error.message()
    );
    let mut watch = untrusted.watch();
    wait_snapshot(&mut watch, WAIT, |s| {
        matches!(s.status, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    untrusted.shutdown().await;
}

#[test]
fn a_custom_root_that_is_not_pem_is_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        ClientConfig::new("wss://localhost/ws", APP, "d", dir.path().to_str().unwrap());
    config.tls_root_ca_pem = Some("not a certificate".into());
    let (recorder, _seen) = Recorder::new();
    let error = TetherClient::new(config, recorder, Tokens::fixed("t")).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig);
}
