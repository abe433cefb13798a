//! hardening tests (to be written).
