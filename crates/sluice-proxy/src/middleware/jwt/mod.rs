//! `type = "jwt"`: verifies a signed token against the configured keys and allow-list of algorithms, checks its times, issuer and audience, then the route's claim rules, and passes selected claims on.

mod claims;
mod crypto;
mod fetch;
mod jwks;
mod keys;
mod token;

pub use claims::Claims;

use super::RequestState;
use crate::rescue::ProxyError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use jwks::Jwks;
use keys::VerifyKey;
use serde_json::{Map, Value};
use sluice_config::{ConfigError, Jwt, JwtAlgorithm, JwtKeys};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 6750: the challenge for a token that does not check out...
const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";
/// ...and for a request without one.
const NO_TOKEN: &str = "Bearer";

/// Where the keys are.
#[derive(Debug)]
enum Keys {
    /// A secret or PEM files, loaded with the configuration.
    Fixed(Vec<VerifyKey>),
    Jwks(Arc<Jwks>),
}

/// One jwt middleware, ready to run.
#[derive(Debug)]
pub struct Verifier {
    config: Jwt,
    keys: Keys,
    /// The allowed algorithms, each with the checks a token signed with it goes through.
    validations: Vec<(Algorithm, Validation)>,
    /// Tokens whose signature already checked out.
    verified: Verified,
}

impl Verifier {
    /// Loads the keys of `[middleware.NAME]`. A key set `previous` already keeps for the
    /// same JWKS settings is kept, with its keys and its refresher; key files are read
    /// again.
    pub fn new(
        name: &str,
        config: &Jwt,
        previous: Option<&Verifier>,
        file: &str,
    ) -> Result<Verifier, ConfigError> {
        crypto::install();
        let fail = |key: &str, message: String| {
            ConfigError::new(
                file,
                config.location,
                &format!("middleware.{name}.{key}"),
                message,
            )
        };
        let keys = match &config.keys {
            JwtKeys::Secret(secret) => Keys::Fixed(vec![VerifyKey::secret(secret.bytes())]),
            JwtKeys::PublicKeys(paths) => Keys::Fixed(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, path)| {
                        std::fs::read(path)
                            .map_err(|e| format!("cannot read {}: {e}", path.display()))
                            .and_then(|pem| VerifyKey::from_pem(&pem))
                            .map_err(|e| {
                                fail(
                                    &format!("public_keys[{i}]"),
                                    format!("{}: {e}", path.display()),
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            JwtKeys::Jwks(settings) => match previous.map(|p| &p.keys) {
                Some(Keys::Jwks(old)) if old.settings == *settings => Keys::Jwks(Arc::clone(old)),
                _ => Keys::Jwks(Arc::new(
                    Jwks::new(name, settings).map_err(|e| fail("jwks_url", e))?,
                )),
            },
        };
        if let Keys::Fixed(fixed) = &keys {
            // Validation made sure secrets go with HS* only; a PEM file's kind is known now.
            if let Some(alg) = config
                .algorithms
                .iter()
                .find(|a| !fixed.iter().any(|k| k.accepts(algorithm(**a))))
            {
                return Err(fail(
                    "algorithms",
                    format!("no key in `public_keys` verifies {}", alg.as_str()),
                ));
            }
        }
        let validations = config
            .algorithms
            .iter()
            .map(|a| (algorithm(*a), validation(config, algorithm(*a))))
            .collect();
        Ok(Verifier {
            config: config.clone(),
            keys,
            validations,
            verified: Verified::default(),
        })
    }

    /// Which key set verifies tokens now: a token verified with another is checked again.
    fn key_set_id(&self) -> usize {
        match &self.keys {
            Keys::Fixed(_) => 0,
            Keys::Jwks(jwks) => jwks
                .cached(None)
                .map_or(usize::MAX, |set| Arc::as_ptr(&set) as usize),
        }
    }

    /// Whether both verify with the very same JWKS key set (kept by a reload).
    pub fn shares_key_set(&self, other: &Verifier) -> bool {
        matches!((&self.keys, &other.keys), (Keys::Jwks(a), Keys::Jwks(b)) if Arc::ptr_eq(a, b))
    }

    /// Starts the key set's background refresh, when there is one and it does not run yet.
    pub fn start_refresh(&self) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.start();
        }
    }

    /// 401 without a valid token, 403 when its claims do not satisfy the route; otherwise
    /// the claims are the request's, forwarded headers set and, if asked, the token removed.
    pub async fn check(
        &self,
        parts: &mut Parts,
        state: &mut RequestState,
    ) -> Result<(), ProxyError> {
        let Some(token) = token::find(&self.config.token_from, parts) else {
            return Err(ProxyError::Unauthorized {
                challenge: NO_TOKEN,
                detail: "no bearer token in the request",
            });
        };
        let set = self.key_set_id();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let admitted = match self.verified.get(&token, set, now) {
            Some(admitted) => admitted,
            None => {
                let claims =
                    self.verify(&token)
                        .await
                        .map_err(|detail| ProxyError::Unauthorized {
                            challenge: INVALID_TOKEN,
                            detail,
                        })?;
                let admitted = Arc::new(self.admit(claims));
                if let Some(exp) = admitted.claims.get("exp").and_then(Value::as_f64) {
                    self.verified.put(&token, Arc::clone(&admitted), exp, set);
                }
                admitted
            }
        };
        if let Some(why) = &admitted.refusal {
            return Err(ProxyError::InsufficientScope(why.clone()));
        }
        if self.config.hide_credentials {
            token::hide(&self.config.token_from, parts);
        }
        for (header, value) in &admitted.forwarded {
            parts.headers.insert(header.clone(), value.clone());
        }
        state.claims = Some(admitted.claims.clone());
        Ok(())
    }

    /// What a token with `claims` gets on this middleware's routes, decided once per token:
    /// the claim rules' verdict and the forwarded headers.
    fn admit(&self, claims: Claims) -> Admitted {
        let refusal = claims::refusal(&self.config, &claims);
        let forwarded = self
            .config
            .forward_claims
            .iter()
            .filter_map(|(claim, header)| {
                let value = claims.text(claim).and_then(|t| super::header_value(&t))?;
                Some((header.clone(), value))
            })
            .collect();
        Admitted {
            claims,
            refusal,
            forwarded,
        }
    }

    /// The claims of `token`, or why it is refused.
    async fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let header = TokenHeader::parse(token)?;
        let Some((alg, validation)) = self
            .validations
            .iter()
            .find(|(a, _)| JwtAlgorithm::parse(&header.alg).is_some_and(|h| algorithm(h) == *a))
        else {
            return Err("the token's algorithm is not allowed");
        };
        let set;
        let (keys, by_kid): (&[VerifyKey], bool) = match &self.keys {
            // Files and secrets have no key ids: every key that fits the algorithm is tried.
            Keys::Fixed(keys) => (keys, false),
            Keys::Jwks(jwks) => {
                set = match jwks.cached(header.kid.as_deref()) {
                    Ok(set) => set,
                    // Boxed so that the pipeline's future stays small for the requests
                    // that need no fetch.
                    Err(seen) => Box::pin(jwks.fetched(seen))
                        .await
                        .ok_or("the signing keys are not available (the JWKS cannot be fetched)")?,
                };
                (&set.keys, header.kid.is_some())
            }
        };
        let mut candidates = keys
            .iter()
            .filter(|k| !by_kid || k.kid == header.kid)
            .filter(|k| k.accepts(*alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(if by_kid {
                "no signing key has the token's kid"
            } else {
                "no signing key fits the token's algorithm"
            });
        }
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return self.check_claims(data.claims),
                Err(e) => match e.kind() {
                    // Another key may fit.
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_) => continue,
                    other => return Err(rejection(other)),
                },
            }
        }
        Err("the token's signature is not valid")
    }

    /// What the library leaves to us: `iss` exactly, and `iat` not in the future.
    fn check_claims(&self, claims: Map<String, Value>) -> Result<Claims, &'static str> {
        if let Some(issuer) = &self.config.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err("the token's issuer is not accepted");
            }
        }
        match claims.get("iat") {
            None => {}
            Some(Value::Number(iat)) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                if iat
                    .as_f64()
                    .is_some_and(|t| t > now + self.config.leeway.as_secs_f64())
                {
                    return Err("the token was issued in the future");
                }
            }
            Some(_) => return Err("the token's iat is not a number"),
        }
        Ok(Claims::new(claims))
    }
}

/// Tokens verified lately, by their text: a client sends the same token with request after
/// request, and checking an RSA signature costs more than proxying the request. A token is
/// served from here only until its `exp`, and only while the key set that verified it is
/// the current one; the route's claim rules run on every request all the same.
#[derive(Debug)]
struct Verified {
    shards: Box<[Mutex<Tokens>]>,
    /// Starts each token's hash, so that which tokens share a shard differs by process.
    seed: u64,
}

/// One shard: verified tokens by the hash of their text (hashed once per request).
type Tokens = HashMap<u64, Entry>;

#[derive(Debug)]
struct Entry {
    /// The token itself: two tokens with one hash are told apart here.
    token: Box<str>,
    admitted: Arc<Admitted>,
    exp: f64,
    set: usize,
}

/// A verified token's claims, with what this middleware decided from them.
#[derive(Debug)]
struct Admitted {
    claims: Claims,
    /// Why the claims do not satisfy the route's rules (403), when they do not.
    refusal: Option<String>,
    /// The `forward_claims` headers and their values.
    forwarded: Vec<(http::HeaderName, http::HeaderValue)>,
}

const SHARDS: usize = 16;
/// Tokens kept per shard (4,096 in all); a full shard drops its expired tokens, or all.
const PER_SHARD: usize = 256;

impl Default for Verified {
    fn default() -> Self {
        Verified {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            seed: RandomState::new().hash_one(0u64),
        }
    }
}

impl Verified {
    /// A fast hash of the token's text: the map compares the whole token on a hit, and
    /// only tokens that verified are kept, so a collision costs one more verification.
    fn hash(&self, token: &str) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.seed;
        let mut words = token.as_bytes().chunks_exact(8);
        for word in &mut words {
            let word = <[u8; 8]>::try_from(word).unwrap_or_default();
            h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        h
    }

    fn shard(&self, token: &str) -> (u64, std::sync::MutexGuard<'_, Tokens>) {
        let hash = self.hash(token);
        let shard = self.shards[(hash >> 32) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (hash, shard)
    }

    fn get(&self, token: &str, set: usize, now: f64) -> Option<Arc<Admitted>> {
        let (hash, mut shard) = self.shard(token);
        let entry = shard.get(&hash).filter(|e| *e.token == *token)?;
        if entry.exp > now && entry.set == set {
            return Some(Arc::clone(&entry.admitted));
        }
        shard.remove(&hash);
        None
    }

    fn put(&self, token: &str, admitted: Arc<Admitted>, exp: f64, set: usize) {
        let (hash, mut shard) = self.shard(token);
        if shard.len() >= PER_SHARD {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            shard.retain(|_, e| e.exp > now);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        let entry = Entry {
            token: Box::from(token),
            admitted,
            exp,
            set,
        };
        shard.insert(hash, entry);
    }
}

/// The checks a token signed with `alg` goes through in the library: `exp` (required),
/// `nbf`, and `aud` when an audience is configured, all with the leeway.
fn validation(config: &Jwt, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if config.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    if config.issuer.is_some() {
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn rejection(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "the token lacks a numeric exp claim",
            "aud" => "the token has no aud claim",
            "iss" => "the token has no iss claim",
            _ => "the token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "a time claim of the token is not a number",
        _ => "the token is malformed",
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The parts of a token's header read before any key is picked.
#[derive(Debug, PartialEq)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, &'static str> {
        const MALFORMED: &str = "the token is malformed";
        let mut segments = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(MALFORMED);
        };
        let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| MALFORMED)?;
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&json) else {
            return Err(MALFORMED);
        };
        // Extensions the verifier must understand (RFC 7515 §4.1.11): none are.
        if fields.contains_key("crit") {
            return Err("the token names critical header extensions, which are not supported");
        }
        let kid = match fields.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(MALFORMED),
        };
        match fields.get("alg") {
            Some(Value::String(alg)) => Ok(TokenHeader {
                alg: alg.clone(),
                kid,
            }),
            _ => Err(MALFORMED),
        }
    }
}

#[cfg(test)]
mod tests;
