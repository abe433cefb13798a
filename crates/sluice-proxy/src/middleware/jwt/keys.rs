//! Verification keys: a shared secret, PEM public keys, or the signing keys of a JSON Web Key Set, each tagged with the only algorithms it may verify.

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde_json::Value;

/// RSA moduli outside this range are refused: smaller ones are weak, and the RSA
/// implementation does not verify with larger ones.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;
/// A key set with more keys than this is cut there.
pub const MAX_KEYS: usize = 100;

/// What a key is, which decides the algorithms it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind verifies `alg`: an HMAC secret only HS*, an RSA key only
    /// RS* and PS*, each curve only its own ECDSA algorithm, Ed25519 only EdDSA.
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Hmac => matches!(alg, HS256 | HS384 | HS512),
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One key and what it may verify.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The `alg` a JWK is pinned to, when it names one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.verifies(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }

    /// A shared secret for HS256, HS384 and HS512.
    pub fn secret(secret: &[u8]) -> VerifyKey {
        VerifyKey {
            kid: None,
            kind: KeyKind::Hmac,
            alg: None,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// A PEM public key: `PUBLIC KEY` (RSA, EC P-256/P-384 or Ed25519) or `RSA PUBLIC KEY`.
    pub fn from_pem(pem: &[u8]) -> Result<VerifyKey, String> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            return Err(
                "this is a private key; give its public key (openssl pkey -in KEY -pubout)".into(),
            );
        }
        if text.contains("-----BEGIN CERTIFICATE-----") {
            return Err("certificates are not read; give the public key (openssl x509 -in CERT -pubkey -noout)".into());
        }
        if !text.contains("PUBLIC KEY-----") {
            return Err("not a PEM public key (-----BEGIN PUBLIC KEY-----)".into());
        }
        let (kind, key) = if let Ok(der) = DecodingKey::from_rsa_pem(pem) {
            let (n, e) = (DEFAULT_PROVIDER
                .key_utils
                .rsa_pub_components_from_public_key)(
                der.try_get_as_bytes().map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("not a usable RSA public key: {e}"))?;
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            let point = key.try_get_as_bytes().map_err(|e| e.to_string())?;
            let kind = match point.len() {
                65 | 33 => KeyKind::P256,
                97 | 49 => KeyKind::P384,
                _ => return Err("an EC key must be on P-256 or P-384".into()),
            };
            (kind, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (KeyKind::Ed25519, key)
        } else {
            return Err("not an RSA, EC (P-256, P-384) or Ed25519 public key".into());
        };
        checked(VerifyKey {
            kid: None,
            kind,
            alg: None,
            key,
        })
    }

    /// A key of a JWKS. `Err` says why the key is skipped: not a signing key, a kind or
    /// curve not supported, a symmetric key (never taken from a key set), or broken.
    pub fn from_jwk(jwk: &Value) -> Result<VerifyKey, String> {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err("its `kid` is not a string".into()),
        };
        if let Some(usage) = field("use").filter(|u| *u != "sig") {
            return Err(format!("not a signing key (use = {usage})"));
        }
        let need = |name: &str| field(name).ok_or_else(|| format!("no `{name}`"));
        let bad = |e: jsonwebtoken::errors::Error| format!("not a valid key: {e}");
        let (kind, key) = match (field("kty"), field("crv")) {
            (Some("RSA"), _) => (
                KeyKind::Rsa,
                DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(bad)?,
            ),
            (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                let key = DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(bad)?;
                let (kind, len) = match crv {
                    "P-256" => (KeyKind::P256, 65),
                    _ => (KeyKind::P384, 97),
                };
                if key.try_get_as_bytes().map_or(0, <[u8]>::len) != len {
                    return Err(format!("its coordinates are not {crv} coordinates"));
                }
                (kind, key)
            }
            (Some("OKP"), Some("Ed25519")) => (
                KeyKind::Ed25519,
                DecodingKey::from_ed_components(need("x")?).map_err(bad)?,
            ),
            (Some("oct"), _) => {
                return Err("a symmetric key, which is never taken from a key set".into())
            }
            (Some(kty), crv) => {
                return Err(format!(
                    "unsupported key type {kty}{}",
                    crv.map(|c| format!(" ({c})")).unwrap_or_default()
                ))
            }
            (None, _) => return Err("no `kty`".into()),
        };
        let alg = match field("alg") {
            None => None,
            Some(name) => match name.parse::<Algorithm>() {
                Ok(alg) if kind.verifies(alg) => Some(alg),
                _ => return Err(format!("`alg` {name} does not fit the key")),
            },
        };
        checked(VerifyKey {
            kid,
            kind,
            alg,
            key,
        })
    }
}

/// `key`, once its material checks out for its kind.
fn checked(key: VerifyKey) -> Result<VerifyKey, String> {
    let probe = match key.kind {
        KeyKind::Hmac => return Ok(key),
        KeyKind::Rsa => {
            let bits = match key.key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, .. } => bit_length(n),
                DecodingKeyKind::SecretOrDer(_) => 0,
            };
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "an RSA key of {bits} bits; 2048 to 4096 bits are accepted"
                ));
            }
            return Ok(key);
        }
        KeyKind::P256 => Algorithm::ES256,
        KeyKind::P384 => Algorithm::ES384,
        KeyKind::Ed25519 => {
            // Checked here: the verifier slices the first 32 bytes without looking.
            if key.key.try_get_as_bytes().map_or(0, <[u8]>::len) != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            Algorithm::EdDSA
        }
    };
    match (DEFAULT_PROVIDER.verifier_factory)(&probe, &key.key) {
        Ok(_) => Ok(key),
        Err(e) => Err(format!("not a valid key: {e}")),
    }
}

fn bit_length(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    n.first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize)
}

/// The signing keys of a JWKS document, and why each of the others was skipped.
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<VerifyKey>, Vec<String>), String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("the key set has no `keys` array".into());
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in list.iter().take(MAX_KEYS).enumerate() {
        match VerifyKey::from_jwk(jwk) {
            Ok(key) => keys.push(key),
            Err(why) => {
                let name = jwk.get("kid").and_then(Value::as_str).map_or_else(
                    || format!("key #{i}"),
                    |k| format!("key `{}`", k.escape_debug()),
                );
                skipped.push(format!("{name}: {why}"));
            }
        }
    }
    if list.len() > MAX_KEYS {
        skipped.push(format!(
            "{} keys after the first {MAX_KEYS}",
            list.len() - MAX_KEYS
        ));
    }
    Ok((keys, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtRRLlKE90UjOStuFpOOW
B6SPm0tH6w1e+pRTgKz3ZC/BYNQdt35fyyRhN+p1bFEYoAJACrny/qqYG/4Qe/Me
l+e8ZdjKIhuNz1XibFzlWwa/1GvUahCOJXmNRo9duz6r/RKsG8Tz8VCjeEzy+E4W
Jm7IwqGbg2abcpiEtPFK31bGK+tDqbHmAVqdm6iVUKH1Rft91hTKyqQ3kuGkjN9/
YyVByZHZAVMzLziCRiAkrXD25jgdFZh25vVire6FTuFfSHeBKTBmSkG8oFilimbn
l8o8WlkQoIjuAPN2WAmnHtbgMRvKmyHVfIJYMDl5zSwzbMLB2nwEtPhUQz1Hyk98
DQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAtRRLlKE90UjOStuFpOOWB6SPm0tH6w1e+pRTgKz3ZC/BYNQdt35f
yyRhN+p1bFEYoAJACrny/qqYG/4Qe/Mel+e8ZdjKIhuNz1XibFzlWwa/1GvUahCO
JXmNRo9duz6r/RKsG8Tz8VCjeEzy+E4WJm7IwqGbg2abcpiEtPFK31bGK+tDqbHm
AVqdm6iVUKH1Rft91hTKyqQ3kuGkjN9/YyVByZHZAVMzLziCRiAkrXD25jgdFZh2
5vVire6FTuFfSHeBKTBmSkG8oFilimbnl8o8WlkQoIjuAPN2WAmnHtbgMRvKmyHV
fIJYMDl5zSwzbMLB2nwEtPhUQz1Hyk98DQIDAQAB
-----END RSA PUBLIC KEY-----
";
    const RSA_1024_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDvqCHUNf5q+3QWbamBhjLF9eAT
JPp8P/Og7V925yprNsRASCQAtlTRW0yZJiOvOclQs0Zb3iPxKGdNpqRcSQS3Tyb1
Np3vVVi5S31bfauIQVnt6uJ1sslwlwBZny5Yn+8tPDKZHhwsL9aZc2Qv0tmdrmiT
3GnGNJXI+zGtf+SNoQIDAQAB
-----END PUBLIC KEY-----
";
    const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEoNABMoabsuuWuD9Yx/kpWmtgbKZTPIxK
MpyrUtlZYd3FxIyGcBR7EYKKqlbXYOYoTX6h1+6AOnNpZyMZgeJou+8xNN1aDP4q
27sNQQXw/zBChk1YEiBMOzJ7iDNG8hhP
-----END PUBLIC KEY-----
";
    const ED_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHO0+MtwfeGyfbsYJVu13sBngEEg060+gxIbOWFRD06s=
-----END PUBLIC KEY-----
";
    const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgv6qA74y01JDkFZ5O
j1rIm+DTAbEjfy5PgGhohL4BYuahRANCAAQzp0V23bPF3VNYRvApmgqaI61ITw1R
8BH2ikXhFjpgcOHRLUyPXwfER2kja4cjM7NTerco/Mecd8Tc60Xt22++
-----END PRIVATE KEY-----
";
    const RSA_N: &str = "tRRLlKE90UjOStuFpOOWB6SPm0tH6w1e-pRTgKz3ZC_BYNQdt35fyyRhN-p1bFEYoAJACrny_qqYG_4Qe_Mel-e8ZdjKIhuNz1XibFzlWwa_1GvUahCOJXmNRo9duz6r_RKsG8Tz8VCjeEzy-E4WJm7IwqGbg2abcpiEtPFK31bGK-tDqbHmAVqdm6iVUKH1Rft91hTKyqQ3kuGkjN9_YyVByZHZAVMzLziCRiAkrXD25jgdFZh25vVire6FTuFfSHeBKTBmSkG8oFilimbnl8o8WlkQoIjuAPN2WAmnHtbgMRvKmyHVfIJYMDl5zSwzbMLB2nwEtPhUQz1Hyk98DQ";

    fn kinds(pem: &str) -> Result<KeyKind, String> {
        VerifyKey::from_pem(pem.as_bytes()).map(|k| k.kind)
    }

    #[test]
    fn pem_public_keys_are_typed_by_what_they_hold() {
        assert_eq!(kinds(RSA_PEM), Ok(KeyKind::Rsa));
        assert_eq!(kinds(RSA_PKCS1), Ok(KeyKind::Rsa));
        assert_eq!(kinds(P384_PEM), Ok(KeyKind::P384));
        assert_eq!(kinds(ED_PEM), Ok(KeyKind::Ed25519));
        assert_eq!(
            kinds(RSA_1024_PEM),
            Err("an RSA key of 1024 bits; 2048 to 4096 bits are accepted".into())
        );
        assert_eq!(
            kinds(P256_PRIVATE),
            Err("this is a private key; give its public key (openssl pkey -in KEY -pubout)".into())
        );
        assert!(kinds("hello").is_err());
        assert!(kinds("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }

    #[test]
    fn a_key_verifies_only_its_own_algorithms() {
        use Algorithm::*;
        let rsa = VerifyKey::from_pem(RSA_PEM.as_bytes()).expect("rsa");
        assert!(rsa.accepts(RS256) && rsa.accepts(PS512));
        assert!(!rsa.accepts(HS256) && !rsa.accepts(ES256));
        let hmac = VerifyKey::secret(RSA_PEM.as_bytes());
        assert!(hmac.accepts(HS256) && !hmac.accepts(RS256));
        let p384 = VerifyKey::from_pem(P384_PEM.as_bytes()).expect("p384");
        assert!(p384.accepts(ES384) && !p384.accepts(ES256));
        let pinned = VerifyKey {
            alg: Some(PS256),
            ..rsa
        };
        assert!(pinned.accepts(PS256) && !pinned.accepts(RS256));
    }

    #[test]
    fn a_key_set_keeps_its_signing_keys_and_says_why_it_skips_the_others() {
        let set = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "kid": "p256", "crv": "P-256",
             "x": "M6dFdt2zxd1TWEbwKZoKmiOtSE8NUfAR9opF4RY6YHA",
             "y": "4dEtTI9fB8RHaSNrhyMzs1N6tyj8x5x3xNzrRe3bb74"},
            {"kty": "EC", "kid": "p384", "crv": "P-384",
             "x": "oNABMoabsuuWuD9Yx_kpWmtgbKZTPIxKMpyrUtlZYd3FxIyGcBR7EYKKqlbXYOYo",
             "y": "TX6h1-6AOnNpZyMZgeJou-8xNN1aDP4q27sNQQXw_zBChk1YEiBMOzJ7iDNG8hhP"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "HO0-MtwfeGyfbsYJVu13sBngEEg060-gxIbOWFRD06s"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "off-curve", "crv": "P-256",
             "x": "M6dFdt2zxd1TWEbwKZoKmiOtSE8NUfAR9opF4RY6YHA",
             "y": "M6dFdt2zxd1TWEbwKZoKmiOtSE8NUfAR9opF4RY6YHA"},
            {"kty": "OKP", "kid": "short", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "RSA", "kid": "pinned-wrong", "alg": "ES256", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "no-e", "n": RSA_N},
            {"kty": "RSA", "kid": 7, "n": RSA_N, "e": "AQAB"},
        ]});
        let (keys, skipped) = parse_jwks(set.to_string().as_bytes()).expect("parsed");
        let got: Vec<(Option<&str>, KeyKind, Option<Algorithm>)> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.kind, k.alg))
            .collect();
        assert_eq!(
            got,
            [
                (Some("rsa"), KeyKind::Rsa, Some(Algorithm::RS256)),
                (Some("p256"), KeyKind::P256, None),
                (Some("p384"), KeyKind::P384, None),
                (Some("ed"), KeyKind::Ed25519, None),
            ]
        );
        assert_eq!(skipped.len(), 8, "{skipped:?}");
        assert_eq!(skipped[0], "key `enc`: not a signing key (use = enc)");
        assert_eq!(
            skipped[1],
            "key `hmac`: a symmetric key, which is never taken from a key set"
        );
        assert_eq!(skipped[2], "key `p521`: unsupported key type EC (P-521)");
        assert!(
            skipped[3].starts_with("key `off-curve`: not a valid key"),
            "{}",
            skipped[3]
        );
        assert_eq!(skipped[4], "key `short`: an Ed25519 key is 32 bytes");
        assert_eq!(
            skipped[5],
            "key `pinned-wrong`: `alg` ES256 does not fit the key"
        );
        assert_eq!(skipped[6], "key `no-e`: no `e`");
        assert_eq!(skipped[7], "key #11: its `kid` is not a string");
        assert!(parse_jwks(b"{\"keys\": 3}").is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
