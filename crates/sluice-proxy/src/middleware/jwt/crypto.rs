//! Token signatures checked with ring, the library the gateway's TLS already uses: several times faster than the pure-Rust RSA of the JWT library's own backend.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::Result;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use ring::signature as rs;
use rs::{RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use std::sync::OnceLock;

/// Makes ring the JWT library's verifier for this process (signing and JWK utilities, which
/// the gateway does not use on requests, stay the library's). Idempotent.
pub fn install() {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    let fallback = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    let provider = PROVIDER.get_or_init(|| CryptoProvider {
        signer_factory: fallback.signer_factory,
        verifier_factory: ring_verifier,
        key_utils: fallback.key_utils.clone(),
    });
    // Already installed (by an earlier middleware): the same provider.
    let _ = provider.install_default();
}

fn ring_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

/// Checks one signature with ring.
struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

impl ::signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], sig: &Vec<u8>) -> std::result::Result<(), ::signature::Error> {
        let fail = |_| ::signature::Error::new();
        let public: &dyn VerificationAlgorithm = match self.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let hmac = match self.alg {
                    Algorithm::HS256 => ring::hmac::HMAC_SHA256,
                    Algorithm::HS384 => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                let DecodingKeyKind::SecretOrDer(secret) = self.key.kind() else {
                    return Err(::signature::Error::new());
                };
                return ring::hmac::verify(&ring::hmac::Key::new(hmac, secret), message, sig)
                    .map_err(fail);
            }
            Algorithm::ES256 => &rs::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &rs::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &rs::ED25519,
            // The RSA family; algorithms the gateway does not allow never get here.
            other => rsa_params(other).ok_or_else(::signature::Error::new)?,
        };
        match self.key.kind() {
            // An RSA key as its modulus and exponent (JWKs).
            DecodingKeyKind::RsaModulusExponent { n, e } => RsaPublicKeyComponents { n, e }
                .verify(
                    rsa_params(self.alg).ok_or_else(::signature::Error::new)?,
                    message,
                    sig,
                )
                .map_err(fail),
            // PKCS#1 for RSA, the uncompressed point for EC, the raw key for Ed25519.
            DecodingKeyKind::SecretOrDer(bytes) => UnparsedPublicKey::new(public, bytes)
                .verify(message, sig)
                .map_err(fail),
        }
    }
}

fn rsa_params(alg: Algorithm) -> Option<&'static rs::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
