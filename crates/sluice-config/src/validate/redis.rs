//! Validation of the `[redis]` table: the server's URL (or the environment variable holding it) and the round-trip timeout.

use super::Checker;
use crate::raw::RedisConfig;
use crate::redis::{parse_redis_url, Redis};
use std::time::Duration;
use toml::Spanned;

/// The bound on one round trip when `timeout` is left out.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

pub(super) fn redis(c: &mut Checker, raw: &Option<Spanned<RedisConfig>>) -> Option<Redis> {
    let table = raw.as_ref()?;
    let r = table.get_ref();
    let timeout = c.duration(&r.timeout, "redis.timeout", DEFAULT_TIMEOUT);
    if let Some(t) = r.timeout.as_ref().filter(|_| timeout.is_zero()) {
        c.fail(t.span(), "redis.timeout", "must be longer than 0");
    }
    let Some(url) = &r.url else {
        c.fail(
            table.span(),
            "redis",
            "a [redis] table needs `url`, like url = \"redis://127.0.0.1:6379\"",
        );
        return None;
    };
    let text = match super::middleware::secret(url.get_ref()) {
        Ok(text) => text,
        Err(e) => {
            c.fail(url.span(), "redis.url", e);
            return None;
        }
    };
    match parse_redis_url(&text) {
        Ok(_) => Some(Redis { url: text, timeout }),
        Err(e) => {
            c.fail(url.span(), "redis.url", e);
            None
        }
    }
}
