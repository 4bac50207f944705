//! HTTPS end to end: the REST client's TLS runs on aws-lc-rs, the workspace's one crypto
//! provider (reqwest has none of its own: Cargo.toml), against a server on loopback.
//!
//! The server's certificate is self-signed (`tests/fixtures/tls`, made with `openssl req -x509
//! -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 -subj /CN=localhost
//! -addext subjectAltName=IP:127.0.0.1,DNS:localhost`): trusted only with `--insecure`.

use std::sync::Arc;

use deploy_argocd::rest::{RestArgoCd, RestOptions};
use deploy_core::Error;
use deploy_core::config::ArgoCdConfig;
use rustls::NamedGroup;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::LazyConfigAcceptor;

const CERT: &[u8] = include_bytes!("../fixtures/tls/cert.pem");
const KEY: &[u8] = include_bytes!("../fixtures/tls/key.pem");

/// One TLS handshake as the server saw it: the key exchange groups the client offered, and
/// whether the handshake completed.
#[derive(Debug)]
struct Handshake {
    offered: Vec<NamedGroup>,
    completed: bool,
}

/// An HTTPS server on loopback whose every answer is `sessionGetUserInfoResponse` for alice.
/// It reports each handshake.
async fn server() -> (u16, mpsc::UnboundedReceiver<Handshake>) {
    let cert = CertificateDer::from_pem_slice(CERT).expect("the fixture's certificate");
    let key = PrivateKeyDer::from_pem_slice(KEY).expect("the fixture's key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("a server configuration");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("bound").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, tx) = (Arc::clone(&config), tx.clone());
            tokio::spawn(async move {
                let hello = LazyConfigAcceptor::new(Acceptor::default(), tcp);
                let Ok(start) = hello.await else { return };
                let offered = start
                    .client_hello()
                    .named_groups()
                    .unwrap_or_default()
                    .to_vec();
                let stream = start.into_stream(config).await;
                let completed = stream.is_ok();
                let _ = tx.send(Handshake { offered, completed });
                let Ok(mut tls) = stream else { return };
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let body = r#"{"loggedIn":true,"username":"alice"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, rx)
}

fn client(port: u16, insecure: bool) -> RestArgoCd {
    let config = ArgoCdConfig {
        server: Some(format!("https://127.0.0.1:{port}")),
        plaintext: false,
        insecure,
        namespace: "argocd".into(),
    };
    RestArgoCd::with_options(&config, "token".to_owned().into(), RestOptions::fast())
        .expect("a client")
}

#[tokio::test]
async fn https_reaches_the_server_with_aws_lc_rs() {
    let (port, mut handshakes) = server().await;
    let user = client(port, true)
        .username()
        .await
        .expect("an answer over HTTPS");
    assert_eq!(user, "alice");
    let handshake = handshakes.recv().await.expect("a handshake");
    assert!(handshake.completed);
    // aws-lc-rs offers X25519MLKEM768 (first or last, per `prefer-post-quantum`); ring's
    // provider has no ML-KEM.
    assert!(
        handshake.offered.contains(&NamedGroup::X25519MLKEM768),
        "{handshake:?}"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_at_once() {
    let (port, mut handshakes) = server().await;
    let error = client(port, false).username().await.unwrap_err();
    assert!(
        matches!(&error, Error::Permission { message }
            if message.contains("TLS certificate of 127.0.0.1 is not trusted")
                && message.contains("--insecure")),
        "{error:?}"
    );
    let handshake = handshakes.recv().await.expect("a handshake");
    assert!(!handshake.completed, "{handshake:?}");
    // Refused at once, not retried: one handshake.
    assert!(handshakes.try_recv().is_err());
}
