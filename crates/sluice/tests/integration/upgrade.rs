//! Binary upgrade: `sluice run --upgrade` takes the listening sockets over from the running process, which drains and exits, and no connection is refused meanwhile.

use crate::harness::*;
use crate::lifecycle::{exit_code, held_origin};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A gateway with an upgrade socket and a Unix listener in `dir`: `/held` goes to
/// `held`, everything else to `app`.
fn config(dir: &Path, unix: &str, app: &Origin, held: &Origin) -> (String, String) {
    let server = format!(
        "unix = [\"{}\"]\nupgrade_socket = \"{}\"\nwatch_config = false",
        dir.join(unix).display(),
        dir.join("upgrade.sock").display()
    );
    let body = format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n[clusters.held]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"held\"\npath = \"/held\"\ncluster = \"held\"\n\n\
         [[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        app.url(),
        held.url()
    );
    (server, body)
}

/// GET `path` over the Unix socket at `socket`, on a blocking thread: the status line.
async fn unix_get(socket: &Path, path: &str) -> String {
    let (socket, path) = (socket.to_path_buf(), path.to_string());
    tokio::task::spawn_blocking(move || {
        let mut stream = UnixStream::connect(&socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = format!("GET {path} HTTP/1.1\r\nhost: local\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.lines().next().unwrap_or_default().to_string()
    })
    .await
    .expect("join")
}

/// Clients that each open a new connection per request until stopped: how many
/// succeeded, and what went wrong with the others.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match try_get(&url).await {
                            Ok((200, _, _)) => ok += 1,
                            Ok((status, _, body)) => {
                                failed.push(format!("{status} {}", text(&body)))
                            }
                            Err(e) => failed.push(e),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for task in self.tasks {
            let (n, f) = task.await.expect("load task");
            ok += n;
            failed.extend(f);
        }
        (ok, failed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_twice_under_new_connections_refusing_none() {
    let app = Origin::echo("app").await;
    let held = held_origin("finished by the old process").await;
    let dir = scratch_dir();
    let (server, body) = config(&dir, "data.sock", &app, &held.origin);
    let mut first = Gateway::start_with(&server, &body).await;

    // A request in flight on the old process when it hands over.
    let in_flight = tokio::spawn(try_get_owned(first.url("/held")));
    tokio::time::timeout(Duration::from_secs(30), held.arrived.notified())
        .await
        .expect("the held request reached its origin");

    let load = Load::start(first.url("/ping"), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = first.upgrade("sluice-2.log");
    // The old process stops accepting once the new one does, but finishes what it has.
    let mut draining = false;
    for _ in 0..400 {
        if first.log().contains("the new process accepts now") {
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        draining,
        "old log:\n{}\nnew log:\n{}",
        first.log(),
        second.log()
    );
    held.release.notify_one();
    let answer = in_flight.await.expect("join").expect("the held request");
    assert_eq!(
        (answer.0, text(&answer.2).as_str()),
        (200, "finished by the old process")
    );
    assert_eq!(exit_code(&mut first).await, Some(0), "{}", first.log());

    // Only the new process is left: it answers on TCP, the Unix socket and admin.
    assert_eq!(
        get(&first.url("/after-first")).await.0,
        200,
        "{}",
        second.log()
    );
    assert_eq!(
        unix_get(&dir.join("data.sock"), "/unix").await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(get(&first.admin_url("/ready")).await.0, 200);

    // The upgrade socket went over too, so the new process can be upgraded in turn.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = second.upgrade("sluice-3.log");
    assert_eq!(exit_code(&mut second).await, Some(0), "{}", second.log());
    assert_eq!(
        get(&first.url("/after-second")).await.0,
        200,
        "{}",
        third.log()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 0);
    assert_eq!(
        unix_get(&dir.join("data.sock"), "/unix").await,
        "HTTP/1.1 200 OK"
    );
    assert!(
        dir.join("upgrade.sock").exists(),
        "the upgrade socket stays for the next upgrade"
    );

    // A plain stop removes the socket files the last process owns.
    third.signal("TERM");
    assert_eq!(exit_code(&mut third).await, Some(0), "{}", third.log());
    assert!(!dir.join("data.sock").exists());
    assert!(!dir.join("upgrade.sock").exists());
}

async fn try_get_owned(url: String) -> Result<Answer, String> {
    try_get(&url).await
}

/// Runs `sluice run --upgrade -c config` to its end: exit code and output.
async fn failed_upgrade(config: &Path) -> (Option<i32>, String) {
    let config = config.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--upgrade", "-c"])
            .arg(&config)
            .output()
            .expect("run sluice")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn a_failed_or_abandoned_upgrade_leaves_the_running_process_serving() {
    let app = Origin::echo("app").await;
    let held = held_origin("unused").await;
    let dir = scratch_dir();
    let (server, body) = config(&dir, "data.sock", &app, &held.origin);
    let mut gw = Gateway::start_with(&server, &body).await;
    let upgrade_socket = dir.join("upgrade.sock");
    let serving = |gw: &Gateway| {
        let (url, ready) = (gw.url("/still"), gw.admin_url("/ready"));
        async move { (get(&url).await.0, get(&ready).await.0) }
    };

    // Something that is not a new sluice: a wrong greeting is turned away.
    let wrong = upgrade_socket.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = UnixStream::connect(&wrong).expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    })
    .await
    .expect("join");
    assert_eq!(serving(&gw).await, (200, 200));

    // A new process that takes the socket list and goes away before saying it is ready.
    let abandon = upgrade_socket.clone();
    let list = tokio::task::spawn_blocking(move || {
        let mut stream = UnixStream::connect(&abandon).expect("connect");
        stream.write_all(b"sluice-upgrade 1\n").expect("write");
        let mut list = Vec::new();
        let mut byte = [0u8; 1];
        while !list.ends_with(b"end\n") && stream.read(&mut byte).expect("read") == 1 {
            list.push(byte[0]);
        }
        String::from_utf8_lossy(&list).into_owned()
    })
    .await
    .expect("join");
    assert!(list.starts_with("sluice-upgrade 1\n"), "{list}");
    assert!(list.contains(&format!("tcp {}\n", gw.addr)), "{list}");
    assert!(
        list.contains(&format!("unix {}\n", dir.join("data.sock").display())),
        "{list}"
    );
    assert!(list.contains(&format!("admin {}\n", gw.admin)), "{list}");
    assert!(
        list.contains(&format!("upgrade {}\n", upgrade_socket.display())),
        "{list}"
    );
    gw.log_with("upgrade abandoned").await;
    assert_eq!(serving(&gw).await, (200, 200));

    // A new configuration with errors: the new process exits 1 before touching anything.
    std::fs::write(&gw.config_path, "[server]\nthreads = -1\n").expect("write");
    let (code, out) = failed_upgrade(&gw.config_path).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("server.threads"), "{out}");
    assert_eq!(serving(&gw).await, (200, 200));

    // No upgrade socket in the new file, or nobody listening on the one it names.
    std::fs::write(
        &gw.config_path,
        format!(
            "[server]\nlisten = []\nunix = [\"{}\"]\n",
            dir.join("x.sock").display()
        ),
    )
    .expect("write");
    let (code, out) = failed_upgrade(&gw.config_path).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--upgrade needs server.upgrade_socket"),
        "{out}"
    );
    let elsewhere = dir.join("nobody.sock");
    std::fs::write(
        &gw.config_path,
        format!("[server]\nupgrade_socket = \"{}\"\n", elsewhere.display()),
    )
    .expect("write");
    let (code, out) = failed_upgrade(&gw.config_path).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot reach a running sluice at"), "{out}");
    assert_eq!(serving(&gw).await, (200, 200));

    // A real upgrade to a file that moves the Unix listener: the new process binds the
    // new path, and the old path, no longer configured, goes away.
    let (server, body) = config(&dir, "moved.sock", &app, &held.origin);
    gw.rewrite(&server, &body);
    let mut new = gw.upgrade("sluice-2.log");
    assert_eq!(exit_code(&mut gw).await, Some(0), "{}", gw.log());
    assert_eq!(
        unix_get(&dir.join("moved.sock"), "/moved").await,
        "HTTP/1.1 200 OK",
        "{}",
        new.log()
    );
    for _ in 0..400 {
        if !dir.join("data.sock").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!dir.join("data.sock").exists(), "{}", new.log());
    assert_eq!(serving(&new).await, (200, 200));
    new.signal("TERM");
    assert_eq!(exit_code(&mut new).await, Some(0));
}
