//! The access log: one line per request in the same JSON (or human) shape as the other log lines, formatted by hand into a reused buffer and handed to the log writer, since `tracing`'s field formatting cost a fifth of a busy gateway's throughput.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The shape of the lines, as `--log-format` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Pretty,
}

type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Where lines go, set once at start by the binary. Without it (embedders, unit tests)
/// lines go through `tracing` like any event.
static SINK: OnceLock<(Style, Sink)> = OnceLock::new();

/// Sends access-log lines to `write` (one call per line, newline included).
pub fn install(style: Style, write: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = SINK.set((style, Box::new(write)));
}

/// One request's line.
#[derive(Debug)]
pub struct Line<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub upstream: &'a str,
    pub consumer: &'a str,
    pub duration_ms: f64,
    pub bytes: u64,
    pub request_id: &'a str,
    pub complete: bool,
}

/// Writes `line`, unless `SLUICE_LOG` turned `sluice::access` off.
pub fn write(line: &Line<'_>) {
    if !tracing::enabled!(target: "sluice::access", tracing::Level::INFO) {
        return;
    }
    let Some((style, sink)) = SINK.get() else {
        tracing::info!(
            target: "sluice::access",
            method = line.method,
            path = line.path,
            route = line.route,
            status = line.status,
            upstream = line.upstream,
            consumer = line.consumer,
            duration_ms = line.duration_ms,
            bytes = line.bytes,
            request_id = line.request_id,
            complete = line.complete,
        );
        return;
    };
    thread_local! {
        static BUF: RefCell<String> = RefCell::new(String::with_capacity(512));
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        format(*style, line, SystemTime::now(), &mut buf);
        sink(buf.as_bytes());
    });
}

fn format(style: Style, l: &Line<'_>, now: SystemTime, out: &mut String) {
    let (ms, status, bytes, complete) = (l.duration_ms, l.status, l.bytes, l.complete);
    match style {
        Style::Json => {
            let mut num = itoa::Buffer::new();
            out.push_str("{\"timestamp\":\"");
            timestamp(now, out);
            out.push_str("\",\"level\":\"INFO\"");
            for (key, value) in [("method", l.method), ("path", l.path), ("route", l.route)] {
                field(out, key, value);
            }
            out.push_str(",\"status\":");
            out.push_str(num.format(status));
            field(out, "upstream", l.upstream);
            field(out, "consumer", l.consumer);
            out.push_str(",\"duration_ms\":");
            if ms.is_finite() {
                out.push_str(ryu::Buffer::new().format_finite(ms));
            } else {
                out.push('0');
            }
            out.push_str(",\"bytes\":");
            out.push_str(num.format(bytes));
            field(out, "request_id", l.request_id);
            out.push_str(if complete {
                ",\"complete\":true,\"target\":\"sluice::access\"}\n"
            } else {
                ",\"complete\":false,\"target\":\"sluice::access\"}\n"
            });
        }
        Style::Pretty => {
            timestamp(now, out);
            let _ = writeln!(
                out,
                "  INFO sluice::access: method={} path={} route={} status={status} upstream={:?} consumer={:?} duration_ms={ms} bytes={bytes} request_id={:?} complete={complete}",
                l.method, l.path, l.route, l.upstream, l.consumer, l.request_id
            );
        }
    }
}

/// `,"key":"value"` with the value escaped for JSON.
fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":\"");
    // Paths, names and ids rarely hold anything to escape: then they go in whole.
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(value);
    } else {
        escape(out, value);
    }
    out.push('"');
}

fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// RFC 3339 in UTC with microseconds, like the other log lines: `2026-11-22T05:56:39.494515Z`.
/// The date and time to the second are written once per second.
fn timestamp(now: SystemTime, out: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            civil_time(secs, &mut cached.1);
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    let mut micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push('.');
    out.extend(digits.iter().map(|&d| char::from(d)));
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` after the Unix epoch.
fn civil_time(secs: u64, out: &mut String) {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            path: "/a\"b",
            route: "r\\1",
            status: 200,
            upstream: "-",
            consumer: "alice",
            duration_ms: 1.5,
            bytes: 42,
            request_id: "id\u{1}",
            complete: true,
        }
    }

    #[test]
    fn json_lines_parse_and_escape_what_needs_it() {
        let mut out = String::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_795_331_799_494_515);
        format(Style::Json, &line(), at, &mut out);
        assert!(out.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).expect("JSON");
        assert_eq!(v["timestamp"], "2026-11-22T07:16:39.494515Z");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["route"], "r\\1");
        assert_eq!(v["request_id"], "id\u{1}");
        assert_eq!(
            (v["status"].as_u64(), v["bytes"].as_u64()),
            (Some(200), Some(42))
        );
        assert_eq!(v["duration_ms"].as_f64(), Some(1.5));
        assert_eq!(v["complete"], true);
        assert_eq!(v["target"], "sluice::access");
    }

    #[test]
    fn timestamps_are_civil_dates_in_utc() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            // The same second again, written from the cache.
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
        ] {
            let mut out = String::new();
            timestamp(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            assert_eq!(out, text);
        }
        let mut out = String::new();
        timestamp(
            UNIX_EPOCH + Duration::from_micros(4_107_542_399_000_042),
            &mut out,
        );
        assert_eq!(out, "2100-02-28T23:59:59.000042Z");
    }
}
