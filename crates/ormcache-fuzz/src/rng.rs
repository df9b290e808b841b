//! A fast seeded PRNG (SplitMix64) and the byte mutator built on it.

/// SplitMix64: tiny, fast, and every seed gives a full-period stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A length biased towards small values, at most `max`.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.below(max.min(4) + 1),
            1 | 2 => self.below(max.min(32) + 1),
            _ => self.below(max + 1),
        }
    }

    /// An integer biased towards the edges of its range.
    pub fn edgy_u64(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX - self.below(3) as u64,
            2 => self.below(3) as u64 + 1,
            3 => 1 << self.below(64),
            4 => i64::MAX as u64 + self.below(3) as u64 - 1,
            5 => u64::from(u32::MAX) + self.below(3) as u64 - 1,
            _ => self.next_u64(),
        }
    }
}

/// Bytes that mean something to one of the decoders: codec headers, JSON
/// punctuation, MessagePack markers, UTF-8 lead and continuation bytes.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xca, 0xcb, 0xcf, 0xd3,
    0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xf0, 0xf4, 0xff, b'"', b'\\', b'{', b'}', b'[', b']',
    b':', b',', b'-', b'0', b'e', b'u', b'n', b't', b'f', b' ',
];

/// Lengths and counts worth writing over a 4-byte field.
const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    u32::MAX,
    8 * 1024 * 1024,
    8 * 1024 * 1024 + 1,
];

/// Applies one to four random mutations to `data`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = *rng.pick(INTERESTING);
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let b = if rng.one_in(2) {
                        *rng.pick(INTERESTING)
                    } else {
                        rng.byte()
                    };
                    data.insert(i, b);
                }
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                data.truncate(rng.below(len));
            }
            6 if len > 1 => {
                // Duplicate a slice somewhere else.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let piece = data[i..i + n].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, piece);
            }
            7 if len >= 4 => {
                let i = rng.below(len - 3);
                let v = *rng.pick(INTERESTING_U32);
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            8 if len >= 2 => {
                let i = rng.below(len - 1);
                let v = *rng.pick(INTERESTING_U32) as u16;
                let bytes = if rng.one_in(2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                data[i..i + 2].copy_from_slice(&bytes);
            }
            _ => {
                let i = rng.below(len + 1);
                let n = rng.len(64);
                let junk: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(i..i, junk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_spread() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
