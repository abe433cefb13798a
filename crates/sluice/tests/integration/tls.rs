//! TLS listeners checked with curl and openssl s_client: certificates by SNI, ALPN, TLS versions, client certificates, certificate reload and the redirect from plain HTTP.

use crate::harness::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A test CA that issues server and client certificates into `dir`.
pub(crate) struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub(crate) ca: PathBuf,
}

impl Pki {
    pub(crate) fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice Test CA");
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// Writes `file.pem` and `file.key`: a certificate for `names`, called `cn`.
    pub(crate) fn issue(
        &self,
        file: &str,
        cn: &str,
        names: &[&str],
        client: bool,
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Sluice Tests");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        // Written beside and renamed into place, as certificate renewal tools do.
        for (path, text) in [(&key_path, key.serialize_pem()), (&cert_path, cert.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
        (cert_path, key_path)
    }
}

/// Runs a command to its end on a blocking thread: exit code and stdout + stderr.
async fn run(program: &str, args: Vec<String>) -> (Option<i32>, String) {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    })
    .await
    .expect("join")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `openssl s_client` against `port` with `extra` options: what it printed.
async fn s_client(port: u16, pki: &Pki, extra: &[&str]) -> String {
    let mut args = strings(&["s_client", "-connect"]);
    args.push(format!("127.0.0.1:{port}"));
    args.push("-CAfile".into());
    args.push(pki.ca.display().to_string());
    args.extend(strings(extra));
    run("openssl", args).await.1
}

/// curl over TLS to `host` (resolved to 127.0.0.1): exit code and what it printed.
async fn curl(
    port: u16,
    pki: &Pki,
    host: &str,
    path: &str,
    extra: &[&str],
) -> (Option<i32>, String) {
    let mut args = strings(&["-sS", "--max-time", "20", "--cacert"]);
    args.push(pki.ca.display().to_string());
    args.push("--resolve".into());
    args.push(format!("{host}:{port}:127.0.0.1"));
    args.extend(strings(extra));
    args.push(format!("https://{host}:{port}{path}"));
    run("curl", args).await
}

fn tls_lines(port: u16, certs: &[(PathBuf, PathBuf)], more: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "[server.tls]\nlisten = [\"127.0.0.1:{port}\"]\ncertificates = [{}]\n{more}\n",
        list.join(", ")
    )
}

fn proxy_to(origin: &Origin) -> String {
    format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        origin.url()
    )
}

/// A gateway whose TLS listener serves one certificate for `a.test`, with `more` in
/// `[server.tls]`, in front of an echo origin.
struct OneSite {
    pki: Pki,
    port: u16,
    gw: Gateway,
    _origin: Origin,
}

async fn one_site(more: &str) -> OneSite {
    let origin = Origin::echo("app").await;
    let pki = Pki::new(&scratch_dir());
    let a = pki.issue("a", "a.test", &["a.test"], false);
    let port = free_port();
    let gw = Gateway::start_with(&tls_lines(port, &[a], more), &proxy_to(&origin)).await;
    OneSite {
        pki,
        port,
        gw,
        _origin: origin,
    }
}

/// curl's exit code for an HTTPS request to `a.test`: `Some(0)` when it was answered.
async fn https_answers(port: u16, pki: &Pki) -> Option<i32> {
    curl(port, pki, "a.test", "/", &["-o", "/dev/null"]).await.0
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_with_alpn_and_both_tls_versions() {
    let origin = Origin::echo("app").await;
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    let a = pki.issue("a", "a.test", &["a.test"], false);
    let wild = pki.issue("wild", "wild", &["*.b.test"], false);
    let port = free_port();
    let gw = Gateway::start_with(&tls_lines(port, &[a, wild], ""), &proxy_to(&origin)).await;

    let (code, out) = curl(port, &pki, "a.test", "/hello", &["-w", "\n%{http_version}"]).await;
    assert_eq!(code, Some(0), "{out}\n{}", gw.log());
    let (body, version) = out.rsplit_once('\n').expect("version line");
    let seen = seen(&bytes::Bytes::from(body.to_string()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(version, "2", "ALPN picks HTTP/2 when curl offers it");
    let (_, out) = curl(
        port,
        &pki,
        "x.b.test",
        "/",
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version}"],
    )
    .await;
    assert_eq!(out, "1.1");

    let sni = s_client(port, &pki, &["-servername", "x.b.test"]).await;
    assert!(sni.contains("CN = wild"), "{sni}");
    assert!(sni.contains("Verify return code: 0 (ok)"), "{sni}");
    let unknown = s_client(port, &pki, &["-servername", "other.test"]).await;
    assert!(
        unknown.contains("CN = a.test"),
        "the first certificate is the default: {unknown}"
    );
    let deep = s_client(port, &pki, &["-servername", "x.y.b.test"]).await;
    assert!(
        deep.contains("CN = a.test"),
        "a wildcard covers one label: {deep}"
    );

    let h2 = s_client(port, &pki, &["-servername", "a.test", "-alpn", "h2"]).await;
    assert!(h2.contains("ALPN protocol: h2"), "{h2}");
    let tls12 = s_client(port, &pki, &["-servername", "a.test", "-tls1_2"]).await;
    assert!(tls12.contains("TLSv1.2"), "{tls12}");
    let tls13 = s_client(port, &pki, &["-servername", "a.test", "-tls1_3"]).await;
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
}

#[tokio::test]
async fn tls13_only_refuses_tls12_clients() {
    let OneSite {
        pki,
        port,
        gw: _gw,
        _origin,
    } = one_site("min_version = \"1.3\"").await;
    let refused = s_client(port, &pki, &["-servername", "a.test", "-tls1_2"]).await;
    assert!(
        refused.contains("no peer certificate available"),
        "{refused}"
    );
    assert!(refused.contains("Cipher is (NONE)"), "{refused}");
    assert_eq!(https_answers(port, &pki).await, Some(0));
}

#[tokio::test]
async fn client_certificates_are_required_or_optional_and_their_subject_reaches_the_origin() {
    let origin = Origin::echo("app").await;
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    let a = pki.issue("a", "a.test", &["a.test"], false);
    let (client_cert, client_key) = pki.issue("client", "client one", &[], true);
    let other_ca = Pki::new(&scratch_dir());
    let (stranger_cert, stranger_key) = other_ca.issue("stranger", "stranger", &[], true);
    let with = |cert: &Path, key: &Path| {
        vec![
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
        ]
    };

    let port = free_port();
    let required = format!(
        "client_auth = \"required\"\nclient_ca = \"{}\"",
        pki.ca.display()
    );
    let gw = Gateway::start_with(
        &tls_lines(port, std::slice::from_ref(&a), &required),
        &proxy_to(&origin),
    )
    .await;
    let (code, out) = curl(port, &pki, "a.test", "/", &[]).await;
    assert_ne!(code, Some(0), "no client certificate: {out}");
    let args = with(&stranger_cert, &stranger_key);
    let (code, out) = curl(
        port,
        &pki,
        "a.test",
        "/",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert_ne!(code, Some(0), "a certificate from another CA: {out}");
    let mut args = with(&client_cert, &client_key);
    args.extend(strings(&["-H", "x-client-subject: CN=admin"]));
    let (code, out) = curl(
        port,
        &pki,
        "a.test",
        "/",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{}", gw.log());
    let subject = seen(&bytes::Bytes::from(out))
        .header("x-client-subject")
        .map(str::to_string);
    let subject = subject.expect("the subject header");
    assert!(
        subject.contains("CN=client one") && subject.contains("O=Sluice Tests"),
        "{subject}"
    );
    drop(gw);

    let port = free_port();
    let optional = format!(
        "client_auth = \"optional\"\nclient_ca = \"{}\"",
        pki.ca.display()
    );
    let _gw = Gateway::start_with(&tls_lines(port, &[a], &optional), &proxy_to(&origin)).await;
    let (code, out) = curl(
        port,
        &pki,
        "a.test",
        "/",
        &["-H", "x-client-subject: CN=admin"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        seen(&bytes::Bytes::from(out)).header("x-client-subject"),
        None,
        "never taken from the client"
    );
    let args = with(&client_cert, &client_key);
    let (_, out) = curl(
        port,
        &pki,
        "a.test",
        "/",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    assert!(seen(&bytes::Bytes::from(out))
        .header("x-client-subject")
        .is_some_and(|s| s.contains("CN=client one")));
}

#[tokio::test]
async fn renewed_certificate_files_are_served_without_a_reload() {
    let OneSite {
        pki,
        port,
        gw,
        _origin,
    } = one_site("").await;
    assert!(s_client(port, &pki, &["-servername", "a.test"])
        .await
        .contains("CN = a.test"));

    pki.issue("a", "a.test renewed", &["a.test"], false);
    let mut served = String::new();
    for _ in 0..100 {
        served = s_client(port, &pki, &["-servername", "a.test"]).await;
        if served.contains("CN = a.test renewed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served.contains("CN = a.test renewed"),
        "{served}\n{}",
        gw.log()
    );
    gw.log_with("TLS certificates reloaded").await;
    assert_eq!(https_answers(port, &pki).await, Some(0));
}

#[tokio::test]
async fn plain_listeners_redirect_to_https_when_asked() {
    let OneSite {
        pki,
        port,
        gw,
        _origin,
    } = one_site("redirect_http = true").await;
    let answer = raw_async(
        gw.addr,
        b"GET /x/y?q=1 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n".to_vec(),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("location: https://a.test:{port}/x/y?q=1")),
        "{answer}"
    );
    assert_eq!(
        https_answers(port, &pki).await,
        Some(0),
        "HTTPS itself is served"
    );
}

#[tokio::test]
async fn unusable_certificates_are_configuration_errors() {
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    let (a_cert, _) = pki.issue("a", "a.test", &["a.test"], false);
    let (_, b_key) = pki.issue("b", "b.test", &["b.test"], false);
    let write = |name: &str, certs: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncertificates = [{certs}]\n"),
        )
        .expect("write");
        path
    };
    let missing = write(
        "missing.toml",
        "{ cert = \"nowhere.pem\", key = \"a.key\" }",
    );
    let (code, out) = run(
        env!("CARGO_BIN_EXE_sluice"),
        vec![
            "validate".into(),
            "-c".into(),
            missing.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("missing.toml:3:26: server.tls.certificates[0].cert: cannot read"),
        "{out}"
    );
    assert!(
        out.contains("nowhere.pem"),
        "relative to the file's directory: {out}"
    );

    let mismatch = write(
        "mismatch.toml",
        &format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            a_cert.display(),
            b_key.display()
        ),
    );
    let (code, out) = run(
        env!("CARGO_BIN_EXE_sluice"),
        vec![
            "validate".into(),
            "-c".into(),
            mismatch.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("server.tls.certificates: ") && out.contains("b.key is not the key of"),
        "{out}"
    );
}
