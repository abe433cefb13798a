//! The Sluice data path, in request order: listener -> protocol -> router -> lifecycle
//! (the request's whole life in one function) -> cluster (balancer) -> upstream.

pub mod access_log;
pub mod body;
pub mod cluster;
pub mod counted;
pub mod forward;
pub mod gateway;
pub mod http1;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod middleware;
pub mod pipeline;
pub mod protocol;
pub mod reload;
pub mod rescue;
pub mod router;
mod serve;
pub mod upstream;

pub use gateway::{Gateway, Snapshot};
pub use listener::{ListenKey, Listeners};
pub use reload::{Reloader, Trigger};
pub use serve::{serve, Control, Handoff, Stop};
