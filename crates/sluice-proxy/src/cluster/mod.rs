//! A cluster at run time: its targets (each with a pooled upstream client and a count of
//! requests in flight) and the policy that picks one per request.

pub mod balance;
mod sticky;

use crate::upstream::UpstreamClient;
use balance::{Balancer, HashRing, PickInput, SmoothWeighted};
use http::request::Parts;
use http::uri::Authority;
use http::HeaderValue;
use sluice_config::{Balance, Cluster as ClusterConfig, HashKey, Target, TargetAddress};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    key: TargetKey,
}

impl TargetState {
    /// Requests to this target in flight now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// A request in flight to a target; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
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
}

/// The target picked for a request, and a cookie to set when the pick pins a client.
pub struct Pick {
    pub target: Arc<TargetState>,
    pub set_cookie: Option<HeaderValue>,
}

impl Cluster {
    /// Builds a cluster; targets `previous` runs with an equal [`TargetKey`] are reused.
    pub fn new(config: &ClusterConfig, previous: Option<&Cluster>) -> Cluster {
        let targets: Vec<Arc<TargetState>> = config
            .targets
            .iter()
            .map(|t| {
                let key = TargetKey::new(t, config);
                if let Some(old) = previous.and_then(|p| p.targets.iter().find(|o| o.key == key)) {
                    return Arc::clone(old);
                }
                let host = match &t.address {
                    TargetAddress::Tcp { authority, .. } => authority.as_str(),
                    TargetAddress::Unix(_) => "localhost",
                };
                let sticky_id = format!("{:016x}", balance::stable_hash(t.url.as_bytes()));
                let set_sticky = (config.balance == Balance::Sticky)
                    .then(|| {
                        HeaderValue::try_from(sticky::set_cookie(&config.sticky_cookie, &sticky_id))
                            .ok()
                    })
                    .flatten();
                Arc::new(TargetState {
                    name: Arc::from(t.url.as_str()),
                    authority: Authority::try_from(host)
                        .unwrap_or(Authority::from_static("localhost")),
                    host_header: HeaderValue::try_from(host)
                        .unwrap_or(HeaderValue::from_static("localhost")),
                    sticky_id,
                    set_sticky,
                    client: UpstreamClient::new(t, config),
                    target: t.clone(),
                    active: AtomicUsize::new(0),
                    key,
                })
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
        Cluster {
            name: Arc::from(config.name.as_str()),
            targets,
            preserve_host: config.preserve_host,
            http2: config.http2,
            balancer,
            hash_key,
            sticky_cookie,
        }
    }

    /// Picks the target for a request from `client_ip`; `path` is its normalised path.
    pub fn pick(&self, request: &Parts, path: &str, client_ip: Option<IpAddr>) -> Pick {
        if let Some(cookie) = &self.sticky_cookie {
            if let Some(target) = sticky::cookie(request, cookie)
                .and_then(|id| self.targets.iter().find(|t| t.sticky_id == id))
            {
                return Pick {
                    target: Arc::clone(target),
                    set_cookie: None,
                };
            }
        }
        let ip_text;
        let key: Option<&[u8]> = match &self.hash_key {
            None => None,
            Some(HashKey::Header(name)) => request.headers.get(name).map(|v| v.as_bytes()),
            Some(HashKey::Cookie(name)) => sticky::cookie(request, name).map(str::as_bytes),
            Some(HashKey::Query(name)) => query_param(request.uri.query(), name).map(str::as_bytes),
            Some(HashKey::Path) => Some(path.as_bytes()),
            Some(HashKey::Ip) => {
                ip_text = client_ip.map(|ip| ip.to_string());
                ip_text.as_deref().map(str::as_bytes)
            }
        };
        let active = |i: usize| self.targets[i].active();
        let index = self.balancer.pick(
            self.targets.len(),
            &PickInput {
                hash_key: key,
                active: &active,
            },
        );
        let target = Arc::clone(&self.targets[index]);
        let set_cookie = target.set_sticky.clone();
        Pick { target, set_cookie }
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
    use super::{query_param, Cluster};

    fn hash_cluster(key: &str) -> Cluster {
        let src = format!("[clusters.c]\ntargets = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\", \"http://127.0.0.1:3\"]\nbalance = \"hash\"\nhash_key = \"{key}\"\n");
        let config = sluice_config::parse(&src, "t.toml").expect("valid config");
        Cluster::new(&config.clusters[0], None)
    }

    fn pick(cluster: &Cluster, uri: &str) -> usize {
        let (parts, _) = http::Request::get(uri)
            .body(())
            .expect("request")
            .into_parts();
        let path = crate::router::path::normalize(parts.uri.path()).expect("a valid path");
        let target = cluster.pick(&parts, &path, None).target;
        cluster
            .targets
            .iter()
            .position(|t| std::sync::Arc::ptr_eq(t, &target))
            .expect("a target of the cluster")
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
    fn finds_query_params() {
        assert_eq!(query_param(Some("a=1&user=bob&c"), "user"), Some("bob"));
        assert_eq!(query_param(Some("a=1&c"), "c"), Some(""));
        assert_eq!(query_param(Some("a=1"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }
}
