//! The exact error lines and defaults for a cluster's resilience settings: health
//! checks, outlier detection, the breaker, and the caps beside them.

mod common;

use common::{config, errors};

#[test]
fn resilience_settings_are_checked_with_their_keys() {
    let src = r#"[clusters.app]
targets = ["http://127.0.0.1:9000"]
panic_threshold = 150
max_pending = 3

[clusters.app.health]
type = "grpc"
interval = "0s"

[clusters.app.outlier]
base_ejection = "1m"
max_ejection = "10s"
max_ejected_percent = -1

[clusters.app.breaker]
failure_percent = 0
half_open_requests = 0
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:3:19: clusters.app.panic_threshold: must be a percentage from 0 to 100",
            "test.toml:4:15: clusters.app.max_pending: max_pending needs max_requests",
            "test.toml:7:8: clusters.app.health.type: unknown health check type `grpc`; expected http or tcp",
            "test.toml:8:12: clusters.app.health.interval: must be longer than 0",
            "test.toml:12:16: clusters.app.outlier.max_ejection: must not be shorter than base_ejection",
            "test.toml:13:23: clusters.app.outlier.max_ejected_percent: must be a percentage from 0 to 100",
            "test.toml:16:19: clusters.app.breaker.failure_percent: must be at least 1",
            "test.toml:17:22: clusters.app.breaker.half_open_requests: must be a whole number of at least 1",
        ]
    );
}

#[test]
fn health_check_timeout_and_tcp_fields() {
    let src = r#"[clusters.app]
targets = ["http://127.0.0.1:9000"]

[clusters.app.health]
type = "tcp"
path = "/healthz"
interval = "1s"
timeout = "2s"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:6:8: clusters.app.health.path: only http checks have a path and host",
            "test.toml:8:11: clusters.app.health.timeout: must not be longer than the interval",
        ]
    );
    let src = r#"[clusters.app]
targets = ["http://127.0.0.1:9000"]
[clusters.app.health]
tipe = "tcp"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:4:1: clusters.app.health.tipe: unknown key `tipe` (did you mean `type`?)"]
    );
    let src = r#"[clusters.app]
targets = ["http://127.0.0.1:9000"]
[clusters.app.health]
expect = [200, "6xx", 99]
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:4:16: clusters.app.health.expect[1]: invalid status `6xx`: expected a code like 200 or a class like \"2xx\"",
            "test.toml:4:23: clusters.app.health.expect[2]: invalid status 99: expected 100 to 599",
        ]
    );
}

#[test]
fn resilience_defaults() {
    let c = config(
        r#"[clusters.app]
targets = ["http://127.0.0.1:9000"]
max_requests = 100
[clusters.app.health]
[clusters.app.outlier]
[clusters.app.breaker]
"#,
    );
    let cluster = &c.clusters[0];
    assert_eq!(cluster.max_requests, Some(100));
    assert_eq!(cluster.max_pending, 0);
    let health = cluster.health.as_ref().expect("health");
    assert_eq!(health.interval, std::time::Duration::from_secs(10));
    assert_eq!(
        (health.healthy_threshold, health.unhealthy_threshold),
        (2, 3)
    );
    assert!(matches!(
        &health.kind,
        sluice_config::HealthKind::Http { path, expect, .. }
            if path == "/" && expect == &[sluice_config::StatusRange(200, 399)]
    ));
    let outlier = cluster.outlier.as_ref().expect("outlier");
    assert_eq!(outlier.consecutive_failures, 5);
    assert_eq!(outlier.max_ejected_percent, 50);
    let breaker = cluster.breaker.as_ref().expect("breaker");
    assert_eq!(breaker.failure_percent, None);
    assert_eq!(breaker.open_for, std::time::Duration::from_secs(30));
}
