//! The configuration file exactly as written: serde types with unknown keys denied and
//! spans kept, so validation can point at the line of every problem.

use serde::Deserialize;
use std::collections::BTreeMap;
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
    pub routes: Vec<Spanned<RouteConfig>>,
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
}

/// A size written as a string with a unit or as a plain number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// `[admin]`: the admin listener.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<Spanned<String>>,
    pub enabled: Option<bool>,
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
}

/// A target: a URL, or a table with a URL and a weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TargetConfig {
    Url(String),
    Weighted(WeightedTarget),
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
