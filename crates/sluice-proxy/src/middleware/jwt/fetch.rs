//! One `GET` of a JWKS URL on a fresh HTTP/1.1 connection (TLS for `https://`, verified against `jwks_ca` or the system's CAs), bounded in time and size.

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sluice_config::JwksSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The longest one fetch may take, connecting included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read.
const MAX_BODY: usize = 1024 * 1024;

/// Fetches one URL.
pub struct Fetcher {
    uri: Uri,
    host: String,
    port: u16,
    host_header: HeaderValue,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher for `settings.url`; for https, loads `jwks_ca` or the system's CAs.
    pub fn new(settings: &JwksSettings) -> Result<Fetcher, String> {
        let uri = settings.url.clone();
        let authority = uri.authority().ok_or("the JWKS URL has no host")?;
        let https = uri.scheme_str() == Some("https");
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the JWKS URL's host is not a valid Host header")?;
        let tls = if https {
            let roots = match &settings.ca {
                Some(ca) => Arc::new(crate::listener::tls::load_roots(ca)?),
                None => crate::upstream::tls::system_roots()?,
            };
            let mut config =
                rustls::ClientConfig::builder_with_provider(crate::listener::tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("`{host}` is not a name TLS can verify"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Fetcher {
            uri,
            host,
            port,
            host_header,
            tls,
        })
    }

    pub fn url(&self) -> &Uri {
        &self.uri
    }

    /// The body of a `200 OK` answer, or why there is none.
    pub async fn fetch(&self) -> Result<Bytes, String> {
        match tokio::time::timeout(FETCH_TIMEOUT, self.get()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
        }
    }

    async fn get(&self) -> Result<Bytes, String> {
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let request = Request::get(path)
            .header(HOST, self.host_header.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "sluice-jwks")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        match &self.tls {
            None => exchange(tcp, request).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                exchange(tls, request).await
            }
        }
    }
}

async fn exchange<S>(io: S, request: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    // Stopped when the answer is read, or when the caller gives up (the fetch's timeout).
    let _connection = AbortOnDrop(tokio::spawn(connection));
    async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("answered {}", response.status().as_u16()));
        }
        Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("cannot read the key set: {e}"))
    }
    .await
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
