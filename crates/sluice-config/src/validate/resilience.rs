//! Validation of a cluster's resilience settings: `[clusters.NAME.health]`, `.outlier`,
//! `.breaker`, and the caps and panic threshold beside them.

use super::Checker;
use crate::raw::{self, StatusValue};
use crate::runtime::*;
use http::HeaderValue;
use std::time::Duration;
use toml::Spanned;

impl Checker<'_> {
    /// A whole number from 0 to 100.
    pub(super) fn percent(&mut self, value: &Option<Spanned<i64>>, key: &str, default: u8) -> u8 {
        let Some(v) = value else { return default };
        match u8::try_from(*v.get_ref()) {
            Ok(p) if p <= 100 => p,
            _ => {
                self.fail(v.span(), key, "must be a percentage from 0 to 100");
                default
            }
        }
    }

    /// A duration that must be longer than zero.
    pub(crate) fn positive_duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let d = self.duration(value, key, default);
        if d.is_zero() {
            if let Some(v) = value {
                self.fail(v.span(), key, "must be longer than 0");
            }
            return default;
        }
        d
    }

    fn count_u32(&mut self, value: &Option<Spanned<i64>>, key: &str, default: u32) -> u32 {
        let n = self.count(value, key, default as usize, 1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

pub(super) fn health(c: &mut Checker, cfg: &raw::HealthConfig, key: &str) -> HealthCheck {
    let kind = match cfg.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("http", _)) => {
            let path = match &cfg.path {
                Some(p) if !p.get_ref().starts_with('/') => {
                    c.fail(p.span(), &format!("{key}.path"), "must start with `/`");
                    "/".to_string()
                }
                Some(p) if http::uri::PathAndQuery::try_from(p.get_ref().as_str()).is_err() => {
                    c.fail(p.span(), &format!("{key}.path"), "not a valid path");
                    "/".to_string()
                }
                Some(p) => p.get_ref().clone(),
                None => "/".to_string(),
            };
            let host = cfg.host.as_ref().and_then(|h| {
                HeaderValue::from_str(h.get_ref())
                    .map_err(|_| c.fail(h.span(), &format!("{key}.host"), "not a valid host"))
                    .ok()
            });
            let expect = match &cfg.expect {
                None => vec![StatusRange(200, 399)],
                Some(list) => list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        status_range(s.get_ref())
                            .map_err(|e| c.fail(s.span(), &format!("{key}.expect[{i}]"), e))
                            .ok()
                    })
                    .collect(),
            };
            HealthKind::Http { path, host, expect }
        }
        Some(("tcp", _)) => {
            for (field, present) in [
                ("path", cfg.path.as_ref().map(|p| p.span())),
                ("host", cfg.host.as_ref().map(|h| h.span())),
            ] {
                if let Some(span) = present {
                    c.fail(
                        span,
                        &format!("{key}.{field}"),
                        "only http checks have a path and host",
                    );
                }
            }
            HealthKind::Tcp
        }
        Some((other, span)) => {
            c.fail(
                span,
                &format!("{key}.type"),
                format!("unknown health check type `{other}`; expected http or tcp"),
            );
            HealthKind::Tcp
        }
    };
    let interval = c.positive_duration(
        &cfg.interval,
        &format!("{key}.interval"),
        Duration::from_secs(10),
    );
    let timeout = c.positive_duration(
        &cfg.timeout,
        &format!("{key}.timeout"),
        Duration::from_secs(2),
    );
    if let Some(t) = cfg.timeout.as_ref().filter(|_| timeout > interval) {
        c.fail(
            t.span(),
            &format!("{key}.timeout"),
            "must not be longer than the interval",
        );
    }
    HealthCheck {
        kind,
        interval,
        timeout,
        healthy_threshold: c.count_u32(
            &cfg.healthy_threshold,
            &format!("{key}.healthy_threshold"),
            2,
        ),
        unhealthy_threshold: c.count_u32(
            &cfg.unhealthy_threshold,
            &format!("{key}.unhealthy_threshold"),
            3,
        ),
    }
}

fn status_range(value: &StatusValue) -> Result<StatusRange, String> {
    match value {
        StatusValue::Code(n @ 100..=599) => Ok(StatusRange(*n as u16, *n as u16)),
        StatusValue::Code(n) => Err(format!("invalid status {n}: expected 100 to 599")),
        StatusValue::Text(t) => match t.as_bytes() {
            [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                let base = u16::from(d - b'0') * 100;
                Ok(StatusRange(base, base + 99))
            }
            _ => Err(format!(
                "invalid status `{t}`: expected a code like 200 or a class like \"2xx\""
            )),
        },
    }
}

pub(super) fn outlier(c: &mut Checker, cfg: &raw::OutlierConfig, key: &str) -> Outlier {
    let base_ejection = c.positive_duration(
        &cfg.base_ejection,
        &format!("{key}.base_ejection"),
        Duration::from_secs(30),
    );
    let max_ejection = c.positive_duration(
        &cfg.max_ejection,
        &format!("{key}.max_ejection"),
        Duration::from_secs(300).max(base_ejection),
    );
    if let Some(m) = cfg
        .max_ejection
        .as_ref()
        .filter(|_| max_ejection < base_ejection)
    {
        c.fail(
            m.span(),
            &format!("{key}.max_ejection"),
            "must not be shorter than base_ejection",
        );
    }
    Outlier {
        consecutive_failures: c.count_u32(
            &cfg.consecutive_failures,
            &format!("{key}.consecutive_failures"),
            5,
        ),
        base_ejection,
        max_ejection,
        max_ejected_percent: c.percent(
            &cfg.max_ejected_percent,
            &format!("{key}.max_ejected_percent"),
            50,
        ),
    }
}

pub(super) fn breaker(c: &mut Checker, cfg: &raw::BreakerConfig, key: &str) -> Breaker {
    let failure_percent = cfg
        .failure_percent
        .as_ref()
        .map(|_| c.percent(&cfg.failure_percent, &format!("{key}.failure_percent"), 50));
    if let Some(p) = cfg
        .failure_percent
        .as_ref()
        .filter(|_| failure_percent == Some(0))
    {
        c.fail(
            p.span(),
            &format!("{key}.failure_percent"),
            "must be at least 1",
        );
    }
    Breaker {
        consecutive_failures: c.count_u32(
            &cfg.consecutive_failures,
            &format!("{key}.consecutive_failures"),
            5,
        ),
        failure_percent,
        window: c.positive_duration(
            &cfg.window,
            &format!("{key}.window"),
            Duration::from_secs(10),
        ),
        min_requests: c.count_u32(&cfg.min_requests, &format!("{key}.min_requests"), 20),
        open_for: c.positive_duration(
            &cfg.open_for,
            &format!("{key}.open_for"),
            Duration::from_secs(30),
        ),
        half_open_requests: c.count_u32(
            &cfg.half_open_requests,
            &format!("{key}.half_open_requests"),
            1,
        ),
    }
}

pub(super) fn retries(c: &mut Checker, cfg: &raw::RetriesConfig, key: &str) -> Retries {
    let on = match &cfg.on {
        None => RetryOn::ALL,
        Some(list) => {
            let mut on = RetryOn::default();
            for (i, cond) in list.iter().enumerate() {
                let flag = match cond.get_ref().as_str() {
                    "connect_failure" => &mut on.connect_failure,
                    "refused_stream" => &mut on.refused_stream,
                    "reset" => &mut on.reset,
                    "502" => &mut on.status_502,
                    "503" => &mut on.status_503,
                    "504" => &mut on.status_504,
                    other => {
                        let known = [
                            "connect_failure",
                            "refused_stream",
                            "reset",
                            "502",
                            "503",
                            "504",
                        ];
                        let hint = crate::error::did_you_mean(other, &known)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        c.fail(
                            cond.span(),
                            &format!("{key}.on[{i}]"),
                            format!(
                                "unknown retry condition `{other}`{hint}; expected one of: {}",
                                known.join(", ")
                            ),
                        );
                        continue;
                    }
                };
                *flag = true;
            }
            on
        }
    };
    let backoff = c.duration(
        &cfg.backoff,
        &format!("{key}.backoff"),
        Duration::from_millis(25),
    );
    let max_backoff = c.duration(
        &cfg.max_backoff,
        &format!("{key}.max_backoff"),
        (backoff * 10).max(Duration::from_millis(250)),
    );
    if let Some(m) = cfg.max_backoff.as_ref().filter(|_| max_backoff < backoff) {
        c.fail(
            m.span(),
            &format!("{key}.max_backoff"),
            "must not be shorter than backoff",
        );
    }
    Retries {
        attempts: c.count_u32(&cfg.attempts, &format!("{key}.attempts"), 3),
        on,
        backoff,
        max_backoff,
        budget_percent: c.percent(&cfg.budget_percent, &format!("{key}.budget_percent"), 50),
        min_retries: u32::try_from(c.count(&cfg.min_retries, &format!("{key}.min_retries"), 10, 0))
            .unwrap_or(u32::MAX),
        buffer: c.size(&cfg.buffer, &format!("{key}.buffer"), 64 * 1024),
        all_methods: cfg.all_methods.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_codes() {
        assert_eq!(
            status_range(&StatusValue::Code(204)),
            Ok(StatusRange(204, 204))
        );
        assert_eq!(
            status_range(&StatusValue::Text("2xx".into())),
            Ok(StatusRange(200, 299))
        );
        assert!(status_range(&StatusValue::Text("6xx".into())).is_err());
        assert!(status_range(&StatusValue::Text("20x".into())).is_err());
        assert!(status_range(&StatusValue::Code(99)).is_err());
    }
}
