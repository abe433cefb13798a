//! A JSON Web Key Set kept in memory: fetched in the background every `jwks_refresh`, fetched again (once, for every request waiting) for a `kid` it does not know, and kept while its URL fails for at most `jwks_max_stale`.

use super::fetch::Fetcher;
use super::keys::{parse_jwks, VerifyKey};
use arc_swap::ArcSwapOption;
use sluice_config::JwksSettings;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Requests make at most one fetch in this long (or in `jwks_refresh`, when shorter), so
/// that tokens with made-up `kid`s cannot hammer the key set's URL.
const DEMAND_COOLDOWN: Duration = Duration::from_secs(10);

/// The keys of one successful fetch.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
    fetched: Instant,
}

impl KeySet {
    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// One jwt middleware's key set, kept across reloads while its settings do not change.
#[derive(Debug)]
pub struct Jwks {
    pub settings: JwksSettings,
    name: Arc<str>,
    fetcher: Fetcher,
    current: ArcSwapOption<KeySet>,
    /// Held by the one fetch in flight; the others wait for it, then use what it got.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished so far, successful or not.
    fetches: AtomicU64,
    /// When a request last made a fetch.
    demanded: Mutex<Option<Instant>>,
    started: AtomicBool,
    /// Dropped with the key set, which ends its refresher at once.
    stop: watch::Sender<()>,
}

impl Jwks {
    /// The key set of middleware `name`; nothing is fetched until it is used or started.
    pub fn new(name: &str, settings: &JwksSettings) -> Result<Jwks, String> {
        Ok(Jwks {
            settings: settings.clone(),
            name: Arc::from(name),
            fetcher: Fetcher::new(settings)?,
            current: ArcSwapOption::empty(),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            demanded: Mutex::new(None),
            started: AtomicBool::new(false),
            stop: watch::channel(()).0,
        })
    }

    /// Starts the background refresh unless it runs already (a key set kept by a
    /// reload). It fetches at once, then every `jwks_refresh`, and ends when the key set
    /// is dropped.
    pub fn start(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        if self.started.swap(true, Ordering::Relaxed) {
            return None;
        }
        let stop = self.stop.subscribe();
        Some(tokio::spawn(run_refresh(
            Arc::downgrade(self),
            stop,
            self.settings.refresh,
        )))
    }

    /// The keys to check a token with `kid` against. With no keys younger than
    /// `jwks_max_stale`, or none with this `kid`, the set is fetched first: once for
    /// every request waiting, and at most once per cooldown. `None`: no usable keys.
    /// (The verifier calls its two halves, to box only the fetch.)
    #[cfg(test)]
    async fn keys(&self, kid: Option<&str>) -> Option<Arc<KeySet>> {
        match self.cached(kid) {
            Ok(set) => Some(set),
            Err(seen) => self.fetched(seen).await,
        }
    }

    /// The keys in memory when they serve a token with `kid`; otherwise how many fetches
    /// had finished, for [`Jwks::fetched`].
    pub fn cached(&self, kid: Option<&str>) -> Result<Arc<KeySet>, u64> {
        let seen = self.fetches.load(Ordering::Acquire);
        match self.usable() {
            Some(set) if kid.is_none_or(|k| set.has_kid(k)) => Ok(set),
            _ => Err(seen),
        }
    }

    /// The keys after a fetch (or after the one that finished since `seen`, or right
    /// away within the cooldown).
    pub async fn fetched(&self, seen: u64) -> Option<Arc<KeySet>> {
        self.fetch_on_demand(seen).await;
        self.usable()
    }

    fn usable(&self) -> Option<Arc<KeySet>> {
        self.current
            .load_full()
            .filter(|set| set.fetched.elapsed() <= self.settings.max_stale)
    }

    /// A fetch for a request that found no usable key, unless one finished since the
    /// request looked (`seen`) or the cooldown is not over.
    async fn fetch_on_demand(&self, seen: u64) {
        let _turn = self.fetching.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen {
            return;
        }
        {
            let cooldown = DEMAND_COOLDOWN.min(self.settings.refresh);
            let mut last = self.demanded.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < cooldown) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.fetch_now().await;
    }

    /// The background refresh: fetches unless another fetch finished meanwhile.
    async fn refresh(&self) {
        let seen = self.fetches.load(Ordering::Acquire);
        let _turn = self.fetching.lock().await;
        if self.fetches.load(Ordering::Acquire) == seen {
            self.fetch_now().await;
        }
    }

    /// Fetches and swaps in the new keys; on failure the keys stay as they are. Called
    /// with `fetching` held.
    async fn fetch_now(&self) {
        let result = match self.fetcher.fetch().await.and_then(|b| parse_jwks(&b)) {
            Ok((keys, skipped)) if keys.is_empty() => Err(format!(
                "no usable signing key in the set{}",
                reasons(&skipped)
            )),
            Ok((keys, skipped)) => Ok((keys, skipped)),
            Err(e) => Err(e),
        };
        match result {
            Ok((keys, skipped)) => {
                let old = self.current.load_full();
                let kids = |keys: &[VerifyKey]| -> Vec<String> {
                    keys.iter()
                        .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
                        .collect()
                };
                let new_kids = kids(&keys);
                if old.as_ref().is_none_or(|o| kids(&o.keys) != new_kids) {
                    tracing::info!(middleware = %self.name, url = %self.fetcher.url(), "JWKS loaded: {} signing keys ({}){}", keys.len(), new_kids.join(", "), if skipped.is_empty() { String::new() } else { format!("; skipped{}", reasons(&skipped)) });
                }
                self.current.store(Some(Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                })));
            }
            Err(cause) => {
                let fallback = match self.current.load_full() {
                    Some(set) if set.fetched.elapsed() <= self.settings.max_stale => format!(
                        "the keys fetched {}s ago stay in use for {}s more (jwks_max_stale)",
                        set.fetched.elapsed().as_secs(),
                        self.settings
                            .max_stale
                            .saturating_sub(set.fetched.elapsed())
                            .as_secs()
                    ),
                    _ => "no usable keys: tokens are refused".to_string(),
                };
                tracing::warn!(middleware = %self.name, url = %self.fetcher.url(), "JWKS not fetched: {cause}; {fallback}");
            }
        }
        self.fetches.fetch_add(1, Ordering::Release);
    }
}

fn reasons(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" ({})", skipped.join("; "))
    }
}

/// Fetches now, then every `every`, until the key set is dropped.
async fn run_refresh(jwks: Weak<Jwks>, mut stop: watch::Receiver<()>, every: Duration) {
    loop {
        match jwks.upgrade() {
            Some(jwks) => jwks.refresh().await,
            None => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // Only the sender's drop ends this wait: nothing is ever sent.
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::AtomicUsize;

    const SET: &str = r#"{"keys": [{"kty": "EC", "kid": "p256", "crv": "P-256",
        "x": "M6dFdt2zxd1TWEbwKZoKmiOtSE8NUfAR9opF4RY6YHA",
        "y": "4dEtTI9fB8RHaSNrhyMzs1N6tyj8x5x3xNzrRe3bb74"}]}"#;

    /// A key-set server answering `answer` (status, body), counting requests.
    struct Server {
        url: http::Uri,
        hits: Arc<AtomicUsize>,
        answer: Arc<Mutex<(u16, &'static str)>>,
        task: JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn server() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"))
            .parse()
            .expect("url");
        let hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new((200, SET)));
        let (h, a) = (Arc::clone(&hits), Arc::clone(&answer));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, a) = (Arc::clone(&h), Arc::clone(&a));
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = *a.lock().expect("answer");
                        async move {
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            url,
            hits,
            answer,
            task,
        }
    }

    fn jwks(url: &http::Uri, refresh: Duration, max_stale: Duration) -> Arc<Jwks> {
        let settings = JwksSettings {
            url: url.clone(),
            ca: None,
            refresh,
            max_stale,
        };
        Arc::new(Jwks::new("auth", &settings).expect("jwks"))
    }

    #[tokio::test]
    async fn requests_waiting_for_keys_share_one_fetch() {
        let s = server().await;
        let j = jwks(&s.url, Duration::from_secs(3600), Duration::from_secs(3600));
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let j = Arc::clone(&j);
                tokio::spawn(async move { j.keys(None).await.map(|set| set.keys.len()) })
            })
            .collect();
        for w in waiting {
            assert_eq!(w.await.expect("join"), Some(1));
        }
        assert_eq!(s.hits.load(Ordering::SeqCst), 1);
        // An unknown kid right after a fetch waits for the cooldown: no new fetch.
        let set = j.keys(Some("unknown")).await.expect("keys");
        assert!(!set.has_kid("unknown"));
        assert_eq!(s.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_again_once_the_cooldown_is_over() {
        let s = server().await;
        // A short refresh shortens the cooldown.
        let j = jwks(&s.url, Duration::from_millis(50), Duration::from_secs(3600));
        assert!(j.keys(Some("p256")).await.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(j.keys(Some("p256")).await.is_some());
        assert_eq!(
            s.hits.load(Ordering::SeqCst),
            1,
            "a known kid never fetches"
        );
        assert!(j.keys(Some("rotated")).await.is_some());
        assert_eq!(s.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keys_outlive_failures_until_max_stale_then_fail_closed() {
        let s = server().await;
        let j = jwks(
            &s.url,
            Duration::from_millis(20),
            Duration::from_millis(300),
        );
        assert!(j.keys(None).await.is_some());
        *s.answer.lock().expect("answer") = (500, "oops");
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The fetch for the unknown kid fails; the last keys stay.
        assert!(j.keys(Some("other")).await.is_some());
        assert_eq!(s.hits.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(j.keys(None).await.is_none(), "older than max_stale");
        *s.answer.lock().expect("answer") = (200, "{\"keys\": []}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(j.keys(None).await.is_none(), "an empty set is a failure");
        *s.answer.lock().expect("answer") = (200, SET);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(j.keys(None).await.is_some(), "back once the URL answers");
    }

    #[tokio::test]
    async fn the_refresher_runs_once_and_ends_with_its_key_set() {
        let s = server().await;
        let j = jwks(&s.url, Duration::from_secs(3600), Duration::from_secs(3600));
        let task = j.start().expect("started");
        assert!(j.start().is_none(), "already running");
        for _ in 0..100 {
            if s.hits.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.hits.load(Ordering::SeqCst), 1, "fetched at start");
        drop(j);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the refresher ends with its key set")
            .expect("join");
    }
}
