//! Balancing through the real binary: every policy, and keys kept when a target leaves.

use crate::harness::*;
use crate::proxying::{app, bounded};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Notify;

/// `n` echo origins named `o0`, `o1`, ...
async fn origins(n: usize) -> Vec<Origin> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(Origin::echo(&format!("o{i}")).await);
    }
    all
}

fn urls(origins: &[Origin]) -> Vec<String> {
    origins.iter().map(Origin::url).collect()
}

/// Sends GET `path` with `headers`; returns the answering origin and the `Set-Cookie`.
async fn hit(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let mut builder = Request::get(gw.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    let (status, response_headers, body) = send(request, false)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    let origin = response_headers
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .expect("x-origin")
        .to_string();
    let cookie = response_headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (origin, cookie)
}

async fn origin_of(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    hit(gw, path, headers).await.0
}

#[tokio::test]
async fn round_robin_takes_each_target_in_turn() {
    let all = origins(3).await;
    let gw = Gateway::start(&app(&urls(&all), "balance = \"round_robin\"")).await;
    let mut picks = Vec::new();
    for _ in 0..9 {
        picks.push(origin_of(&gw, "/rr", &[]).await);
    }
    assert_eq!(
        picks,
        ["o0", "o1", "o2", "o0", "o1", "o2", "o0", "o1", "o2"]
    );
}

#[tokio::test]
async fn weighted_gives_each_target_its_share() {
    let all = origins(2).await;
    let targets = format!(
        "[clusters.app]\ntargets = [\"{}\", {{ url = \"{}\", weight = 3 }}]\nbalance = \"weighted\"\n\n\
         [[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        all[0].url(),
        all[1].url()
    );
    let gw = Gateway::start(&targets).await;
    let mut picks = Vec::new();
    for _ in 0..100 {
        picks.push(origin_of(&gw, "/w", &[]).await);
    }
    for (cycle, window) in picks.chunks(4).enumerate() {
        let light = window.iter().filter(|o| *o == "o0").count();
        assert_eq!(light, 1, "cycle {cycle}: {window:?}");
    }
    let heavy = picks.iter().filter(|o| *o == "o1").count();
    assert_eq!((100 - heavy, heavy), (25, 75));
}

#[tokio::test]
async fn random_reaches_every_target() {
    let all = origins(3).await;
    let gw = Gateway::start(&app(&urls(&all), "balance = \"random\"")).await;
    let mut seen_origins = BTreeSet::new();
    for _ in 0..300 {
        seen_origins.insert(origin_of(&gw, "/r", &[]).await);
    }
    assert_eq!(seen_origins.len(), 3, "{seen_origins:?}");
    let hits: usize = all.iter().map(|o| o.hits.load(Ordering::Relaxed)).sum();
    assert_eq!(hits, 300);
}

#[tokio::test]
async fn least_conn_avoids_the_busy_target() {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a, r) = (Arc::clone(&arrived), Arc::clone(&release));
    let busy = Origin::custom("busy", move |req: Request<Incoming>| {
        let (arrived, release) = (Arc::clone(&a), Arc::clone(&r));
        async move {
            if req.uri().path() == "/hold" {
                arrived.notify_one();
                release.notified().await;
            }
            Response::builder()
                .header("x-origin", "busy")
                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                .expect("response")
        }
    })
    .await;
    let idle = Origin::echo("idle").await;
    let gw = Gateway::start(&app(&[busy.url(), idle.url()], "balance = \"least_conn\"")).await;

    let held = loop {
        let url = gw.url("/hold");
        let mut task = tokio::spawn(async move { get(&url).await });
        let on_busy = bounded("the request to reach an origin", async {
            tokio::select! {
                _ = arrived.notified() => true,
                _ = &mut task => false,
            }
        })
        .await;
        if on_busy {
            break task;
        }
    };
    for n in 0..10 {
        assert_eq!(
            origin_of(&gw, "/probe", &[]).await,
            "idle",
            "request {n} went to the busy target"
        );
    }
    release.notify_one();
    let (status, headers, _) = held.await.expect("join");
    let origin = headers.get("x-origin").map(|v| v.as_bytes());
    assert_eq!((status, origin), (200, Some(&b"busy"[..])));
}

#[tokio::test]
async fn hash_on_a_header_keeps_keys_when_a_target_leaves() {
    let all = origins(3).await;
    let config = |targets: &[String]| {
        app(
            targets,
            "balance = \"hash\"\nhash_key = \"header:X-User-Id\"",
        )
    };
    let gw = Gateway::start(&config(&urls(&all))).await;
    let mut before = BTreeMap::new();
    for k in 0..60 {
        let key = format!("user-{k}");
        let first = origin_of(&gw, "/h", &[("x-user-id", &key)]).await;
        for _ in 0..2 {
            let again = origin_of(&gw, "/h", &[("x-user-id", &key)]).await;
            assert_eq!(again, first, "key {key} moved");
        }
        before.insert(key, first);
    }
    let used: BTreeSet<&String> = before.values().collect();
    assert_eq!(
        used.len(),
        3,
        "60 keys should spread over 3 targets: {before:?}"
    );
    drop(gw);

    let gw = Gateway::start(&config(&urls(&all[..2]))).await;
    for (key, was) in &before {
        let now = origin_of(&gw, "/h", &[("x-user-id", key)]).await;
        if was != "o2" {
            assert_eq!(&now, was, "key {key} moved although its target stayed");
        } else {
            assert_ne!(now, "o2");
        }
    }
}

#[tokio::test]
async fn hash_on_cookie_query_ip_and_path() {
    let all = origins(3).await;
    let mut config = String::new();
    for (name, key) in [
        ("cookie", "cookie:session"),
        ("query", "query:user"),
        ("ip", "ip"),
        ("path", "path"),
    ] {
        let targets: Vec<String> = urls(&all).iter().map(|u| format!("\"{u}\"")).collect();
        config.push_str(&format!(
            "[clusters.{name}]\ntargets = [{}]\nbalance = \"hash\"\nhash_key = \"{key}\"\n\n\
             [[routes]]\nname = \"{name}\"\nprefix = \"/{name}\"\ncluster = \"{name}\"\n\n",
            targets.join(", ")
        ));
    }
    let gw = Gateway::start(&config).await;
    let mut spread = BTreeMap::<&str, BTreeSet<String>>::new();
    for k in 0..30 {
        let cookie = format!("theme=dark; session=s{k}");
        let other_cookies = format!("session=s{k}; lang=en");
        let (headers, same_key_headers) = ([("cookie", &*cookie)], [("cookie", &*other_cookies)]);
        for (kind, path, same_key) in [
            ("cookie", "/cookie/a".to_string(), "/cookie/b".to_string()),
            (
                "query",
                format!("/query/x?a={k}&user=u{k}"),
                format!("/query/y?user=u{k}&b={}", k + 100),
            ),
            (
                "path",
                format!("/path/item/{k}"),
                format!("/path/./item//{k}?other=1"),
            ),
        ] {
            let first = origin_of(&gw, &path, &headers).await;
            let again = origin_of(&gw, &path, &headers).await;
            assert_eq!(again, first, "{kind} key {k} moved");
            let same = origin_of(&gw, &same_key, &same_key_headers).await;
            assert_eq!(
                same, first,
                "{kind} key {k} moved with the rest of the request"
            );
            spread.entry(kind).or_default().insert(first);
        }
        let from_ip = origin_of(&gw, &format!("/ip/{k}"), &[]).await;
        spread.entry("ip").or_default().insert(from_ip);
    }
    for kind in ["cookie", "query", "path"] {
        assert!(spread[kind].len() > 1, "{kind} keys all went to one target");
    }
    assert_eq!(spread["ip"].len(), 1, "one client IP, one target");
}

/// The `NAME=VALUE` pair of a `Set-Cookie` value.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap_or("").trim()
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_until_its_target_leaves() {
    let all = origins(3).await;
    let config =
        |targets: &[String], extra: &str| app(targets, &format!("balance = \"sticky\"\n{extra}"));
    let gw = Gateway::start(&config(&urls(&all), "sticky_cookie = \"pin\"")).await;
    let (first, set) = hit(&gw, "/s", &[]).await;
    let set = set.expect("the first answer sets the cookie");
    let pair = cookie_pair(&set).to_string();
    assert!(pair.starts_with("pin="), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    let (second, _) = hit(&gw, "/s", &[]).await;
    assert_ne!(second, first, "clients without the cookie go round robin");
    for _ in 0..10 {
        let (origin, _) = hit(&gw, "/s", &[("cookie", &format!("a=1; {pair}"))]).await;
        assert_eq!(origin, first);
    }
    drop(gw);

    let remaining: Vec<String> = all
        .iter()
        .filter(|o| o.name != first)
        .map(Origin::url)
        .collect();
    let gw = Gateway::start(&config(&remaining, "sticky_cookie = \"pin\"")).await;
    let (fallback, set) = hit(&gw, "/s", &[("cookie", &pair)]).await;
    assert_ne!(fallback, first);
    let new_pair = cookie_pair(&set.expect("a new cookie after the fallback")).to_string();
    assert!(
        new_pair.starts_with("pin=") && new_pair != pair,
        "{new_pair}"
    );
    for _ in 0..5 {
        let (origin, _) = hit(&gw, "/s", &[("cookie", &new_pair)]).await;
        assert_eq!(origin, fallback);
    }

    let gw = Gateway::start(&config(&urls(&all), "")).await;
    let (pinned, set) = hit(&gw, "/s", &[]).await;
    let pair = cookie_pair(&set.expect("default cookie")).to_string();
    assert!(pair.starts_with("sluice_sticky="), "{pair}");
    for _ in 0..5 {
        assert_eq!(hit(&gw, "/s", &[("cookie", &pair)]).await.0, pinned);
    }
}
