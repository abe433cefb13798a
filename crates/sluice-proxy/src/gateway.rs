//! The gateway's shared state: the current configuration snapshot (swapped atomically),
//! the metrics registry, and the lifecycle flags the admin listener reports.

use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::router::Router;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use sluice_config::{Config, ConfigErrors};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One immutable configuration, ready for the data path. Requests hold the snapshot they
/// started with until they end.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub clusters: Vec<Arc<Cluster>>,
    /// Route names as metric labels, by route index.
    pub route_labels: Vec<Arc<String>>,
    pub generation: u64,
}

impl Snapshot {
    /// Builds the runtime form of a validated configuration.
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, ConfigErrors> {
        let router = Router::build(&config).map_err(ConfigErrors)?;
        let clusters = config
            .clusters
            .iter()
            .map(|c| Arc::new(Cluster::new(c)))
            .collect();
        let route_labels = config
            .routes
            .iter()
            .map(|r| Arc::new(r.name.clone()))
            .collect();
        Ok(Snapshot {
            config,
            router,
            clusters,
            route_labels,
            generation,
        })
    }
}

/// State shared by the listeners, the data path and the admin listener.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    generation: AtomicU64,
    ready: AtomicBool,
    draining: AtomicBool,
    pub started: Instant,
}

impl Gateway {
    /// Builds the gateway around its first configuration.
    pub fn new(config: Config) -> Result<Arc<Gateway>, ConfigErrors> {
        let snapshot = Snapshot::build(config, 1)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Ok(Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            registry,
            generation: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            started: Instant::now(),
        }))
    }

    /// The configuration new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The configuration generation: 1 for the first, one more per applied reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Marks the gateway ready (listeners bound, configuration loaded).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Marks the gateway draining: `/ready` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether load balancers should send traffic here.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
