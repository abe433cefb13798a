//! TLS on the listeners: certificates chosen by SNI and reloaded when their files change, ALPN, TLS 1.2/1.3, and client certificates checked against a CA.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use sluice_config::{CertificateFiles, ClientAuth, ConfigError, Location, Tls};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_rustls::TlsAcceptor;

/// The TLS side of a configuration: the acceptor every TLS listener uses, and the
/// certificates behind it, which can be swapped without a reload.
pub struct TlsState {
    pub config: Tls,
    pub acceptor: TlsAcceptor,
    resolver: Arc<SniResolver>,
    /// What the certificate files looked like when last loaded.
    seen: Mutex<Vec<Fingerprint>>,
}

type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The cryptography every TLS connection of the gateway uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsState {
    /// Loads the certificates and builds the acceptor; errors name the file's entry.
    pub fn build(tls: &Tls, file: &str) -> Result<TlsState, Vec<ConfigError>> {
        let certs = CertSet::load(&tls.certificates).map_err(|(location, message)| {
            vec![ConfigError::new(
                file,
                location,
                "server.tls.certificates",
                message,
            )]
        })?;
        let resolver = Arc::new(SniResolver {
            certs: ArcSwap::from_pointee(certs),
        });
        let versions: &[&rustls::SupportedProtocolVersion] = if tls.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let fail = |location: Location, key: &str, message: String| {
            vec![ConfigError::new(file, location, key, message)]
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| fail(Location::START, "server.tls", e.to_string()))?;
        let builder = match &tls.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional { ca, location } | ClientAuth::Required { ca, location } => {
                let roots =
                    load_roots(ca).map_err(|e| fail(*location, "server.tls.client_ca", e))?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = match &tls.client_auth {
                    ClientAuth::Optional { .. } => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| fail(*location, "server.tls.client_ca", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = tls.alpn.clone();
        Ok(TlsState {
            seen: Mutex::new(
                tls.certificates
                    .iter()
                    .flat_map(|c| [fingerprint(&c.cert), fingerprint(&c.key)])
                    .collect(),
            ),
            config: tls.clone(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        })
    }

    /// Reloads the certificates when one of their files changed. `Ok(true)` when new
    /// ones are served; on error the ones loaded before stay.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now: Vec<Fingerprint> = self
            .config
            .certificates
            .iter()
            .flat_map(|c| [fingerprint(&c.cert), fingerprint(&c.key)])
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // A file being replaced may be missing for a moment: wait for it.
        if now == *seen || now.iter().any(Option::is_none) {
            return Ok(false);
        }
        *seen = now;
        let certs = CertSet::load(&self.config.certificates).map_err(|(_, e)| e)?;
        self.resolver.certs.store(Arc::new(certs));
        Ok(true)
    }
}

/// The CA certificates in a PEM file.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(roots)
}

/// The loaded certificates, by the names they are for.
#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `.example.com`.
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl CertSet {
    fn load(files: &[CertificateFiles]) -> Result<CertSet, (Location, String)> {
        let mut exact = HashMap::new();
        let mut wildcard = Vec::new();
        let mut default = None;
        for f in files {
            let fail = |m: String| (f.location, m);
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert)
                .map_err(|e| fail(format!("cannot read {}: {e}", f.cert.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    fail(format!(
                        "{}: not a PEM certificate chain: {e}",
                        f.cert.display()
                    ))
                })?;
            let Some(leaf) = chain.first() else {
                return Err(fail(format!(
                    "{}: no certificate in the file",
                    f.cert.display()
                )));
            };
            let names = names(leaf).map_err(|e| fail(format!("{}: {e}", f.cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(&f.key)
                .map_err(|e| fail(format!("{}: not a PEM private key: {e}", f.key.display())))?;
            let signer = rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|e| fail(format!("{}: {e}", f.key.display())))?;
            let certified = CertifiedKey::new(chain, signer);
            // A key whose public half cannot be read is given the benefit of the doubt;
            // the handshake would fail loudly.
            if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
                certified.keys_match()
            {
                return Err(fail(format!(
                    "{} is not the key of {}",
                    f.key.display(),
                    f.cert.display()
                )));
            }
            let certified = Arc::new(certified);
            for name in names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.push((suffix.to_string(), Arc::clone(&certified))),
                    None => {
                        exact.entry(name).or_insert_with(|| Arc::clone(&certified));
                    }
                }
            }
            default.get_or_insert(certified);
        }
        let default = default.ok_or((Location::START, "no certificate".to_string()))?;
        Ok(CertSet {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        if let Some(c) = self.exact.get(&name) {
            return Arc::clone(c);
        }
        // A wildcard covers one label: `*.example.com` serves `a.example.com` only.
        self.wildcard
            .iter()
            .find(|(suffix, _)| {
                name.strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
            .map_or_else(|| Arc::clone(&self.default), |(_, c)| Arc::clone(c))
    }
}

/// The DNS names a certificate is for: its subject alternative names, or its common name.
fn names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    Ok(names)
}

/// The subject of a verified client certificate, as RFC 4514 text.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Picks the certificate for the name the client asked for (SNI).
#[derive(Debug)]
struct SniResolver {
    certs: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().pick(hello.server_name()))
    }
}
