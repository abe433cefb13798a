//! Sluice's integration tests: the real `sluice` binary against origins written here.

mod harness;
mod smoke;

mod balancing;
mod proxying;
mod routing;

mod cli;
mod cors_browser;
mod curl;
mod errors;
mod h2_hardening;
mod hardening;
mod http1;
mod http1_targets;
mod idp;
mod jwt;
mod lifecycle;
mod middleware;
mod overload;
mod pool;
mod redis;
mod reload;
mod resilience;
mod retries;
mod tls;
mod upgrade;
mod upstream_tls;
