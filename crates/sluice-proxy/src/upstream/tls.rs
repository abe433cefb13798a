//! TLS to `https://` targets: verified against the system's roots or a configured CA, the name sent by SNI, ALPN by the cluster's protocol, and an optional client certificate.

use crate::listener::tls::provider;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sluice_config::{Cluster, ConfigError, UpstreamTls};
use std::sync::{Arc, OnceLock};

/// The TLS client settings of a cluster with `https://` targets; `None` without any.
pub fn client_config(
    cluster: &Cluster,
    file: &str,
) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
    let Some(tls) = &cluster.tls else {
        return Ok(None);
    };
    let key = format!("clusters.{}.tls", cluster.name);
    let fail = |m: String| ConfigError::new(file, tls.location, &key, m);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?;
    let builder = if tls.insecure_skip_verify {
        tracing::warn!(
            cluster = %cluster.name,
            "TLS verification of this cluster's targets is OFF (insecure_skip_verify): anyone on the path can read and change its traffic"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
    } else {
        builder.with_root_certificates(roots(tls).map_err(fail)?)
    };
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    fail(format!(
                        "{}: not a PEM certificate chain: {e}",
                        cert.display()
                    ))
                })?;
            let private = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                fail(format!(
                    "{}: not a PEM private key: {e}",
                    key_file.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| fail(format!("client certificate: {e}")))?
        }
    };
    config.alpn_protocols = if cluster.http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Some(Arc::new(config)))
}

/// The CA certificates targets are checked against.
fn roots(tls: &UpstreamTls) -> Result<Arc<RootCertStore>, String> {
    match &tls.ca {
        Some(path) => crate::listener::tls::load_roots(path).map(Arc::new),
        None => system_roots(),
    }
}

/// The operating system's trusted CAs, read once.
pub(crate) fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no CA certificates found on this system; give the cluster's `ca`".into(),
                );
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// The name a target's certificate is checked against and sent by SNI.
pub fn server_name(tls: Option<&UpstreamTls>, host: &str) -> Option<ServerName<'static>> {
    let name = tls.and_then(|t| t.server_name.as_deref()).unwrap_or(host);
    ServerName::try_from(
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .ok()
}

/// `insecure_skip_verify`: any certificate is accepted, but the handshake's signatures
/// are still checked, so the connection is at least encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
