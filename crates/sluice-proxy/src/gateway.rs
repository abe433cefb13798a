//! The gateway's shared state: the current configuration snapshot (swapped atomically),
//! the metrics registry, the outcome of the last reload, and the lifecycle flags the
//! admin listener reports.

use crate::cluster::Cluster;
use crate::listener::tls::TlsState;
use crate::metrics::{Metrics, ReloadLabels, ReloadResult, RouteSeries, TargetCollector};
use crate::pipeline::Pipelines;
use crate::protocol::{http_builder, Http};
use crate::router::Router;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use sluice_config::{Config, ConfigErrors};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// One immutable configuration, ready for the data path. Requests hold the snapshot they
/// started with until they end.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub clusters: Vec<Arc<Cluster>>,
    /// Each route's middleware.
    pub pipelines: Pipelines,
    /// The TLS listeners' acceptor and certificates, with `[server.tls]`.
    pub tls: Option<Arc<TlsState>>,
    /// Each route's request series (its name as their label), by route index.
    pub route_series: Vec<Arc<RouteSeries>>,
    /// Requests in flight per route (by route index), for routes' `max_requests`.
    pub route_active: Vec<Arc<AtomicUsize>>,
    /// HTTP server settings for connections accepted while this snapshot is current.
    pub http: Arc<Http>,
    pub generation: u64,
}

impl Snapshot {
    /// Builds the runtime form of a validated configuration. Targets that `previous`
    /// already runs unchanged are carried over with their pooled connections and their
    /// health, outlier and breaker state.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let router = Router::build(&config).map_err(ConfigErrors)?;
        let tls = match &config.server.tls {
            None => None,
            // Unchanged settings keep the certificates as loaded (or reloaded) so far.
            Some(t) => match previous
                .and_then(|p| p.tls.as_ref())
                .filter(|old| old.config == *t)
            {
                Some(old) => Some(Arc::clone(old)),
                None => Some(Arc::new(
                    TlsState::build(t, &config.source).map_err(ConfigErrors)?,
                )),
            },
        };
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let old = previous.and_then(|p| p.clusters.iter().find(|o| *o.name == *c.name));
                let tls = crate::upstream::tls::client_config(c, &config.source)
                    .map_err(ConfigErrors::single)?;
                Ok(Arc::new(Cluster::new(c, old.map(|o| o.as_ref()), tls)))
            })
            .collect::<Result<_, ConfigErrors>>()?;
        let pipelines = Pipelines::build(&config, previous.map(|p| &p.pipelines))?;
        let route_series = config
            .routes
            .iter()
            .map(|r| Arc::new(RouteSeries::new(Arc::new(r.name.clone()))))
            .collect();
        Ok(Snapshot {
            route_active: config
                .routes
                .iter()
                .map(|_| Arc::new(AtomicUsize::new(0)))
                .collect(),
            http: Arc::new(http_builder(&config.server.limits)),
            config,
            router,
            clusters,
            pipelines,
            tls,
            route_series,
            generation,
        })
    }
}

/// The outcome of configuration reloads, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When the last reload was attempted.
    pub last_attempt: Option<SystemTime>,
    /// Why the last reload was rejected; `None` once a reload applied.
    pub last_error: Option<String>,
    pub applied: u64,
    pub rejected: u64,
}

/// State shared by the listeners, the data path and the admin listener.
#[derive(Debug)]
pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    generation: AtomicU64,
    ready: AtomicBool,
    draining: AtomicBool,
    reload: Mutex<ReloadStatus>,
    pub started: Instant,
}

impl Gateway {
    /// Builds the gateway around its first configuration.
    pub fn new(config: Config) -> Result<Arc<Gateway>, ConfigErrors> {
        let snapshot = Snapshot::build(config, 1, None)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.generation.set(1);
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        registry
            .sub_registry_with_prefix("sluice")
            .register_collector(Box::new(TargetCollector(Arc::clone(&snapshot))));
        Ok(Arc::new(Gateway {
            snapshot,
            metrics,
            registry,
            generation: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            reload: Mutex::new(ReloadStatus::default()),
            started: Instant::now(),
        }))
    }

    /// Swaps in a new configuration: new requests use it, requests in flight finish on
    /// the one they started with. Returns the new generation. On error nothing changes
    /// and the error is recorded for `/health`.
    pub fn apply(&self, config: Config) -> Result<u64, ConfigErrors> {
        let current = self.snapshot();
        let generation = self.generation() + 1;
        match Snapshot::build(config, generation, Some(&current)) {
            Ok(snapshot) => {
                self.snapshot.store(Arc::new(snapshot));
                self.generation.store(generation, Ordering::Relaxed);
                self.metrics.generation.set(generation as i64);
                self.record_reload(None);
                Ok(generation)
            }
            Err(errors) => {
                self.record_reload(Some(errors.to_string()));
                Err(errors)
            }
        }
    }

    /// Records a reload's outcome: `None` when it applied, the reason when it did not.
    pub fn record_reload(&self, error: Option<String>) {
        let result = if error.is_some() {
            ReloadResult::rejected
        } else {
            ReloadResult::applied
        };
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        let mut status = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        status.last_attempt = Some(SystemTime::now());
        if error.is_some() {
            status.rejected += 1;
        } else {
            status.applied += 1;
        }
        status.last_error = error;
    }

    /// The outcome of reloads so far.
    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts the active health checks of targets that do not run them yet; called once
    /// the runtime runs, and after every reload.
    pub fn start_health_checks(&self) {
        for cluster in &self.snapshot().clusters {
            cluster.start_health_checks();
        }
    }

    /// Starts the JWKS refreshes of jwt middleware that do not run them yet; called once
    /// the runtime runs, and after every reload. A refresh ends when its key set is no
    /// longer used (its block changed or went away) or the runtime stops.
    pub fn start_key_refresh(&self) {
        self.snapshot().pipelines.start_background();
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
