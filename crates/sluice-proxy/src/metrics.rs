//! The data path's Prometheus metrics, recorded where requests and connections end and
//! served by the admin listener from one registry.

use crate::cluster::{Cluster, TargetState};
use crate::gateway::Snapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<String>,
    pub method: MethodLabel,
    pub status: StatusClass,
}

/// Labels of a per-route series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<String>,
}

/// Labels of a per-middleware series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MiddlewareLabels {
    pub middleware: Arc<str>,
}

/// The request method, folded to the common ones so that clients cannot grow the series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    OTHER,
}

impl From<&http::Method> for MethodLabel {
    fn from(m: &http::Method) -> Self {
        match *m {
            http::Method::GET => MethodLabel::GET,
            http::Method::HEAD => MethodLabel::HEAD,
            http::Method::POST => MethodLabel::POST,
            http::Method::PUT => MethodLabel::PUT,
            http::Method::PATCH => MethodLabel::PATCH,
            http::Method::DELETE => MethodLabel::DELETE,
            http::Method::OPTIONS => MethodLabel::OPTIONS,
            _ => MethodLabel::OTHER,
        }
    }
}

/// `1xx` to `5xx`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        })
    }
}

impl From<http::StatusCode> for StatusClass {
    fn from(s: http::StatusCode) -> Self {
        match s.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

/// How a configuration reload ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    applied,
    rejected,
}

/// Every metric the data path records.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub active_connections: Gauge,
    pub active_requests: Gauge,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub retries: Family<RouteLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub generation: Gauge,
    pub rate_limit_store_errors: Family<MiddlewareLabels, Counter>,
    /// The series of requests no route matched.
    pub unmatched: Arc<RouteSeries>,
}

const METHODS: usize = 8;
const CLASSES: usize = 5;
const _: () = assert!(
    MethodLabel::OTHER as usize + 1 == METHODS && StatusClass::ServerError as usize + 1 == CLASSES
);

/// One route's request series, looked up in their families on first use and then only
/// counted: no label hashing or family lock per request.
#[derive(Debug)]
pub struct RouteSeries {
    pub label: Arc<String>,
    /// By method and status class; allocated when the route first answers.
    requests: OnceLock<Box<[OnceLock<Counter>; METHODS * CLASSES]>>,
    duration: OnceLock<Histogram>,
}

impl RouteSeries {
    pub fn new(label: Arc<String>) -> Self {
        RouteSeries {
            label,
            requests: OnceLock::new(),
            duration: OnceLock::new(),
        }
    }

    /// Counts one finished request and its duration.
    pub fn record(&self, metrics: &Metrics, method: MethodLabel, status: StatusClass, secs: f64) {
        let cells = self
            .requests
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        cells[method as usize * CLASSES + status as usize]
            .get_or_init(|| {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: Arc::clone(&self.label),
                        method,
                        status,
                    })
                    .clone()
            })
            .inc();
        self.duration
            .get_or_init(|| {
                metrics
                    .duration
                    .get_or_create(&RouteLabels {
                        route: Arc::clone(&self.label),
                    })
                    .clone()
            })
            .observe(secs);
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Metrics> {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            active_connections: Gauge::default(),
            active_requests: Gauge::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            retries: Family::default(),
            reloads: Family::default(),
            generation: Gauge::default(),
            rate_limit_store_errors: Family::default(),
            unmatched: Arc::new(RouteSeries::new(Arc::new("unmatched".to_string()))),
        };
        let r = registry.sub_registry_with_prefix("sluice");
        r.register(
            "requests",
            "Requests answered, by route, method and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to the end of the response, by route",
            m.duration.clone(),
        );
        r.register(
            "active_connections",
            "Client connections open now",
            m.active_connections.clone(),
        );
        r.register(
            "active_requests",
            "Requests in flight now",
            m.active_requests.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes read from clients",
            m.bytes_received.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes written to clients",
            m.bytes_sent.clone(),
        );
        r.register(
            "retries",
            "Requests sent again to another target, by route",
            m.retries.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads, by result (applied or rejected)",
            m.reloads.clone(),
        );
        r.register(
            "config_generation",
            "The configuration generation serving new requests",
            m.generation.clone(),
        );
        r.register(
            "rate_limit_store_errors",
            "Rate-limit store calls that failed or timed out, by middleware",
            m.rate_limit_store_errors.clone(),
        );
        Arc::new(m)
    }
}

/// Reads the targets of the current snapshot at scrape time: health, ejections, circuit
/// state and requests in flight, so the data path records nothing for them.
#[derive(Debug)]
pub struct TargetCollector(pub Arc<arc_swap::ArcSwap<Snapshot>>);

impl Collector for TargetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::cluster::breaker::CircuitState;
        let snapshot = self.0.load();
        let now = tokio::time::Instant::now();
        per_target(
            &mut encoder,
            &snapshot,
            (
                "target_healthy",
                "1 when the target passes its health checks and is not ejected",
            ),
            MetricType::Gauge,
            |t| Some(ConstGauge::new(i64::from(t.is_healthy(now)))),
        )?;
        per_target(
            &mut encoder,
            &snapshot,
            ("target_active_requests", "Requests in flight to the target"),
            MetricType::Gauge,
            |t| {
                Some(ConstGauge::new(
                    i64::try_from(t.active()).unwrap_or(i64::MAX),
                ))
            },
        )?;
        per_target(
            &mut encoder,
            &snapshot,
            (
                "target_ejections",
                "Times outlier detection ejected the target",
            ),
            MetricType::Counter,
            |t| t.ejector.as_ref().map(|e| ConstCounter::new(e.ejections())),
        )?;
        let mut family = encoder.encode_descriptor(
            "target_circuit_state",
            "The target's circuit breaker state: 1 for the current one",
            None,
            MetricType::Gauge,
        )?;
        for (c, t) in targets(&snapshot).filter(|(_, t)| t.breaker.is_some()) {
            let current = t.circuit(now);
            for state in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                let labels = [
                    ("cluster", &*c.name),
                    ("target", &*t.name),
                    ("state", state.as_str()),
                ];
                ConstGauge::new(i64::from(current == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Every target of the snapshot, with its cluster.
fn targets(snapshot: &Snapshot) -> impl Iterator<Item = (&Cluster, &TargetState)> {
    snapshot
        .clusters
        .iter()
        .flat_map(|c| c.targets.iter().map(move |t| (&**c, &**t)))
}

/// One metric family with a series per target, labelled by cluster and target, for the
/// targets `value` gives a value for.
fn per_target<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    snapshot: &Snapshot,
    (name, help): (&str, &str),
    kind: MetricType,
    value: impl Fn(&TargetState) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (c, t) in targets(snapshot) {
        if let Some(metric) = value(t) {
            let labels = [("cluster", &*c.name), ("target", &*t.name)];
            metric.encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}
