//! The value decoders: plain JSON, MessagePack, LZ4 and the tagged envelope, through
//! `Encoding::decode` exactly as a read from Redis runs it.

use ormcache::__fuzz::{Encoding, unwrap_tagged, wrap_tagged};
use ormcache::{Codec, Compression};

use crate::doc::{Doc, doc, string};
use crate::rng::mutate;
use crate::{Check, Rng, Target, ensure, show};

/// JSON: round trip, truncation, trailing bytes, mutation.
pub const JSON: Target = Target {
    name: "json",
    about: "plain JSON values: decode(encode(x)) == x, truncated or trailing bytes are errors, mutated bytes never panic",
    case: json_case,
};

/// MessagePack, the same properties.
pub const MSGPACK: Target = Target {
    name: "msgpack",
    about: "MessagePack values (0x01 header): the same properties as json",
    case: msgpack_case,
};

/// LZ4-compressed values of either codec.
pub const LZ4: Target = Target {
    name: "lz4",
    about: "LZ4 blocks (0x02 header) over JSON and MessagePack: round trip, truncation, a changed length header is an error or the same value, mutated blocks never panic",
    case: lz4_case,
};

/// The tagged-entry envelope.
pub const TAGGED: Target = Target {
    name: "tagged",
    about: "the tag envelope (0x03 header): unwrap(wrap(tags, tokens, v)) round trips, truncation is an error, mutated envelopes never panic",
    case: tagged_case,
};

/// Bytes that can follow a complete value and must make it an error (no JSON
/// whitespace among them).
const TRAILING: &[u8] = b"x}]0,\"\x00\x01\xc0\xff";

fn encoding(codec: Codec, rng: &mut Rng) -> Encoding {
    let enc = Encoding::new(codec);
    if rng.one_in(8) {
        // A small limit: the refusal paths on write and on read.
        enc.max_value_bytes(rng.below(512))
    } else {
        enc
    }
}

/// Decoding never panics, whatever the target type.
fn decode_any(enc: &Encoding, bytes: &[u8]) {
    let _ = enc.decode::<Doc>(bytes);
    let _ = enc.decode::<serde_json::Value>(bytes);
    let _ = enc.decode::<Option<String>>(bytes);
    let _ = enc.decode::<Vec<u64>>(bytes);
}

/// The properties every codec shares, on `bytes`, the encoding of `value`.
fn check_encoded(enc: &Encoding, value: &Doc, bytes: &[u8], rng: &mut Rng, lz4: bool) -> Check {
    let back = enc.decode::<Doc>(bytes);
    ensure(back.as_ref().is_ok_and(|b| b == value), || {
        format!("round trip failed ({back:?}) for {}", show(bytes))
    })?;
    // Every strict prefix is an error (a document is an object, never a prefix of
    // another value).
    for _ in 0..3 {
        let cut = rng.below(bytes.len());
        let r = enc.decode::<Doc>(&bytes[..cut]);
        ensure(r.is_err(), || {
            format!(
                "prefix of {cut} bytes decoded to {r:?}: {}",
                show(&bytes[..cut])
            )
        })?;
    }
    // Bytes after the value: an error, or (inside an LZ4 block, where they may be
    // read as an empty sequence) the same value, never another.
    let mut longer = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        longer.push(*rng.pick(TRAILING));
    }
    let r = enc.decode::<Doc>(&longer);
    ensure(
        r.is_err() || (lz4 && r.as_ref().is_ok_and(|v| v == value)),
        || format!("trailing bytes decoded to {r:?}: {}", show(&longer)),
    )?;
    // Mutations never panic.
    for _ in 0..4 {
        let mut m = bytes.to_vec();
        mutate(rng, &mut m);
        decode_any(enc, &m);
    }
    Ok(())
}

fn codec_case(rng: &mut Rng, codec: Codec) -> Check {
    let enc = encoding(codec, rng);
    let value = doc(rng, 2);
    let bytes = match enc.encode(&value) {
        Ok(b) => b,
        Err(e) if e.kind() == ormcache::ErrorKind::ValueTooLarge => {
            // Refused on write: the read of the full-size bytes is refused too.
            let full = Encoding::new(codec)
                .encode(&value)
                .map_err(|e| e.to_string())?;
            let r = enc.decode::<Doc>(&full);
            return ensure(
                r.as_ref()
                    .is_err_and(|e| e.kind() == ormcache::ErrorKind::ValueTooLarge),
                || format!("over-limit value read back as {r:?}"),
            );
        }
        Err(e) => return Err(format!("encoding a valid document failed: {e}")),
    };
    match codec {
        Codec::Json => ensure(
            bytes == serde_json::to_vec(&value).unwrap_or_default(),
            || "JSON is not the plain serde_json text".into(),
        )?,
        _ => ensure(bytes.first() == Some(&0x01), || {
            "MessagePack without its header".into()
        })?,
    }
    check_encoded(&enc, &value, &bytes, rng, false)?;
    // Raw bytes behind each header, and text that looks like JSON.
    let mut junk: Vec<u8> = vec![*rng.pick(&[0x01, 0x02, 0x03, b'{', b'[', b'"', b'-'])];
    junk.extend((0..rng.len(64)).map(|_| rng.byte()));
    decode_any(&enc, &junk);
    Ok(())
}

fn json_case(rng: &mut Rng) -> Check {
    codec_case(rng, Codec::Json)
}

fn msgpack_case(rng: &mut Rng) -> Check {
    codec_case(rng, Codec::MessagePack)
}

fn lz4_case(rng: &mut Rng) -> Check {
    let codec = *rng.pick(&[Codec::Json, Codec::MessagePack]);
    let min_bytes = rng.below(64);
    let enc = Encoding::new(codec).compression(Compression::Lz4 { min_bytes });
    let mut value = doc(rng, 2);
    if rng.one_in(2) {
        // Compressible.
        value.name = value.name.repeat(1 + rng.below(40));
    }
    let bytes = enc.encode(&value).map_err(|e| format!("encode: {e}"))?;
    let plain = Encoding::new(codec)
        .encode(&value)
        .map_err(|e| format!("encode: {e}"))?;
    if bytes.first() != Some(&0x02) {
        // Compression did not pay: stored as the plain codec writes it.
        return ensure(bytes == plain, || {
            "uncompressed value differs from the plain encoding".into()
        });
    }
    ensure(
        plain.len() >= min_bytes && bytes.len() < plain.len(),
        || {
            format!(
                "compressed {} bytes into {} with min_bytes {min_bytes}",
                plain.len(),
                bytes.len()
            )
        },
    )?;
    check_encoded(&enc, &value, &bytes, rng, true)?;
    // A different length in the header: an error or the same value.
    let mut other = bytes.clone();
    let declared = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let new_len = match rng.below(4) {
        0 => declared.wrapping_add(1),
        1 => declared.wrapping_sub(1),
        2 => rng.next_u64() as u32 % (declared.saturating_mul(2).max(1)),
        _ => rng.next_u64() as u32,
    };
    other[1..5].copy_from_slice(&new_len.to_le_bytes());
    let r = enc.decode::<Doc>(&other);
    ensure(r.is_err() || r.as_ref().is_ok_and(|v| *v == value), || {
        format!("length header {declared} -> {new_len} decoded to another value {r:?}")
    })?;
    // A block that declares a large size (now and then the limit itself, which
    // costs an allocation of that size) with a tiny body: an error, never a value.
    let declared: u32 = if rng.one_in(64) {
        8 * 1024 * 1024
    } else {
        1 << (10 + rng.below(8))
    };
    let mut bomb = vec![0x02];
    bomb.extend_from_slice(&declared.to_le_bytes());
    bomb.extend((0..rng.len(16)).map(|_| rng.byte()));
    let r = enc.decode::<serde_json::Value>(&bomb);
    ensure(r.is_err(), || {
        format!("a {declared}-byte LZ4 claim decoded to {r:?}")
    })?;
    Ok(())
}

fn tagged_case(rng: &mut Rng) -> Check {
    let codec = *rng.pick(&[Codec::Json, Codec::MessagePack]);
    let compression = if rng.one_in(2) {
        Compression::Lz4 { min_bytes: 0 }
    } else {
        Compression::None
    };
    let enc = Encoding::new(codec).compression(compression);
    let value = doc(rng, 1);
    let inner = enc.encode(&value).map_err(|e| format!("encode: {e}"))?;
    // Within what the caches accept: up to 254 tags of 1 to 1024 bytes (the
    // namespace stamp, named "", is the 255th).
    let n = if rng.one_in(50) {
        200 + rng.below(55)
    } else {
        rng.len(8)
    };
    let mut tags: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut t = string(rng, 12);
        if t.is_empty() || rng.one_in(20) {
            t.push('x');
        }
        while t.len() > 1024 {
            t.pop();
        }
        tags.push(t);
    }
    if rng.one_in(4) {
        tags.insert(0, String::new()); // the namespace stamp
    }
    let tokens: Vec<u64> = tags.iter().map(|_| rng.edgy_u64()).collect();
    let wrapped = wrap_tagged(&tags, &tokens, &inner);
    let expected: Vec<(String, u64)> = tags.iter().cloned().zip(tokens.iter().copied()).collect();
    match unwrap_tagged(&wrapped) {
        Ok(Some((stamps, rest))) => {
            ensure(stamps == expected, || {
                format!("stamps {stamps:?} != {expected:?}")
            })?;
            ensure(rest == inner, || "inner value changed".into())?;
        }
        other => return Err(format!("unwrap of a fresh envelope gave {other:?}")),
    }
    check_encoded(
        &enc,
        &value,
        &wrapped,
        rng,
        compression != Compression::None,
    )?;
    // Prefixes that cut the envelope itself are errors of unwrap, not values.
    let header = wrapped.len() - inner.len();
    let cut = rng.below(header);
    let r = unwrap_tagged(&wrapped[..cut]);
    ensure(cut == 0 || r.is_err(), || {
        format!("envelope cut at {cut} unwrapped to {r:?}")
    })?;
    // Mutated envelopes: unwrap and decode never panic; an envelope inside an
    // envelope is an error.
    for _ in 0..4 {
        let mut m = wrapped.clone();
        mutate(rng, &mut m);
        let _ = unwrap_tagged(&m);
        decode_any(&enc, &m);
    }
    let nested = wrap_tagged(&tags, &tokens, &wrapped);
    let r = enc.decode::<Doc>(&nested);
    ensure(r.is_err(), || format!("nested envelope decoded to {r:?}"))?;
    // Outside what the caches accept: more than 255 tags or a tag over 64 KiB.
    // Unwrapping must not panic; the caches refuse such tags before wrapping.
    if rng.one_in(200) {
        let many: Vec<String> = (0..256 + rng.below(8)).map(|i| i.to_string()).collect();
        let long = vec!["é".repeat(40_000)];
        for t in [many, long] {
            let toks: Vec<u64> = t.iter().map(|_| rng.next_u64()).collect();
            let w = wrap_tagged(&t, &toks, &inner);
            let _ = unwrap_tagged(&w);
            decode_any(&enc, &w);
        }
    }
    Ok(())
}
