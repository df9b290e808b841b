//! `span_disabled`: what the per-round-trip `debug` span of a `DistributedCache`
//! call costs when `debug` is filtered out, as in a service logging at `info`.
//!
//! Ours: the span exactly as `DistributedCache` opens it around a Redis round trip
//! (`ormcache.redis` with `op`, `prefix` and two empty fields), the future wrapped
//! in it, then the outcome branch, around a future that is ready at once; the
//! baseline: the same ready future without the span. A `tracing-subscriber` `fmt`
//! subscriber filtered at `info` is installed for the run (as the demo does), so
//! the span is disabled by the filter, not by the absence of a subscriber. The
//! difference in time per op is the span's cost; set it against one round trip
//! (`l2_get`'s p50, hundreds of microseconds on loopback).

use std::future::ready;
use std::hint::black_box;

use futures_util::FutureExt;
use tracing::Instrument;

use super::{Env, Result, tight_pair};
use crate::stats::Measured;

pub(super) fn span_disabled(_env: &Env) -> Result<Measured> {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    let prefix = String::from("bench");
    tracing::subscriber::with_default(subscriber, || {
        if tracing::enabled!(tracing::Level::DEBUG) {
            return Err("span_disabled: debug is enabled".into());
        }
        let ours = || {
            let span = tracing::debug_span!(
                "ormcache.redis",
                op = black_box("get"),
                prefix = %prefix,
                outcome = tracing::field::Empty,
                elapsed_us = tracing::field::Empty,
            );
            let timed = (!span.is_disabled()).then(std::time::Instant::now);
            let reply = ready(black_box(1u64))
                .instrument(span.clone())
                .now_or_never();
            if let Some(start) = timed {
                span.record("elapsed_us", start.elapsed().as_micros() as u64);
            }
            black_box(reply);
        };
        let bare = || {
            black_box(ready(black_box(1u64)).now_or_never());
        };
        Ok(tight_pair(ours, bare))
    })
}
