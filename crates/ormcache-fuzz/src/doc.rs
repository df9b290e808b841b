//! A value type that exercises every serde shape the codecs meet (structs, enums of
//! each kind, options, maps, bytes, chars, nested lists, recursion), and its
//! generator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Rng;

/// A cached row, as varied as a real one can be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Doc {
    pub id: u64,
    pub delta: i64,
    pub small: i8,
    pub name: String,
    pub ch: char,
    pub flag: bool,
    pub score: Option<f64>,
    pub blob: Vec<u8>,
    pub tags: Vec<String>,
    pub kind: Kind,
    pub attrs: BTreeMap<String, u32>,
    pub pair: (u16, Option<String>),
    pub unit: (),
    pub children: Vec<Doc>,
}

/// One variant of each serde enum shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Kind {
    Unit,
    Newtype(u32),
    Tuple(i16, bool),
    Struct { label: String, weight: f32 },
}

/// Pieces strings are built from: escapes, quotes, multi-byte UTF-8, controls,
/// separators and the reserved names of the key layout.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "0",
    " ",
    "\"",
    "\\",
    "/",
    "\n",
    "\t",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "é",
    "ß",
    "€",
    "𝄞",
    "\u{fffd}",
    "\u{feff}",
    "\u{2028}",
    ":",
    "*",
    "?",
    "[",
    "]",
    "{",
    "}",
    "__oc",
    "stats",
    "null",
    "true",
    "-",
    "_",
    "\\u0000",
    "\u{10ffff}",
];

/// A string of up to `max` pieces.
pub fn string(rng: &mut Rng, max: usize) -> String {
    let n = rng.len(max);
    let mut s = String::new();
    for _ in 0..n {
        if rng.one_in(4) {
            s.push(char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x'));
        } else {
            let piece: &&str = rng.pick(PIECES);
            s.push_str(piece);
        }
    }
    s
}

/// A float that JSON can carry exactly (finite, short decimal form): JSON has no
/// NaN or infinity, and the Python package's peers read the same text.
fn float(rng: &mut Rng) -> f64 {
    match rng.below(5) {
        0 => 0.0,
        1 => -0.5,
        2 => f64::from(rng.next_u64() as u32) / 1024.0,
        3 => (rng.next_u64() as i64 >> 12) as f64,
        _ => f64::from(rng.next_u64() as i32) * 0.25,
    }
}

/// A random document, nested at most `depth` levels.
pub fn doc(rng: &mut Rng, depth: usize) -> Doc {
    let children = if depth == 0 {
        Vec::new()
    } else {
        (0..rng.len(3)).map(|_| doc(rng, depth - 1)).collect()
    };
    Doc {
        id: rng.edgy_u64(),
        delta: rng.edgy_u64() as i64,
        small: rng.byte() as i8,
        name: string(rng, 12),
        ch: char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
        flag: rng.one_in(2),
        score: (!rng.one_in(3)).then(|| float(rng)),
        blob: (0..rng.len(40)).map(|_| rng.byte()).collect(),
        tags: (0..rng.len(5)).map(|_| string(rng, 4)).collect(),
        kind: match rng.below(4) {
            0 => Kind::Unit,
            1 => Kind::Newtype(rng.next_u64() as u32),
            2 => Kind::Tuple(rng.next_u64() as i16, rng.one_in(2)),
            _ => Kind::Struct {
                label: string(rng, 3),
                weight: f32::from(rng.next_u64() as u16) / 8.0,
            },
        },
        attrs: (0..rng.len(4))
            .map(|_| (string(rng, 3), rng.next_u64() as u32))
            .collect(),
        pair: (rng.next_u64() as u16, rng.one_in(2).then(|| string(rng, 3))),
        unit: (),
        children,
    }
}
