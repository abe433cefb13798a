//! Hot reload: a valid file is swapped in whole, an invalid one is rejected while the old
//! one keeps serving; listeners, open connections and requests in flight survive.

use crate::harness::*;
use crate::lifecycle::held_origin;
use crate::proxying::{
    app, bounded, h1_conn, read_response, take_exact, take_until, ws_origin, WS_HANDSHAKE,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A route answering `GET path` with `body` from the gateway itself.
fn respond(name: &str, path: &str, body: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nrespond = {{ status = 200, body = \"{body}\" }}\n")
}

#[tokio::test]
async fn admin_reload_applies_a_valid_file_and_rejects_an_invalid_one() {
    let gw = Gateway::start_with(NO_WATCH, &respond("one", "/one", "one")).await;
    assert_eq!(get(&gw.url("/one")).await.2, "one");

    gw.rewrite(NO_WATCH, &respond("two", "/two", "two"));
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 200, "{answer}\n{}", gw.log());
    assert_eq!(answer["generation"], 2);
    assert_eq!(get(&gw.url("/two")).await.2, "two");
    assert_eq!(get(&gw.url("/one")).await.0, 404);

    gw.rewrite(
        NO_WATCH,
        "[[routes]]\nname = \"bad\"\npath = \"/bad\"\ncluster = \"nope\"\n",
    );
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["generation"], 2);
    let errors = answer["errors"].as_array().expect("a list of errors");
    assert_eq!(errors.len(), 1, "{answer}");
    let line = errors[0].as_str().expect("text");
    assert!(
        line.contains("sluice.toml:")
            && line.contains("routes[0].cluster")
            && line.contains("nope"),
        "{line}"
    );
    let config = &health(&gw).await["config"];
    assert_eq!(config["generation"], 2);
    assert_eq!(config["reloads_rejected"], 1);
    assert!(
        config["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("nope")),
        "{config}"
    );
    assert_eq!(
        get(&gw.url("/two")).await.2,
        "two",
        "the old configuration keeps serving"
    );

    gw.rewrite(NO_WATCH, &respond("three", "/three", "three"));
    assert_eq!(post_reload(&gw).await.0, 200);
    let config = &health(&gw).await["config"];
    assert_eq!(config["generation"], 3);
    assert!(config["last_reload_error"].is_null(), "{config}");
    assert_eq!(get(&gw.url("/three")).await.2, "three");

    let metrics = String::from_utf8_lossy(&get(&gw.admin_url("/metrics")).await.2).into_owned();
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"applied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_config_generation 3"), "{metrics}");
}

#[tokio::test]
async fn sighup_rereads_the_file() {
    let gw = Gateway::start_with(NO_WATCH, &respond("one", "/one", "one")).await;
    gw.rewrite(NO_WATCH, &respond("two", "/two", "two"));
    gw.signal("HUP");
    wait_config(&gw, "generation 2", |c| c["generation"] == 2).await;
    assert_eq!(get(&gw.url("/two")).await.2, "two");
    gw.log_with("SIGHUP").await;
}

#[tokio::test]
async fn a_changed_file_is_picked_up_and_a_broken_one_is_not() {
    let gw = Gateway::start(&respond("one", "/one", "one")).await;
    gw.rewrite("", &respond("two", "/two", "two"));
    wait_config(&gw, "generation 2", |c| c["generation"] == 2).await;
    assert_eq!(get(&gw.url("/two")).await.2, "two");

    gw.rewrite("", "[server.limits]\nmax_uri_sise = 10\n");
    wait_config(&gw, "a rejected reload", |c| c["reloads_rejected"] == 1).await;
    let config = &health(&gw).await["config"];
    assert_eq!(config["generation"], 2);
    assert!(
        config["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_uri_size")),
        "the error has its did-you-mean: {config}"
    );
    assert_eq!(get(&gw.url("/two")).await.2, "two");
}

#[tokio::test]
async fn listeners_follow_the_file_and_open_connections_stay() {
    let gw = Gateway::start_with(NO_WATCH, &respond("one", "/", "one")).await;
    let mut kept = h1_conn::<Full<Bytes>>(gw.addr).await;
    let ask = || {
        Request::get("/")
            .header("host", "a")
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let first = kept.send_request(ask()).await.expect("first request");
    assert_eq!(
        first.into_body().collect().await.expect("body").to_bytes(),
        "one"
    );

    // The file now lists only a new port.
    let new_port = free_port();
    let text = config_text(
        new_port,
        gw.admin.port(),
        NO_WATCH,
        &respond("two", "/", "two"),
    );
    std::fs::write(&gw.config_path, text).expect("write config");
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 200, "{answer}\n{}", gw.log());

    assert_eq!(get(&format!("http://127.0.0.1:{new_port}/")).await.2, "two");
    let mut refused = false;
    for _ in 0..400 {
        match TcpStream::connect(gw.addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    assert!(
        refused,
        "the dropped address still accepts connections\n{}",
        gw.log()
    );
    // The connection accepted before the reload is still served, by the new routes.
    let again = kept
        .send_request(ask())
        .await
        .expect("request on the kept connection");
    assert_eq!(
        again.into_body().collect().await.expect("body").to_bytes(),
        "two"
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_configuration_it_started_with() {
    let held = held_origin("from the old configuration").await;
    let gw = Gateway::start_with(NO_WATCH, &app(&[held.origin.url()], "")).await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    bounded("the origin gets the request", held.arrived.notified()).await;

    gw.rewrite(
        NO_WATCH,
        &respond("new", "/slow", "from the new configuration"),
    );
    assert_eq!(post_reload(&gw).await.0, 200);
    assert_eq!(get(&gw.url("/slow")).await.2, "from the new configuration");

    held.release.notify_one();
    let (status, _, body) = bounded("the held request", in_flight).await.expect("join");
    assert_eq!(status, 200);
    assert_eq!(body, "from the old configuration");
}

/// Fifty reloads under load, every third with a broken file: no request fails, and an
/// upgraded connection opened before the first reload still carries bytes after the last.
#[tokio::test]
async fn fifty_reloads_under_load_lose_nothing() {
    let origin = Origin::echo("a").await;
    let ws = ws_origin().await;
    let ws_route = format!(
        "[clusters.ws]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"ws\"\npath = \"/ws\"\ncluster = \"ws\"\n",
        ws.url()
    );
    let valid = [
        format!("{}\n{ws_route}", app(&[origin.url()], "")),
        format!(
            "{}\n{ws_route}\n{}",
            app(&[origin.url()], "balance = \"least_conn\""),
            respond("extra", "/extra", "extra")
        ),
    ];
    let gw = Gateway::start_with(NO_WATCH, &valid[0]).await;

    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = Vec::new();
    stream
        .write_all(format!("GET /ws HTTP/1.1\r\n{WS_HANDSHAKE}").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream, &mut buf).await.status, 101);
    assert_eq!(
        take_until(&mut stream, &mut buf, b"\n").await,
        "hello from origin"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        let url = gw.url(&format!("/load/{worker}"));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Half on kept-alive connections, half on new ones.
                let answer = if ok.load(Ordering::Relaxed) % 2 == 0 {
                    let request = Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    match client.request(request).await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    }
                } else {
                    try_get(&url).await.map(|a| a.0).unwrap_or(0)
                };
                if answer == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    for i in 0..50 {
        let broken = i % 3 == 2;
        if broken {
            let text = format!("{}\n[clusters.broken]\ntargets = []\n", valid[0]);
            gw.rewrite(NO_WATCH, &text);
        } else {
            gw.rewrite(NO_WATCH, &valid[i % 2]);
        }
        let (status, answer) = post_reload(&gw).await;
        assert_eq!(
            status,
            if broken { 422 } else { 200 },
            "reload {i}: {answer}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests\n{}",
        gw.log()
    );
    assert!(ok.load(Ordering::Relaxed) > 0);

    let message = b"still here after fifty reloads\n";
    stream
        .write_all(message)
        .await
        .expect("write on the upgraded connection");
    assert_eq!(
        take_exact(&mut stream, &mut buf, message.len()).await,
        message
    );
    let config = &health(&gw).await["config"];
    assert_eq!(config["reloads_applied"], 34);
    assert_eq!(config["reloads_rejected"], 16);
}
