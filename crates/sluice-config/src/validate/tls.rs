//! Validation of `[server.tls]`: addresses, certificate files (read and parsed when the runtime is built), versions, ALPN and client certificates.

use super::Checker;
use crate::raw::{TlsConfig, UpstreamTlsConfig};
use crate::tls::*;
use http::HeaderName;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A path from the file, relative to the configuration file's directory.
fn path(base: &Path, text: &str) -> PathBuf {
    let p = Path::new(text);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Checks that `text` names a readable file.
pub(super) fn readable(c: &mut Checker, base: &Path, text: &Spanned<String>, key: &str) -> PathBuf {
    let p = path(base, text.get_ref());
    if let Err(e) = std::fs::metadata(&p).and_then(|m| {
        if m.is_file() {
            Ok(())
        } else {
            Err(std::io::Error::other("not a file"))
        }
    }) {
        c.fail(
            text.span(),
            key,
            format!("cannot read {}: {e}", p.display()),
        );
    }
    p
}

pub(super) fn tls(c: &mut Checker, t: &Spanned<TlsConfig>, base: &Path) -> Option<Tls> {
    let cfg = t.get_ref();
    let key = "server.tls";
    let listen: Vec<_> = match &cfg.listen {
        Some(list) if !list.get_ref().is_empty() => list
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, a)| c.socket_addr(a, &format!("{key}.listen[{i}]")))
            .collect(),
        Some(list) => {
            c.fail(
                list.span(),
                &format!("{key}.listen"),
                "give at least one address to listen on with TLS",
            );
            Vec::new()
        }
        None => {
            c.fail(
                t.span(),
                key,
                "[server.tls] needs `listen`, like listen = [\"0.0.0.0:443\"]",
            );
            Vec::new()
        }
    };
    let certificates: Vec<CertificateFiles> = match &cfg.certificates {
        Some(list) if !list.get_ref().is_empty() => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let k = format!("{key}.certificates[{i}]");
                let e = entry.get_ref();
                CertificateFiles {
                    cert: readable(c, base, &e.cert, &format!("{k}.cert")),
                    key: readable(c, base, &e.key, &format!("{k}.key")),
                    location: c.at(&entry.span()),
                }
            })
            .collect(),
        Some(list) => {
            c.fail(
                list.span(),
                &format!("{key}.certificates"),
                "give at least one certificate",
            );
            Vec::new()
        }
        None => {
            c.fail(t.span(), key, "[server.tls] needs `certificates`, like [{ cert = \"site.pem\", key = \"site.key\" }]");
            Vec::new()
        }
    };
    let tls13_only = match cfg.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "1.2")) => false,
        Some((_, "1.3")) => true,
        Some((v, other)) => {
            c.fail(
                v.span(),
                &format!("{key}.min_version"),
                format!("unknown TLS version `{other}`; expected \"1.2\" or \"1.3\""),
            );
            false
        }
    };
    let alpn = match &cfg.alpn {
        None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.get_ref().as_str() {
                "h2" | "http/1.1" => Some(p.get_ref().as_bytes().to_vec()),
                other => {
                    c.fail(
                        p.span(),
                        &format!("{key}.alpn[{i}]"),
                        format!("unknown protocol `{other}`; expected \"h2\" or \"http/1.1\""),
                    );
                    None
                }
            })
            .collect(),
    };
    let ca = cfg.client_ca.as_ref().map(|ca| {
        (
            readable(c, base, ca, &format!("{key}.client_ca")),
            c.at(&ca.span()),
        )
    });
    let client_auth = match (
        cfg.client_auth.as_ref().map(|a| (a, a.get_ref().as_str())),
        ca,
    ) {
        (None | Some((_, "none")), None) => ClientAuth::None,
        (None | Some((_, "none")), Some(_)) => {
            let span = cfg.client_ca.as_ref().map(|s| s.span()).unwrap_or(t.span());
            c.fail(
                span,
                &format!("{key}.client_ca"),
                "client_ca is only used with client_auth = \"optional\" or \"required\"",
            );
            ClientAuth::None
        }
        (Some((_, "optional")), Some((ca, location))) => ClientAuth::Optional { ca, location },
        (Some((_, "required")), Some((ca, location))) => ClientAuth::Required { ca, location },
        (Some((a, "optional" | "required")), None) => {
            c.fail(
                a.span(),
                &format!("{key}.client_auth"),
                "client certificates need `client_ca`, the CA that issues them",
            );
            ClientAuth::None
        }
        (Some((a, other)), _) => {
            c.fail(
                a.span(),
                &format!("{key}.client_auth"),
                format!("unknown value `{other}`; expected none, optional or required"),
            );
            ClientAuth::None
        }
    };
    let client_subject_header = match &cfg.client_subject_header {
        None => HeaderName::from_static("x-client-subject"),
        Some(h) => match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                c.fail(
                    h.span(),
                    &format!("{key}.client_subject_header"),
                    format!("invalid header name `{}`", h.get_ref()),
                );
                HeaderName::from_static("x-client-subject")
            }
        },
    };
    Some(Tls {
        listen,
        certificates,
        tls13_only,
        alpn,
        client_auth,
        client_subject_header,
        redirect_http: cfg.redirect_http.unwrap_or(false),
        watch_certificates: cfg.watch_certificates.unwrap_or(true),
    })
}

pub(super) fn upstream(c: &mut Checker, t: &Spanned<UpstreamTlsConfig>, key: &str) -> UpstreamTls {
    let cfg = t.get_ref();
    let base = c.base_dir();
    let ca = cfg
        .ca
        .as_ref()
        .map(|ca| readable(c, &base, ca, &format!("{key}.ca")));
    let server_name = cfg.server_name.as_ref().and_then(|n| {
        let ok = !n.get_ref().is_empty()
            && n.get_ref()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ".-:[]".contains(ch));
        if !ok {
            c.fail(
                n.span(),
                &format!("{key}.server_name"),
                format!("`{}` is not a host name or IP address", n.get_ref()),
            );
        }
        ok.then(|| n.get_ref().to_ascii_lowercase())
    });
    let client_cert = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(k)) => Some((
            readable(c, &base, cert, &format!("{key}.client_cert")),
            readable(c, &base, k, &format!("{key}.client_key")),
        )),
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => {
            c.fail(x.span(), key, "client_cert and client_key go together");
            None
        }
    };
    let insecure_skip_verify = cfg.insecure_skip_verify.unwrap_or(false);
    if insecure_skip_verify {
        if let Some(ca) = &cfg.ca {
            c.fail(
                ca.span(),
                &format!("{key}.ca"),
                "a CA is never consulted with insecure_skip_verify = true; remove one of them",
            );
        }
    }
    UpstreamTls {
        ca,
        server_name,
        client_cert,
        insecure_skip_verify,
        location: c.at(&t.span()),
    }
}
