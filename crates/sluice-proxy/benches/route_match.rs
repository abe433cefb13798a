//! Route matching among 10,000 routes: static, parameter and catch-all lookups, with hosts.

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use sluice_proxy::router::{path::normalize, Router};
use std::hint::black_box;

fn config(routes: usize) -> sluice_config::Config {
    let mut src = String::from("[clusters.c]\ntargets = [\"http://127.0.0.1:1\"]\n");
    for i in 0..routes {
        let path = match i % 3 {
            0 => format!("/api/v{}/items{i}/{{id}}", i % 7),
            1 => format!("/static/s{i}/index.html"),
            _ => format!("/files{i}/{{*rest}}"),
        };
        let hosts = if i % 10 == 0 {
            format!("hosts = [\"h{i}.example.com\", \"*.w{i}.example.com\"]\n")
        } else {
            String::new()
        };
        src.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath = \"{path}\"\n{hosts}cluster = \"c\"\n"
        ));
    }
    sluice_config::parse(&src, "bench.toml").expect("bench config is valid")
}

fn route_match(c: &mut Criterion) {
    let config = config(10_000);
    let router = Router::build(&config).expect("router builds");
    let get = Method::GET;
    c.bench_function("10k routes: static", |b| {
        b.iter(|| router.lookup(black_box(None), &get, black_box("/static/s4999/index.html")))
    });
    c.bench_function("10k routes: param", |b| {
        b.iter(|| router.lookup(black_box(None), &get, black_box("/api/v3/items5001/42")))
    });
    c.bench_function("10k routes: catch-all", |b| {
        b.iter(|| router.lookup(black_box(None), &get, black_box("/files9998/a/b/c.txt")))
    });
    c.bench_function("10k routes: miss", |b| {
        b.iter(|| router.lookup(black_box(None), &get, black_box("/nothing/here")))
    });
    c.bench_function("10k routes: wildcard host", |b| {
        b.iter(|| {
            router.lookup(
                black_box(Some("a.w4000.example.com")),
                &get,
                black_box("/static/s4000/index.html"),
            )
        })
    });
    c.bench_function("normalise: clean path", |b| {
        b.iter(|| normalize(black_box("/api/v3/items5001/42")))
    });
    c.bench_function("normalise: dirty path", |b| {
        b.iter(|| normalize(black_box("/api//v3/./items5001/%7euser/../42")))
    });
    c.bench_function("build 10k-route router", |b| {
        b.iter(|| Router::build(black_box(&config)))
    });
}

criterion_group!(benches, route_match);
criterion_main!(benches);
