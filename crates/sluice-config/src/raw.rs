//! The configuration file exactly as written: serde types with unknown keys denied and
//! spans kept, so validation can point at the line of every problem.

use serde::de::{self, value::MapAccessDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// A whole configuration file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub clusters: BTreeMap<Spanned<String>, ClusterConfig>,
    #[serde(default)]
    pub middleware: BTreeMap<Spanned<String>, Spanned<MiddlewareConfig>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
    pub redis: Option<Spanned<RedisConfig>>,
}

/// `[server]`: the data-plane listeners.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub unix: Vec<Spanned<String>>,
    pub threads: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub access_log: Option<bool>,
    pub watch_config: Option<bool>,
    pub upgrade_socket: Option<Spanned<String>>,
    pub middleware: Option<Vec<Spanned<String>>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub tls: Option<Spanned<TlsConfig>>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[server.limits]`: what a client may send before the gateway answers with an error.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_uri_size: Option<Spanned<SizeValue>>,
    pub max_header_size: Option<Spanned<SizeValue>>,
    pub max_headers: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Spanned<String>>,
    pub keepalive_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_requests: Option<Spanned<i64>>,
}

/// A size written as a string with a unit or as a plain number of bytes.
#[derive(Debug)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

// By hand rather than `untagged`, for an error that says what a size looks like.
impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64KiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[admin]`: the admin listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<Spanned<String>>,
    pub enabled: Option<bool>,
}

/// `[redis]`: the Redis server shared by every gateway node (rate-limit counts).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

/// `[clusters.NAME]`: a set of targets and how to balance over them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub targets: Spanned<Vec<Spanned<TargetConfig>>>,
    pub balance: Option<Spanned<String>>,
    pub hash_key: Option<Spanned<String>>,
    pub sticky_cookie: Option<Spanned<String>>,
    pub http2: Option<bool>,
    pub preserve_host: Option<bool>,
    pub connect_timeout: Option<Spanned<String>>,
    pub pool_idle_timeout: Option<Spanned<String>>,
    pub pool_max_idle: Option<Spanned<i64>>,
    pub max_requests: Option<Spanned<i64>>,
    pub max_pending: Option<Spanned<i64>>,
    pub panic_threshold: Option<Spanned<i64>>,
    pub health: Option<Spanned<HealthConfig>>,
    pub outlier: Option<Spanned<OutlierConfig>>,
    pub breaker: Option<Spanned<BreakerConfig>>,
    pub tls: Option<Spanned<UpstreamTlsConfig>>,
}

/// `[clusters.NAME.tls]`: how `https://` targets are verified and what the gateway shows them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<bool>,
}

/// `[clusters.NAME.health]`: active health checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub expect: Option<Vec<Spanned<StatusValue>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

/// A status code (`200`) or a class (`"2xx"`).
#[derive(Debug)]
pub enum StatusValue {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for StatusValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code like 200 or a class like \"2xx\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusValue, E> {
                Ok(StatusValue::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusValue, E> {
                Ok(StatusValue::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusValue, E> {
                Ok(StatusValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[clusters.NAME.outlier]`: passive ejection of failing targets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub base_ejection: Option<Spanned<String>>,
    pub max_ejection: Option<Spanned<String>>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

/// `[clusters.NAME.breaker]`: a circuit breaker per target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub failure_percent: Option<Spanned<i64>>,
    pub window: Option<Spanned<String>>,
    pub min_requests: Option<Spanned<i64>>,
    pub open_for: Option<Spanned<String>>,
    pub half_open_requests: Option<Spanned<i64>>,
}

/// A target: a URL, or a table with a URL and a weight.
#[derive(Debug)]
pub enum TargetConfig {
    Url(String),
    Weighted(WeightedTarget),
}

// Written by hand rather than `untagged` so that a typo inside `{ url, weight }` is
// reported as an unknown key, not as "did not match any variant".
impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a target URL or a table like { url = \"http://host:port\", weight = 2 }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig::Url(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                WeightedTarget::deserialize(MapAccessDeserializer::new(map))
                    .map(TargetConfig::Weighted)
            }
        }
        d.deserialize_any(V)
    }
}

/// `{ url = "...", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    pub url: String,
    pub weight: Option<i64>,
}

/// `[[routes]]`: which requests a route takes and what it does with them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub cluster: Option<Spanned<String>>,
    pub respond: Option<Spanned<RespondConfig>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub try_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_body_size: Option<Spanned<SizeValue>>,
    pub max_requests: Option<Spanned<i64>>,
    pub retries: Option<Spanned<RetriesConfig>>,
    pub middleware: Option<Vec<Spanned<String>>>,
}

/// `retries = { attempts, on, backoff, ... }` on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    pub attempts: Option<Spanned<i64>>,
    pub on: Option<Vec<Spanned<String>>>,
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    pub budget_percent: Option<Spanned<i64>>,
    pub min_retries: Option<Spanned<i64>>,
    pub buffer: Option<Spanned<SizeValue>>,
    pub all_methods: Option<bool>,
}

/// `respond = { status, body, headers }`: an answer from the gateway itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    pub status: Option<i64>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `[middleware.NAME]`: one middleware. The keys of every type are listed here; validation
/// rejects the ones that do not belong to the block's `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareConfig {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    // ip
    pub allow: Option<Vec<Spanned<String>>>,
    pub deny: Option<Vec<Spanned<String>>>,
    // headers
    pub request: Option<Spanned<HeaderOpsConfig>>,
    pub response: Option<Spanned<HeaderOpsConfig>>,
    // cors
    pub allow_origins: Option<Spanned<Vec<Spanned<String>>>>,
    pub allow_methods: Option<Vec<Spanned<String>>>,
    pub allow_headers: Option<Vec<Spanned<String>>>,
    pub expose_headers: Option<Vec<Spanned<String>>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub max_age: Option<Spanned<String>>,
    // api_key
    pub key_from: Option<Vec<Spanned<String>>>,
    pub consumers: Option<Spanned<BTreeMap<String, Vec<Spanned<String>>>>>,
    pub consumer_header: Option<Spanned<String>>,
    pub hide_credentials: Option<Spanned<bool>>,
    // rate_limit
    pub algorithm: Option<Spanned<String>>,
    pub rate: Option<Spanned<i64>>,
    pub per: Option<Spanned<String>>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    pub store: Option<Spanned<String>>,
    pub on_store_error: Option<Spanned<String>>,
    // jwt (and `hide_credentials`, shared with api_key)
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub secret: Option<Spanned<String>>,
    pub public_keys: Option<Spanned<Vec<Spanned<String>>>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_ca: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<String>>,
    pub jwks_max_stale: Option<Spanned<String>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<Vec<Spanned<String>>>>,
    pub leeway: Option<Spanned<String>>,
    pub token_from: Option<Spanned<Vec<Spanned<String>>>>,
    pub require_claims: Option<Spanned<BTreeMap<String, Spanned<ClaimValueConfig>>>>,
    pub require_scopes: Option<Vec<Spanned<String>>>,
    pub require_roles: Option<Vec<Spanned<String>>>,
    pub forward_claims: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

/// A value a JWT claim must have: text, a whole number or a boolean.
#[derive(Debug, Clone)]
pub enum ClaimValueConfig {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for ClaimValueConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ClaimValueConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a claim value: a string, a whole number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClaimValueConfig, E> {
                Ok(ClaimValueConfig::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClaimValueConfig, E> {
                Ok(ClaimValueConfig::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClaimValueConfig, E> {
                i64::try_from(v)
                    .map(ClaimValueConfig::Integer)
                    .map_err(|_| E::custom("the number is too large"))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ClaimValueConfig, E> {
                Ok(ClaimValueConfig::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `request = { add, set, remove }` or `response = ...` in a `headers` middleware.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOpsConfig {
    pub add: Option<BTreeMap<String, Spanned<String>>>,
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    pub remove: Option<Vec<Spanned<String>>>,
}

/// `[server.tls]`: TLS listeners and their certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub certificates: Option<Spanned<Vec<Spanned<CertificateConfig>>>>,
    pub min_version: Option<Spanned<String>>,
    pub alpn: Option<Vec<Spanned<String>>>,
    pub client_auth: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub client_subject_header: Option<Spanned<String>>,
    pub redirect_http: Option<bool>,
    pub watch_certificates: Option<bool>,
}

/// One certificate chain and its private key, as PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}
