//! HTTP/2 hardening cases of HARDENING.md sent frame by frame with Python's h2 library.
