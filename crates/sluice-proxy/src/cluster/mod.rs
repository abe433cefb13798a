//! A cluster at run time: its targets (each with a pooled upstream client, a count of
//! requests in flight, and its health, ejection and circuit state), the cap on its
//! concurrent requests, and the policy that picks one target per request.

pub mod balance;
pub mod breaker;
pub mod health;
pub mod outlier;
pub(crate) mod sticky;

use crate::counted::Counted;
use crate::rescue::ProxyError;
use crate::upstream::headers::Forwarding;
use crate::upstream::UpstreamClient;
use balance::{Balancer, HashRing, PickInput, SmoothWeighted};
use breaker::{Admission, CircuitBreaker, CircuitState, Transition};
use health::ActiveHealth;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue};
use outlier::Ejector;
use sluice_config::{
    Balance, Breaker, Cluster as ClusterConfig, HashKey, HealthCheck, Outlier, Target,
    TargetAddress, UpstreamTls,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// What makes a target the same across a reload: its URL and weight, and the cluster
/// settings its client and state depend on. An equal key keeps the running state.
#[derive(Debug, PartialEq)]
struct TargetKey {
    target: Target,
    http2: bool,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle: usize,
    sticky_cookie: Option<String>,
    health: Option<HealthCheck>,
    outlier: Option<Outlier>,
    breaker: Option<Breaker>,
    tls: Option<UpstreamTls>,
}

impl TargetKey {
    fn new(target: &Target, config: &ClusterConfig) -> TargetKey {
        TargetKey {
            target: target.clone(),
            http2: config.http2,
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle: config.pool_max_idle,
            sticky_cookie: (config.balance == Balance::Sticky)
                .then(|| config.sticky_cookie.clone()),
            health: config.health.clone(),
            outlier: config.outlier.clone(),
            breaker: config.breaker.clone(),
            tls: config.tls.clone(),
        }
    }
}

/// One target of a cluster.
#[derive(Debug)]
pub struct TargetState {
    pub target: Target,
    /// The URL as written, shared with access-log records.
    pub name: Arc<str>,
    /// The URI authority of requests in this target's pool.
    pub authority: Authority,
    /// `Host` sent when the cluster does not preserve the client's.
    pub host_header: HeaderValue,
    /// Stable identity used in sticky cookies: a hash of the URL, in hex.
    pub sticky_id: String,
    /// On a sticky cluster, the `Set-Cookie` that pins a client here, built once.
    set_sticky: Option<HeaderValue>,
    pub client: UpstreamClient,
    active: AtomicUsize,
    pub health: Option<ActiveHealth>,
    pub ejector: Option<Ejector>,
    pub breaker: Option<CircuitBreaker>,
    key: TargetKey,
}

impl TargetState {
    fn new(
        t: &Target,
        config: &ClusterConfig,
        key: TargetKey,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> TargetState {
        let host = match &t.address {
            TargetAddress::Tcp { authority, .. } | TargetAddress::Https { authority, .. } => {
                authority.as_str()
            }
            TargetAddress::Unix(_) => "localhost",
        };
        let sticky_id = format!("{:016x}", balance::stable_hash(t.url.as_bytes()));
        let set_sticky = (config.balance == Balance::Sticky)
            .then(|| {
                HeaderValue::try_from(sticky::set_cookie(&config.sticky_cookie, &sticky_id)).ok()
            })
            .flatten();
        TargetState {
            name: Arc::from(t.url.as_str()),
            authority: Authority::try_from(host).unwrap_or(Authority::from_static("localhost")),
            host_header: HeaderValue::try_from(host)
                .unwrap_or(HeaderValue::from_static("localhost")),
            sticky_id,
            set_sticky,
            client: UpstreamClient::new(t, config, tls),
            target: t.clone(),
            active: AtomicUsize::new(0),
            health: config.health.clone().map(ActiveHealth::new),
            ejector: config.outlier.clone().map(Ejector::new),
            breaker: config.breaker.clone().map(CircuitBreaker::new),
            key,
        }
    }

    /// Requests to this target in flight now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Passing its health checks and not ejected.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.health.as_ref().is_none_or(ActiveHealth::is_healthy)
            && !self.ejector.as_ref().is_some_and(|e| e.is_ejected(now))
    }

    /// The circuit's state; closed when the cluster has no breaker.
    pub fn circuit(&self, now: Instant) -> CircuitState {
        self.breaker
            .as_ref()
            .map_or(CircuitState::Closed, |b| b.state(now))
    }

    fn circuit_admits(&self, now: Instant) -> bool {
        self.breaker.as_ref().is_none_or(|b| b.would_admit(now))
    }
}

/// What happened to one request sent to a target, as health tracking sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered with a status below 500.
    Success,
    /// Connect failure, reset, timeout or a 5xx answer.
    Failure,
}

/// A request in flight to a target: counts it for `least_conn` and `/health` until
/// dropped, and carries the circuit admission its outcome is recorded against.
#[derive(Debug)]
pub struct InFlight {
    target: Arc<TargetState>,
    admission: Option<Admission>,
}

impl InFlight {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.active.fetch_sub(1, Ordering::Relaxed);
        if let (Some(admission), Some(breaker)) = (self.admission.take(), &self.target.breaker) {
            breaker.cancel(admission);
        }
    }
}

/// The cap on a cluster's concurrent requests, and on those waiting for a slot.
#[derive(Debug)]
struct Slots {
    max: usize,
    semaphore: Arc<Semaphore>,
    max_pending: usize,
    pending: Arc<AtomicUsize>,
}

/// A named set of targets and how to pick among them.
#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub targets: Vec<Arc<TargetState>>,
    pub preserve_host: bool,
    pub http2: bool,
    balancer: Balancer,
    hash_key: Option<HashKey>,
    sticky_cookie: Option<String>,
    panic_threshold: u8,
    max_ejected_percent: u8,
    slots: Option<Slots>,
    /// Retries in flight now, for the retry budget.
    retries_active: Arc<AtomicUsize>,
    /// Requests in back-off between two tries, for the retry budget.
    between_tries: Arc<AtomicUsize>,
}

/// What balancing may read of a request: sticky cookies and hash keys.
#[derive(Debug, Clone, Copy)]
pub struct Balanced<'a> {
    pub headers: &'a HeaderMap,
    /// The gateway's forwarding headers: a `header:` hash key reads the value the
    /// target gets, these before the client's.
    pub forwarding: Option<&'a Forwarding>,
    pub query: Option<&'a str>,
    /// The normalised path.
    pub path: &'a str,
    pub client_ip: Option<IpAddr>,
}

/// The target picked for a request, and a cookie to set when the pick pins a client.
#[derive(Debug)]
pub struct Pick {
    pub in_flight: InFlight,
    pub set_cookie: Option<HeaderValue>,
}

impl Cluster {
    /// Builds a cluster; targets `previous` runs with an equal [`TargetKey`] are reused.
    /// `tls`: the client settings for `https://` targets.
    pub fn new(
        config: &ClusterConfig,
        previous: Option<&Cluster>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Cluster {
        let targets: Vec<Arc<TargetState>> = config
            .targets
            .iter()
            .map(|t| {
                let key = TargetKey::new(t, config);
                match previous.and_then(|p| p.targets.iter().find(|o| o.key == key)) {
                    Some(old) => Arc::clone(old),
                    None => Arc::new(TargetState::new(t, config, key, tls.as_ref())),
                }
            })
            .collect();
        let weights: Vec<u32> = config.targets.iter().map(|t| t.weight).collect();
        let (balancer, hash_key) = match &config.balance {
            Balance::RoundRobin | Balance::Sticky => {
                (Balancer::RoundRobin(AtomicUsize::new(0)), None)
            }
            Balance::Random => (Balancer::Random, None),
            Balance::LeastConn => (Balancer::LeastConn(AtomicUsize::new(0)), None),
            Balance::Weighted => (Balancer::Weighted(SmoothWeighted::new(&weights)), None),
            Balance::Hash(key) => {
                let ring = HashRing::new(config.targets.iter().map(|t| (t.url.as_str(), t.weight)));
                (Balancer::Hash(ring, AtomicUsize::new(0)), Some(key.clone()))
            }
        };
        let sticky_cookie =
            (config.balance == Balance::Sticky).then(|| config.sticky_cookie.clone());
        // A cluster kept by a reload keeps its slots and waiters, so requests in flight
        // and waiting stay counted.
        let kept = previous
            .and_then(|p| p.slots.as_ref())
            .filter(|s| Some(s.max) == config.max_requests);
        let slots = config.max_requests.map(|max| Slots {
            max,
            semaphore: kept.map_or_else(
                || Arc::new(Semaphore::new(max)),
                |s| Arc::clone(&s.semaphore),
            ),
            max_pending: config.max_pending,
            pending: kept.map_or_else(Arc::default, |s| Arc::clone(&s.pending)),
        });
        Cluster {
            name: Arc::from(config.name.as_str()),
            targets,
            preserve_host: config.preserve_host,
            http2: config.http2,
            balancer,
            hash_key,
            sticky_cookie,
            panic_threshold: config.panic_threshold,
            max_ejected_percent: config.outlier.as_ref().map_or(0, |o| o.max_ejected_percent),
            slots,
            retries_active: Arc::default(),
            between_tries: Arc::default(),
        }
    }

    /// Counts a request as live while it waits for its next try (at no target).
    pub fn between_tries(&self) -> Option<Counted> {
        Counted::take(&self.between_tries, usize::MAX)
    }

    /// Admits one more retry if the budget allows: retries in flight stay under
    /// `budget_percent` of the cluster's live requests, or `min_retries`. Live requests
    /// are those at a target and those between two tries: when a target dies, the
    /// requests it failed are still the clients' requests in flight.
    pub fn try_retry(&self, budget_percent: u8, min_retries: u32) -> Option<Counted> {
        let at_targets: usize = self.targets.iter().map(|t| t.active()).sum();
        let live = at_targets + self.between_tries.load(Ordering::Relaxed);
        let budget = (live * usize::from(budget_percent) / 100).max(min_retries as usize);
        Counted::take(&self.retries_active, budget)
    }

    /// Starts the active health checks of targets that do not run them yet.
    pub fn start_health_checks(&self) {
        for target in &self.targets {
            health::start(target, Arc::clone(&self.name));
        }
    }

    /// Takes one of the cluster's request slots, waiting up to `wait` when they are all
    /// taken and fewer than `max_pending` requests already wait. `None`: no cap.
    pub async fn acquire_slot(
        &self,
        wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(permit) = Arc::clone(&slots.semaphore).try_acquire_owned() {
            return Ok(Some(permit));
        }
        let overloaded = || ProxyError::ClusterOverloaded {
            cluster: self.name.to_string(),
        };
        let waiting = Counted::take(&slots.pending, slots.max_pending).ok_or_else(overloaded)?;
        let acquired = Box::pin(tokio::time::timeout(
            wait,
            Arc::clone(&slots.semaphore).acquire_owned(),
        ))
        .await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(overloaded()),
        }
    }

    /// Picks the target for `request`. Targets in `tried` (indexes) are skipped, so a
    /// retry goes elsewhere. `now` is the try's start, read once for the whole try.
    pub fn pick(
        &self,
        request: &Balanced<'_>,
        tried: &[usize],
        now: Instant,
    ) -> Result<(usize, Pick), ProxyError> {
        let Balanced {
            headers,
            forwarding,
            query,
            path,
            client_ip,
        } = *request;
        // Panic mode: when too few targets are healthy, health is ignored.
        let panic = self.panic_threshold > 0 && {
            let healthy = self.targets.iter().filter(|t| t.is_healthy(now)).count();
            healthy * 100 < usize::from(self.panic_threshold) * self.targets.len()
        };
        let usable = |i: usize| {
            let t = &self.targets[i];
            !tried.contains(&i) && (panic || t.is_healthy(now)) && t.circuit_admits(now)
        };
        if let Some(cookie) = &self.sticky_cookie {
            if let Some(index) = sticky::cookie(headers, cookie)
                .and_then(|id| self.targets.iter().position(|t| t.sticky_id == id))
                .filter(|&i| usable(i))
            {
                if let Some(in_flight) = self.admit(index, now) {
                    let pick = Pick {
                        in_flight,
                        set_cookie: None,
                    };
                    return Ok((index, pick));
                }
            }
        }
        let ip_text;
        let key: Option<&[u8]> = match &self.hash_key {
            None => None,
            Some(HashKey::Header(name)) => forwarding
                .and_then(|f| f.get(name))
                .unwrap_or_else(|| headers.get(name))
                .map(HeaderValue::as_bytes),
            Some(HashKey::Cookie(name)) => sticky::cookie(headers, name).map(str::as_bytes),
            Some(HashKey::Query(name)) => query_param(query, name).map(str::as_bytes),
            Some(HashKey::Path) => Some(path.as_bytes()),
            Some(HashKey::Ip) => {
                ip_text = client_ip.map(|ip| ip.to_string());
                ip_text.as_deref().map(str::as_bytes)
            }
        };
        let active = |i: usize| self.targets[i].active();
        let input = PickInput {
            hash_key: key,
            active: &active,
            usable: &usable,
        };
        // A half-open circuit can hand its last probe slot to another request between
        // the check and the admission: then pick again.
        for _ in 0..3 {
            let Some(index) = self.balancer.pick(self.targets.len(), &input) else {
                break;
            };
            if let Some(in_flight) = self.admit(index, now) {
                let set_cookie = self.targets[index].set_sticky.clone();
                return Ok((
                    index,
                    Pick {
                        in_flight,
                        set_cookie,
                    },
                ));
            }
        }
        Err(self.unavailable(now, tried))
    }

    /// Counts a request in flight to target `index`, through its circuit.
    fn admit(&self, index: usize, now: Instant) -> Option<InFlight> {
        let target = &self.targets[index];
        let admission = match &target.breaker {
            Some(b) => Some(b.admit(now)?),
            None => None,
        };
        target.active.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            target: Arc::clone(target),
            admission,
        })
    }

    /// Why no target could take a request.
    fn unavailable(&self, now: Instant, tried: &[usize]) -> ProxyError {
        let cluster = self.name.to_string();
        let open = self
            .targets
            .iter()
            .enumerate()
            .any(|(i, t)| !tried.contains(&i) && t.is_healthy(now) && !t.circuit_admits(now));
        if open {
            ProxyError::CircuitOpen { cluster }
        } else {
            ProxyError::NoHealthyTarget { cluster }
        }
    }

    /// Records how a request to a target went: feeds outlier detection and the circuit
    /// breaker, and logs ejections and circuit changes.
    pub fn record(&self, in_flight: &mut InFlight, outcome: Outcome) {
        let admission = in_flight.admission.take();
        let target = &in_flight.target;
        if target.ejector.is_none() && target.breaker.is_none() {
            return;
        }
        let now = Instant::now();
        let failed = outcome == Outcome::Failure;
        if let Some(ejector) = &target.ejector {
            let may_eject = || {
                let ejected = self
                    .targets
                    .iter()
                    .filter(|t| t.ejector.as_ref().is_some_and(|e| e.is_ejected(now)))
                    .count();
                let cap = (self.targets.len() * usize::from(self.max_ejected_percent) / 100)
                    .max(usize::from(self.max_ejected_percent > 0));
                ejected < cap
            };
            if let Some(length) = ejector.record(failed, now, may_eject) {
                tracing::warn!(cluster = %self.name, target = %target.name, ejected_for = ?length, "target ejected after consecutive failures");
            }
        }
        if let (Some(admission), Some(breaker)) = (admission, &target.breaker) {
            match breaker.record(admission, failed, now) {
                Some(Transition::Opened) => {
                    tracing::warn!(cluster = %self.name, target = %target.name, "circuit opened")
                }
                Some(Transition::Closed) => {
                    tracing::info!(cluster = %self.name, target = %target.name, "circuit closed")
                }
                None => {}
            }
        }
    }
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::{query_param, Balanced, Cluster, Counted, Forwarding, InFlight};
    use http::{HeaderMap, HeaderValue};

    fn hash_cluster(key: &str) -> Cluster {
        let src = format!("[clusters.c]\ntargets = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\", \"http://127.0.0.1:3\"]\nbalance = \"hash\"\nhash_key = \"{key}\"\n");
        let config = sluice_config::parse(&src, "t.toml").expect("valid config");
        Cluster::new(&config.clusters[0], None, None)
    }

    fn pick(cluster: &Cluster, uri: &str) -> usize {
        let (parts, _) = http::Request::get(uri)
            .body(())
            .expect("request")
            .into_parts();
        let path = crate::router::path::normalize(parts.uri.path()).expect("a valid path");
        let request = Balanced {
            headers: &parts.headers,
            forwarding: None,
            query: parts.uri.query(),
            path: &path,
            client_ip: None,
        };
        cluster
            .pick(&request, &[], tokio::time::Instant::now())
            .expect("a target")
            .0
    }

    #[test]
    fn path_hash_uses_the_normalised_path() {
        let cluster = hash_cluster("path");
        for k in 0..50 {
            let plain = pick(&cluster, &format!("/items/{k}"));
            assert_eq!(pick(&cluster, &format!("/x/../items/./{k}?q=1")), plain);
            assert_eq!(pick(&cluster, &format!("//items//{k}")), plain);
        }
    }

    #[test]
    fn header_hash_reads_the_value_the_target_gets() {
        let cluster = hash_cluster("header:x-request-id");
        let index = |headers: &HeaderMap, forwarding: Option<&Forwarding>| {
            let request = Balanced {
                headers,
                forwarding,
                query: None,
                path: "/",
                client_ip: None,
            };
            let picked = cluster.pick(&request, &[], tokio::time::Instant::now());
            picked.expect("a target").0
        };
        let mut targets = std::collections::HashSet::new();
        for k in 0..50 {
            let id = HeaderValue::try_from(format!("id-{k}")).expect("a header value");
            let mut sent = HeaderMap::new();
            sent.insert("x-request-id", id.clone());
            // The client's own id is replaced by the gateway's: the gateway's counts.
            let mut spoofed = HeaderMap::new();
            spoofed.insert("x-request-id", HeaderValue::from_static("spoofed"));
            let forwarding = Forwarding::new(&spoofed, None, "http", None, id);
            let chosen = index(&sent, None);
            assert_eq!(index(&spoofed, Some(&forwarding)), chosen);
            targets.insert(chosen);
        }
        assert!(targets.len() > 1, "50 ids all hashed to one target");
    }

    #[test]
    fn finds_query_params() {
        assert_eq!(query_param(Some("a=1&user=bob&c"), "user"), Some("bob"));
        assert_eq!(query_param(Some("a=1&c"), "c"), Some(""));
        assert_eq!(query_param(Some("a=1"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }

    #[test]
    fn the_retry_budget_is_a_share_of_requests_in_flight() {
        let src = "[clusters.c]\ntargets = [\"http://127.0.0.1:1\"]\n";
        let config = sluice_config::parse(src, "t.toml").expect("valid config");
        let cluster = Cluster::new(&config.clusters[0], None, None);
        // Nothing in flight: `min_retries` still allows some.
        let first = cluster.try_retry(50, 2).expect("first retry");
        let second = cluster.try_retry(50, 2).expect("second retry");
        assert!(cluster.try_retry(50, 2).is_none(), "over min_retries");
        drop(first);
        assert!(
            cluster.try_retry(50, 2).is_some(),
            "a finished retry gives its place back"
        );
        drop(second);

        // Ten requests in flight: half of them may be retries, and no more.
        let now = tokio::time::Instant::now();
        let in_flight: Vec<InFlight> = (0..10)
            .map(|_| cluster.admit(0, now).expect("admitted"))
            .collect();
        let retries: Vec<Counted> = (0..5)
            .map(|i| {
                cluster
                    .try_retry(50, 0)
                    .unwrap_or_else(|| panic!("retry {i} is within budget"))
            })
            .collect();
        assert!(cluster.try_retry(50, 0).is_none());
        drop(retries);
        drop(in_flight);
        assert!(
            cluster.try_retry(50, 0).is_none(),
            "nothing in flight, no minimum"
        );
    }
}
