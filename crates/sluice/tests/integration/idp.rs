//! A test identity provider for the jwt tests: keys and tokens made by PyJWT (jwt_mint.py), and a JWKS origin that can fail, go away, come back and rotate its keys.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `iss` of the tokens [`claims`] makes.
pub const ISSUER: &str = "https://idp.test/";

/// The test keys, made once per run: their directory and each one's public JWK.
pub struct Keys {
    pub dir: PathBuf,
    pub jwks: serde_json::Map<String, Value>,
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/jwt_mint.py")
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = scratch_dir();
        let output = Command::new("python3")
            .args([script(), "keys"])
            .arg(&dir)
            .output()
            .expect("run python3 jwt_mint.py (needs `pip install pyjwt cryptography`)");
        assert!(
            output.status.success(),
            "jwt_mint.py keys: {}",
            text(&output.stderr)
        );
        let jwks: Value = serde_json::from_slice(&output.stdout).expect("JWKs");
        Keys {
            dir,
            jwks: jwks.as_object().cloned().expect("an object"),
        }
    })
}

/// Mints every spec in one PyJWT run.
pub async fn mint(specs: Vec<Value>) -> Vec<String> {
    let input = Value::Array(specs).to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args([script(), "mint"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3 jwt_mint.py");
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("write specs");
        }
        child.wait_with_output().expect("jwt_mint.py")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "jwt_mint.py mint: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a list of tokens")
}

pub async fn mint_one(spec: Value) -> String {
    mint(vec![spec]).await.remove(0)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims that pass the `idp` middleware, changed by `extra` (a `null` removes a claim).
pub fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "iss": ISSUER, "aud": "api", "exp": now() + 600,
        "iat": now(), "tenant": "acme"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        match v {
            Value::Null => {
                c.as_object_mut().map(|m| m.remove(k));
            }
            v => c[k] = v.clone(),
        }
    }
    c
}

/// A token signed by test key `key` with `alg`, its `kid` in the header.
pub fn signed(key: &str, alg: &str, claims: Value) -> Value {
    json!({"alg": alg, "key": keys().dir.join(format!("{key}.key")), "claims": claims,
        "headers": {"kid": key}})
}

/// A JWKS origin: serves a key set that tests replace, fail or take away.
pub struct Jwks {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<(u16, String)>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Jwks {
    fn drop(&mut self) {
        self.down();
    }
}

impl Jwks {
    /// Serves the keys `names` over HTTP, or HTTPS with `tls`.
    pub async fn start(names: &[&str], tls: Option<tokio_rustls::TlsAcceptor>) -> Jwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind jwks");
        let mut jwks = Jwks {
            addr: listener.local_addr().expect("addr"),
            hits: Arc::new(AtomicUsize::new(0)),
            answer: Arc::new(Mutex::new((200, String::new()))),
            tls,
            task: None,
        };
        jwks.serve(names);
        jwks.task = Some(jwks.accept(listener));
        jwks
    }

    /// `http://127.0.0.1:PORT/...`, or `https://localhost:PORT/...` (the certificate's name).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/jwks.json", self.addr.port()),
            None => format!("http://{}/jwks.json", self.addr),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// From now on, a set of the keys `names`.
    pub fn serve(&self, names: &[&str]) {
        let set: Vec<&Value> = names.iter().map(|n| &keys().jwks[*n]).collect();
        *self.answer.lock().expect("answer") = (200, json!({"keys": set}).to_string());
    }

    /// From now on, `status` with no key set.
    pub fn fail(&self, status: u16) {
        *self.answer.lock().expect("answer") = (status, "unavailable".into());
    }

    /// Stops listening: connections are refused.
    pub fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind");
        self.task = Some(self.accept(listener));
    }

    fn accept(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let (hits, answer, tls) = (
            Arc::clone(&self.hits),
            Arc::clone(&self.answer),
            self.tls.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, answer, tls) = (Arc::clone(&hits), Arc::clone(&answer), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = answer.lock().expect("answer").clone();
                        async move {
                            let mut r = Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        })
    }
}

/// A TLS acceptor serving `cert` (a PEM chain) with `key`.
pub fn acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
