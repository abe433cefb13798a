//! The `sluice` command line: `version`, `validate`, and `run` refusing what it cannot serve.

use crate::harness::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Runs `sluice` with `args` to completion (bounded: killed after 30s).
fn run_bounded(args: &[&str], config: &Path) -> Output {
    let mut child = sluice()
        .args(args)
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    for _ in 0..600 {
        if child.try_wait().expect("poll sluice").is_some() {
            return child.wait_with_output().expect("sluice output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("sluice output");
    panic!(
        "sluice {args:?} did not exit:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Writes `text` as `name` in a fresh scratch directory.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `FILE:LINE:COL: KEY.PATH: MESSAGE` lines the binary should print for `path`.
fn lines(path: &Path, problems: &[&str]) -> String {
    let file = path.display();
    problems.iter().map(|p| format!("{file}:{p}\n")).collect()
}

#[test]
fn version_prints_the_version() {
    let expected = format!("sluice {}\n", env!("CARGO_PKG_VERSION"));
    for arg in ["version", "--version"] {
        let output = sluice().arg(arg).output().expect("run sluice");
        assert!(output.status.success(), "sluice {arg}: {output:?}");
        assert_eq!(text(&output.stdout), expected, "sluice {arg}");
    }
}

const GOOD: &str = r#"[server]
listen = ["127.0.0.1:18080"]
shutdown_grace = "5s"

[server.limits]
max_uri_size = "4KiB"

[admin]
listen = "127.0.0.1:19901"

[clusters.api]
targets = ["http://127.0.0.1:8001", { url = "http://127.0.0.1:8002", weight = 3 }]
balance = "weighted"
connect_timeout = "2s"

[[routes]]
name = "users"
path = "/api/users/{id}"
methods = ["GET", "PUT"]
cluster = "api"
strip_prefix = "/api"
timeout = "30s"

[[routes]]
name = "welcome"
path = "/"
respond = { status = 200, body = "hello\n" }
"#;

#[test]
fn validate_accepts_a_good_file() {
    let path = config_file("good.toml", GOOD);
    let output = run_bounded(&["validate", "-c"], &path);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{}: ok\n", path.display()));
    assert_eq!(text(&output.stderr), "");
}

/// A file with a bad duration and an undefined cluster, and `listen_key` in `[server]`
/// (misspelt, it is an unknown key, which is reported alone).
fn bad_config(listen_key: &str, port: u16) -> String {
    format!(
        r#"[server]
{listen_key} = ["127.0.0.1:{port}"]
shutdown_grace = "soon"

[admin]
listen = "127.0.0.1:{}"

[clusters.api]
targets = ["http://127.0.0.1:8001"]

[[routes]]
name = "a"
path = "/a"
cluster = "apii"
"#,
        free_port()
    )
}

const BAD_DURATION: &str = r#"3:18: server.shutdown_grace: invalid duration `soon`: expected a number and a unit, like "250ms", "30s" or "5m""#;
const UNDEFINED_CLUSTER: &str =
    "14:11: routes[0].cluster: no cluster named `apii` (did you mean `api`?)";

#[test]
fn validate_reports_an_unknown_key_first_then_every_value_problem() {
    let path = config_file("bad.toml", &bad_config("lisen", free_port()));
    let output = run_bounded(&["validate", "-c"], &path);
    assert_eq!(output.status.code(), Some(1));
    let unknown = "2:1: server.lisen: unknown key `lisen` (did you mean `listen`?)";
    assert_eq!(text(&output.stderr), lines(&path, &[unknown]));
    assert_eq!(text(&output.stdout), "");

    let path = config_file("bad.toml", &bad_config("listen", free_port()));
    let output = run_bounded(&["validate", "-c"], &path);
    assert_eq!(output.status.code(), Some(1));
    let expected = lines(&path, &[BAD_DURATION, UNDEFINED_CLUSTER]);
    assert_eq!(text(&output.stderr), expected);
}

#[test]
fn run_with_a_bad_file_exits_1_with_the_same_lines_and_never_listens() {
    let port = free_port();
    let path = config_file("bad.toml", &bad_config("listen", port));
    let output = run_bounded(&["run", "-c"], &path);
    assert_eq!(output.status.code(), Some(1));
    let expected = lines(&path, &[BAD_DURATION, UNDEFINED_CLUSTER]);
    assert_eq!(text(&output.stderr), expected);
    assert!(!text(&output.stdout).contains("listening"), "{output:?}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        TcpStream::connect(addr).is_err(),
        "something listens on {addr}"
    );
}

#[test]
fn validate_catches_a_router_conflict() {
    let config = r#"[clusters.users]
targets = ["http://127.0.0.1:8001"]

[[routes]]
name = "by-id"
path = "/u/{id}"
methods = ["GET"]
cluster = "users"

[[routes]]
name = "by-name"
path = "/u/{name}"
methods = ["POST"]
cluster = "users"
"#;
    let path = config_file("conflict.toml", config);
    let output = run_bounded(&["validate", "-c"], &path);
    assert_eq!(output.status.code(), Some(1));
    let conflict = "10:1: routes[1]: path conflicts with `/u/{id}` of route `by-id`: two parameters in the same place must have the same name";
    assert_eq!(text(&output.stderr), lines(&path, &[conflict]));
}

#[test]
fn run_on_an_address_in_use_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    let data = format!(
        "[server]\nlisten = [\"{taken_addr}\"]\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
        free_port()
    );
    let admin = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\n\n[admin]\nlisten = \"{taken_addr}\"\n",
        free_port()
    );
    for (case, config, needle) in [
        ("data", data, format!("cannot listen on {taken_addr}: ")),
        (
            "admin",
            admin,
            format!("cannot listen on {taken_addr} (admin): "),
        ),
    ] {
        let path = config_file("in-use.toml", &config);
        let output = run_bounded(&["run", "-c"], &path);
        assert_eq!(output.status.code(), Some(1), "{case}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("sluice: ") && stderr.contains(&needle),
            "{case}: {stderr}"
        );
        assert!(stderr.contains("in use"), "{case}: {stderr}");
    }
    drop(taken);
}
