//! Helpers shared by the validation test files: parse a file expecting errors or success.

#![allow(dead_code)]

use sluice_config::Config;

/// The error lines for `src`, which must not validate.
pub fn errors(src: &str) -> Vec<String> {
    match sluice_config::parse(src, "test.toml") {
        Ok(_) => panic!("expected errors, but the file validated:\n{src}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// The configuration for `src`, which must validate.
pub fn config(src: &str) -> Config {
    match sluice_config::parse(src, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid file, got:\n{e}"),
    }
}
