//! `codec_json` and `codec_msgpack`: `ormcache::Encoding` against the raw serde
//! crates, encode + decode.

use std::hint::black_box;

use ormcache::{Codec, Encoding};

use super::{Env, LATENCY_SAMPLES, ROUNDS, Result, Row, row};
use crate::stats::{Measured, alternate, sample_each, tight_loop};

/// Operations per codec round (about a microsecond each).
const CODEC_OPS: u64 = 200_000;

fn codec(
    encoding: Encoding,
    raw_encode: fn(&Row) -> Vec<u8>,
    raw_decode: fn(&[u8]) -> Option<Row>,
) -> Result<Measured> {
    let row = row();
    let bytes = encoding.encode(&row)?;
    let raw_bytes = raw_encode(&row);
    if encoding.decode::<Row>(&bytes)? != row || raw_decode(&raw_bytes).as_ref() != Some(&row) {
        return Err("codec: a round trip changed the row".into());
    }
    let mut ours_op = || {
        let bytes = encoding.encode(black_box(&row)).expect("encode");
        black_box(encoding.decode::<Row>(black_box(&bytes)).expect("decode"));
    };
    let mut raw_op = || {
        let bytes = raw_encode(black_box(&row));
        black_box(raw_decode(black_box(&bytes)).expect("decode"));
    };
    let (ours, baseline) = alternate(
        ROUNDS,
        || tight_loop(CODEC_OPS, &mut ours_op),
        || tight_loop(CODEC_OPS, &mut raw_op),
    );
    Ok(Measured {
        ours,
        baseline,
        ours_latency: Some(sample_each(LATENCY_SAMPLES, &mut ours_op)),
        baseline_latency: Some(sample_each(LATENCY_SAMPLES, &mut raw_op)),
        bytes: Some(bytes.len()),
        baseline_bytes: Some(raw_bytes.len()),
        ..Measured::default()
    })
}

pub(super) fn codec_json(_env: &Env) -> Result<Measured> {
    codec(
        Encoding::new(Codec::Json),
        |row| serde_json::to_vec(row).expect("encode"),
        |bytes| serde_json::from_slice(bytes).ok(),
    )
}

pub(super) fn codec_msgpack(_env: &Env) -> Result<Measured> {
    codec(
        Encoding::new(Codec::MessagePack),
        |row| rmp_serde::to_vec_named(row).expect("encode"),
        |bytes| rmp_serde::from_slice(bytes).ok(),
    )
}
