//! curl against the gateway, as users call it.
