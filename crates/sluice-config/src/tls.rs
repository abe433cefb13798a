//! TLS settings as the gateway runs them: the TLS listeners, their certificates chosen by SNI, client certificates, and the redirect from plain HTTP.

use crate::Location;
use http::HeaderName;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub listen: Vec<SocketAddr>,
    /// The first is served when the client names no host or an unknown one.
    pub certificates: Vec<CertificateFiles>,
    /// `true`: TLS 1.3 only; `false`: TLS 1.2 and 1.3.
    pub tls13_only: bool,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
    pub client_auth: ClientAuth,
    /// The header that carries the verified client certificate's subject to the target.
    pub client_subject_header: HeaderName,
    /// Plain listeners answer every request with a redirect to HTTPS.
    pub redirect_http: bool,
    /// Reload certificate files when they change on disk.
    pub watch_certificates: bool,
}

/// A certificate chain and its key, as PEM files, with where they are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub location: Location,
}

/// Whether clients must show a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Verified against `ca` when shown.
    Optional {
        ca: PathBuf,
        location: Location,
    },
    /// Handshakes without a certificate that `ca` vouches for fail.
    Required {
        ca: PathBuf,
        location: Location,
    },
}

/// `[clusters.NAME.tls]`: TLS to `https://` targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// PEM CA certificates to verify targets with; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// The name verified and sent by SNI; `None`: each target's host.
    pub server_name: Option<String>,
    /// A certificate chain and key shown to targets that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any certificate: for tests only, logged loudly.
    pub insecure_skip_verify: bool,
    /// Where the settings are written, for errors found when they are loaded.
    pub location: Location,
}
