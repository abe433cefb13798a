//! TLS to `https://` targets: verification against a configured CA, the name sent by SNI, HTTP/2 by ALPN, client certificates, and the loudly logged way to skip verification.

use crate::harness::*;
use crate::tls::Pki;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// An HTTPS origin with the certificate in `cert`/`key`, answering with what it saw of the
/// connection: `HTTP/1.1 sni=NAME client=BOOL`. With `client_ca`, clients must show a
/// certificate that CA issued.
async fn https_origin(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("ca") {
                roots.add(c.expect("ca cert")).expect("add");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let sni = session.server_name().unwrap_or("-").to_string();
                let client = session.peer_certificates().is_some_and(|c| !c.is_empty());
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let text = format!("{:?} sni={sni} client={client}", request.version());
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, task)
}

fn cluster(target: &str, tls: &str, http2: bool) -> String {
    format!(
        "[clusters.secure]\ntargets = [\"{target}\"]\nhttp2 = {http2}\n\n[clusters.secure.tls]\n{tls}\n\n[[routes]]\nname = \"secure\"\nprefix = \"/\"\ncluster = \"secure\"\n"
    )
}

#[tokio::test]
async fn https_targets_are_verified_against_the_configured_ca_by_the_configured_name() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    let (cert, key) = pki.issue("origin", "origin.test", &["origin.test"], false);
    let (addr, _origin) = https_origin(&cert, &key, None).await;
    let target = format!("https://127.0.0.1:{}", addr.port());
    let ca = format!("ca = \"{}\"", pki.ca.display());

    let named = format!("{ca}\nserver_name = \"origin.test\"");
    let gw = Gateway::start(&cluster(&target, &named, false)).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(
        (answer.0, text(&answer.2).as_str()),
        (200, "HTTP/1.1 sni=origin.test client=false"),
        "{}",
        gw.log()
    );
    drop(gw);

    let gw = Gateway::start(&cluster(&target, &named, true)).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(
        text(&answer.2),
        "HTTP/2.0 sni=origin.test client=false",
        "ALPN h2 to the target"
    );
    drop(gw);

    // The certificate is for origin.test, not for the address in the URL.
    let gw = Gateway::start(&cluster(&target, &ca, false)).await;
    let answer = get(&gw.url("/")).await;
    assert_problem(&gw, &answer, 502, "upstream_connect_failed");
    assert!(
        text(&answer.2).contains("certificate"),
        "{}",
        text(&answer.2)
    );
    drop(gw);

    // Another CA's word is not enough.
    let stranger = Pki::new(&scratch_dir());
    let wrong = format!(
        "ca = \"{}\"\nserver_name = \"origin.test\"",
        stranger.ca.display()
    );
    let gw = Gateway::start(&cluster(&target, &wrong, false)).await;
    assert_problem(
        &gw,
        &get(&gw.url("/")).await,
        502,
        "upstream_connect_failed",
    );
}

#[tokio::test]
async fn client_certificates_go_to_targets_that_ask_and_verification_can_be_skipped_loudly() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    let (cert, key) = pki.issue("origin", "origin.test", &["origin.test"], false);
    let (client_cert, client_key) = pki.issue("gateway", "gateway", &[], true);
    let (addr, _origin) = https_origin(&cert, &key, Some(&pki.ca)).await;
    let target = format!("https://127.0.0.1:{}", addr.port());
    let base = format!(
        "ca = \"{}\"\nserver_name = \"origin.test\"",
        pki.ca.display()
    );

    let gw = Gateway::start(&cluster(&target, &base, false)).await;
    assert_problem(&gw, &get(&gw.url("/")).await, 502, "upstream_failed");
    drop(gw);

    let with_cert = format!(
        "{base}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        client_cert.display(),
        client_key.display()
    );
    let gw = Gateway::start(&cluster(&target, &with_cert, false)).await;
    let answer = get(&gw.url("/")).await;
    assert_eq!(
        text(&answer.2),
        "HTTP/1.1 sni=origin.test client=true",
        "{}",
        gw.log()
    );
    drop(gw);

    let (plain_addr, _plain) = https_origin(&cert, &key, None).await;
    let gw = Gateway::start(&cluster(
        &format!("https://127.0.0.1:{}", plain_addr.port()),
        "insecure_skip_verify = true",
        false,
    ))
    .await;
    assert_eq!(get(&gw.url("/")).await.0, 200, "{}", gw.log());
    assert!(
        gw.log()
            .contains("TLS verification of this cluster's targets is OFF"),
        "{}",
        gw.log()
    );
}
