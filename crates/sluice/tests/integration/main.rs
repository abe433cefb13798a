//! Sluice's integration tests: the real `sluice` binary against origins written here.

mod harness;
mod smoke;

mod balancing;
mod proxying;
mod routing;

mod cli;
mod errors;
mod hardening;
mod lifecycle;
