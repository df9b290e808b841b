//! Micro-benchmarks: codecs on a ~200-byte row, key building, and the glob matcher.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ormcache::{Codec, Compression, Encoding};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
    created_at: String,
}

fn row() -> Row {
    Row {
        id: 123_456,
        name: "Ada Lovelace".into(),
        email: "ada.lovelace@example.com".into(),
        active: true,
        score: 98.25,
        tags: vec!["admin".into(), "beta".into(), "eu-west".into()],
        created_at: "2026-11-25T21:38:52Z".into(),
    }
}

fn codecs(c: &mut Criterion) {
    let row = row();
    for (name, enc) in [
        ("json", Encoding::new(Codec::Json)),
        ("msgpack", Encoding::new(Codec::MessagePack)),
        (
            "msgpack_lz4",
            Encoding::new(Codec::MessagePack).compression(Compression::Lz4 { min_bytes: 0 }),
        ),
    ] {
        let bytes = enc.encode(&row).unwrap();
        c.bench_function(
            &format!("codec/{name}/encode ({} bytes)", bytes.len()),
            |b| b.iter(|| enc.encode(black_box(&row)).unwrap()),
        );
        c.bench_function(
            &format!("codec/{name}/decode ({} bytes)", bytes.len()),
            |b| b.iter(|| enc.decode::<Row>(black_box(&bytes)).unwrap()),
        );
    }
}

fn keys(c: &mut Criterion) {
    let prefix = "myapp";
    c.bench_function("key/build user:{id}", |b| {
        b.iter(|| {
            let key = format!("user:{}", black_box(123_456u64));
            let mut full = String::with_capacity(prefix.len() + 1 + key.len());
            full.push_str(prefix);
            full.push(':');
            full.push_str(&key);
            full
        })
    });
}

/// The matcher is internal; the feature `fuzzing` reaches it.
#[cfg(feature = "fuzzing")]
fn globs(c: &mut Criterion) {
    use ormcache::__fuzz::Glob;
    let pattern = Glob::new("users:list:*:[0-9]*");
    c.bench_function("glob/compile", |b| {
        b.iter(|| Glob::new(black_box("users:list:*:[0-9]*")))
    });
    c.bench_function("glob/match hit", |b| {
        b.iter(|| pattern.matches(black_box(b"users:list:100:20")))
    });
    c.bench_function("glob/match miss", |b| {
        b.iter(|| pattern.matches(black_box(b"users:list:100:x0")))
    });
    let long_key = "a".repeat(4096);
    let stars = Glob::new("*a*a*a*b");
    c.bench_function("glob/4KiB key, failing stars", |b| {
        b.iter(|| stars.matches(black_box(long_key.as_bytes())))
    });
}

#[cfg(not(feature = "fuzzing"))]
fn globs(_: &mut Criterion) {}

criterion_group!(benches, codecs, keys, globs);
criterion_main!(benches);
