//! `type = "api_key"`: finds the key in a header or query parameter, hashes it, and names the consumer it belongs to.

use super::RequestState;
use crate::rescue::ProxyError;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri};
use sha2::{Digest, Sha256};
use sluice_config::{ApiKeys, KeySource};
use std::collections::HashMap;
use std::sync::Arc;

const CHALLENGE: &str = "ApiKey realm=\"sluice\"";

/// A key's SHA-256 digest and the consumer it belongs to.
type Owned = ([u8; 32], Arc<str>);

/// The consumers' key digests, bucketed by their first 8 bytes; the full digest is then
/// compared in constant time. The keys themselves are never kept.
#[derive(Debug)]
pub struct Keys {
    sources: Vec<KeySource>,
    buckets: HashMap<[u8; 8], Vec<Owned>>,
    consumer_header: HeaderName,
    hide_credentials: bool,
}

impl Keys {
    pub fn new(config: &ApiKeys) -> Keys {
        let mut buckets: HashMap<[u8; 8], Vec<Owned>> = HashMap::new();
        for consumer in &config.consumers {
            let name: Arc<str> = Arc::from(consumer.name.as_str());
            for digest in &consumer.key_digests {
                buckets
                    .entry(prefix(digest))
                    .or_default()
                    .push((*digest, Arc::clone(&name)));
            }
        }
        Keys {
            sources: config.sources.clone(),
            buckets,
            consumer_header: config.consumer_header.clone(),
            hide_credentials: config.hide_credentials,
        }
    }

    /// The consumer whose key this is.
    fn consumer(&self, key: &[u8]) -> Option<&Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.buckets
            .get(&prefix(&digest))?
            .iter()
            .find(|(stored, _)| same(stored, &digest))
            .map(|(_, name)| name)
    }

    pub fn check(&self, parts: &mut Parts, state: &mut RequestState) -> Result<(), ProxyError> {
        let Some(key) = self.find(parts) else {
            return Err(ProxyError::Unauthorized {
                challenge: CHALLENGE,
                detail: "no API key in the request",
            });
        };
        let Some(consumer) = self.consumer(&key).cloned() else {
            return Err(ProxyError::Unauthorized {
                challenge: CHALLENGE,
                detail: "the API key is not valid",
            });
        };
        if self.hide_credentials {
            // From every place a key may be, not only the one it was found in.
            for source in &self.sources {
                match source {
                    KeySource::Header(name) => {
                        parts.headers.remove(name);
                    }
                    KeySource::Query(name) => parts.uri = without_query_param(&parts.uri, name),
                }
            }
        }
        if let Ok(value) = HeaderValue::from_str(&consumer) {
            parts.headers.insert(self.consumer_header.clone(), value);
        }
        state.consumer = Some(consumer);
        Ok(())
    }

    /// The first key present, from the sources in order.
    fn find(&self, parts: &Parts) -> Option<Vec<u8>> {
        self.sources.iter().find_map(|source| {
            let key = match source {
                KeySource::Header(name) => parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
                KeySource::Query(name) => query_param(parts.uri.query()?, name),
            };
            key.filter(|k| !k.is_empty())
        })
    }
}

fn prefix(digest: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&digest[..8]);
    p
}

/// Equality that takes as long whatever the contents.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The percent-decoded value of query parameter `name`.
pub(super) fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok();
        match (bytes[i], hex().and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `uri` without query parameter `name`, so the key never reaches the target.
pub(super) fn without_query_param(uri: &Uri, name: &str) -> Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::Consumer;

    fn keys() -> Keys {
        Keys::new(&ApiKeys {
            sources: vec![
                KeySource::Header(HeaderName::from_static("x-api-key")),
                KeySource::Query("api_key".into()),
            ],
            consumers: vec![Consumer {
                name: "alice".into(),
                key_digests: vec![Sha256::digest(b"alice-key-1").into()],
            }],
            consumer_header: HeaderName::from_static("x-consumer"),
            hide_credentials: true,
        })
    }

    fn parts(uri: &str, key: Option<&str>) -> Parts {
        let mut b = http::Request::get(uri);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn a_known_key_names_its_consumer_and_is_hidden() {
        let keys = keys();
        let mut state = RequestState::default();
        let mut p = parts("/x", Some("alice-key-1"));
        keys.check(&mut p, &mut state).expect("accepted");
        assert_eq!(state.consumer.as_deref(), Some("alice"));
        assert!(p.headers.get("x-api-key").is_none());
        assert_eq!(
            p.headers.get("x-consumer").map(|v| v.as_bytes()),
            Some(&b"alice"[..])
        );

        let mut p = parts("/x?a=1&api_key=alice%2Dkey%2D1&b=2", None);
        keys.check(&mut p, &mut RequestState::default())
            .expect("accepted");
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");
    }

    #[test]
    fn missing_and_wrong_keys_are_refused() {
        let keys = keys();
        for (uri, key) in [
            ("/x", None),
            ("/x", Some("alice-key-2")),
            ("/x?api_key=", None),
        ] {
            let err = keys
                .check(&mut parts(uri, key), &mut RequestState::default())
                .expect_err("refused");
            assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        }
    }
}
