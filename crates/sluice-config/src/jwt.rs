//! The `jwt` middleware as the data path runs it: the allowed algorithms, where the keys and the token come from, and what the token's claims must hold.

use crate::Location;
use http::HeaderName;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `type = "jwt"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    /// The only algorithms accepted, whatever a token says.
    pub algorithms: Vec<JwtAlgorithm>,
    pub keys: JwtKeys,
    /// The `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// Tokens must name one of these in `aud`; empty: `aud` is not checked.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Where the token is looked for, in order.
    pub token_from: Vec<TokenSource>,
    /// Claims that must have exactly these values (403 otherwise).
    pub require_claims: Vec<(String, ClaimValue)>,
    /// Every one of these must be in `scope` or `scp` (403 otherwise).
    pub require_scopes: Vec<String>,
    /// At least one of these must be in `roles` (403 otherwise).
    pub require_roles: Vec<String>,
    /// Claims sent to the target as headers the gateway owns.
    pub forward_claims: Vec<(String, HeaderName)>,
    /// Remove the token from the request before it is forwarded.
    pub hide_credentials: bool,
    /// Where the block is written, for errors found when its keys are loaded.
    pub location: Location,
}

/// Where a jwt middleware's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeys {
    /// One shared secret, for the HS* algorithms.
    Secret(Secret),
    /// PEM public key files (SubjectPublicKeyInfo or PKCS#1 RSA), without key ids.
    PublicKeys(Vec<PathBuf>),
    /// A JSON Web Key Set fetched over HTTP(S) and refreshed in the background.
    Jwks(JwksSettings),
}

/// `jwks_url` and the settings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// An `http://` or `https://` URL.
    pub url: http::Uri,
    /// PEM CA certificates an https URL's certificate must chain to; `None`: the system's.
    pub ca: Option<PathBuf>,
    /// How often the set is fetched again.
    pub refresh: Duration,
    /// How long the last keys fetched stay usable while the URL fails.
    pub max_stale: Duration,
}

/// A shared secret, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A signing algorithm a jwt middleware may allow. `none` is not one.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The name in a token's `alg` and in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm named exactly `text` (names are case-sensitive, as in tokens).
    pub fn parse(text: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// HS256, HS384, HS512: verified with a shared secret.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header: `Authorization` needs the `Bearer` scheme; in any other header a
    /// `Bearer ` prefix is optional.
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// A value a claim must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl fmt::Display for ClaimValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimValue::Text(t) => write!(f, "\"{t}\""),
            ClaimValue::Integer(n) => write!(f, "{n}"),
            ClaimValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_none_is_not_one() {
        for a in JwtAlgorithm::ALL {
            assert_eq!(JwtAlgorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(JwtAlgorithm::parse("none"), None);
        assert_eq!(JwtAlgorithm::parse("hs256"), None);
        assert!(JwtAlgorithm::HS384.is_hmac() && !JwtAlgorithm::RS256.is_hmac());
    }

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::new(b"hunter2-hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
