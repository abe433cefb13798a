//! Sluice configuration: the file's raw shape, its validation, and the runtime snapshot.
//!
//! A file goes through two stages: [`raw`] mirrors the TOML exactly (unknown keys are
//! errors), then [`validate`] turns it into the immutable [`Config`] the data path uses,
//! collecting every problem as a [`ConfigError`] with its file, line, column and key.

mod diff;
mod error;
mod jwt;
mod keypath;
mod middleware;
pub mod raw;
mod redis;
mod runtime;
mod tls;
mod units;
mod validate;

pub use diff::restart_only_changes;
pub use error::{ConfigError, ConfigErrors, Location};
pub use jwt::*;
pub use middleware::*;
pub use redis::*;
pub use runtime::*;
pub use tls::*;
pub use units::{parse_duration, parse_size};

use std::path::Path;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError::new(
            &file,
            Location::START,
            "",
            format!("cannot read file: {e}"),
        ))
    })?;
    parse(&source, &file)
}

/// Validates configuration text; `file` names it in error lines.
pub fn parse(source: &str, file: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::ConfigFile = toml::from_str(source).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let location = Location::from_offset(source, offset);
        let key = keypath::key_at(source, offset);
        let message = error::explain_serde(e.message());
        ConfigErrors::single(ConfigError::new(file, location, &key, message))
    })?;
    validate::validate(raw, source, file)
}

/// The configuration Sluice runs with when no file is given: the data plane on
/// 127.0.0.1:8080, admin on 127.0.0.1:9901, and a welcome route answered by the gateway.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[admin]
listen = "127.0.0.1:9901"

[[routes]]
name = "welcome"
path = "/"
respond = { status = 200, body = "hello from sluice\n", headers = { "content-type" = "text/plain; charset=utf-8" } }
"#;

/// The built-in default configuration, validated.
pub fn default_config() -> Result<Config, ConfigErrors> {
    parse(DEFAULT_CONFIG, "<built-in>")
}
