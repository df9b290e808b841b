//! The L1's glob matcher against a reference: a direct recursive reading of the
//! Redis `KEYS`/`SCAN MATCH` rules (slow, exponential in stars, obviously right on
//! small inputs), plus `escape_glob`'s promise and hostile sizes.

use ormcache::__fuzz::{Glob, escape_glob};

use crate::{Check, Rng, Target, ensure, show};

/// The glob matcher.
pub const TARGET: Target = Target {
    name: "glob",
    about: "Redis glob matching against a reference matcher; escape_glob matches exactly itself; long patterns and keys never panic",
    case,
};

/// Redis's rules, one pattern byte at a time. `p` and `s` are what is left of the
/// pattern and the string; reading past the end of the pattern sees a NUL, as the
/// C code sees its terminator.
pub fn reference(p: &[u8], s: &[u8]) -> bool {
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    let (mut pi, mut si) = (0usize, 0usize);
    while pi < p.len() && si < s.len() {
        match p[pi] {
            b'*' => {
                while pi + 1 < p.len() && p[pi + 1] == b'*' {
                    pi += 1;
                }
                if pi + 1 == p.len() {
                    return true;
                }
                while si < s.len() {
                    if reference(&p[pi + 1..], &s[si..]) {
                        return true;
                    }
                    si += 1;
                }
                return false;
            }
            b'?' => si += 1,
            b'[' => {
                pi += 1;
                let not = at(pi) == b'^';
                if not {
                    pi += 1;
                }
                let c = s[si] as i8;
                let mut hit = false;
                loop {
                    let left = p.len().saturating_sub(pi);
                    if at(pi) == b'\\' && left >= 2 {
                        pi += 1;
                        hit |= p[pi] == s[si];
                    } else if at(pi) == b']' {
                        break;
                    } else if left == 0 {
                        pi -= 1;
                        break;
                    } else if left >= 3 && at(pi + 1) == b'-' {
                        let (a, b) = (p[pi] as i8, p[pi + 2] as i8);
                        let (lo, hi) = if a > b { (b, a) } else { (a, b) };
                        hit |= lo <= c && c <= hi;
                        pi += 2;
                    } else {
                        hit |= p[pi] == s[si];
                    }
                    pi += 1;
                }
                if hit == not {
                    return false;
                }
                si += 1;
            }
            b'\\' if pi + 1 < p.len() => {
                pi += 1;
                if p[pi] != s[si] {
                    return false;
                }
                si += 1;
            }
            b => {
                if b != s[si] {
                    return false;
                }
                si += 1;
            }
        }
        pi += 1;
        if si == s.len() {
            while at(pi) == b'*' {
                pi += 1;
            }
            break;
        }
    }
    pi >= p.len() && si == s.len()
}

const PATTERN_BYTES: &[u8] = b"ab*?[]^-\\:\x80\xe9\xff";
const KEY_BYTES: &[u8] = b"ab]-\\*:[^\x80\xe9\xff";

fn bytes_from(rng: &mut Rng, alphabet: &[u8], max: usize) -> Vec<u8> {
    (0..rng.len(max)).map(|_| *rng.pick(alphabet)).collect()
}

fn case(rng: &mut Rng) -> Check {
    // Small inputs: exactly the reference's answer, on raw bytes and, when both
    // are UTF-8, on `&str`.
    for _ in 0..8 {
        let p = bytes_from(rng, PATTERN_BYTES, 10);
        let Ok(ps) = std::str::from_utf8(&p) else {
            continue;
        };
        let glob = Glob::new(ps);
        for _ in 0..8 {
            let s = bytes_from(rng, KEY_BYTES, 10);
            let want = reference(&p, &s);
            let got = glob.matches(&s);
            ensure(got == want, || {
                format!(
                    "pattern {:?} key {:?}: matcher says {got}, reference {want}",
                    String::from_utf8_lossy(&p),
                    show(&s)
                )
            })?;
        }
        if let Some(lit) = glob.literal() {
            ensure(glob.matches(lit) && reference(&p, lit), || {
                format!(
                    "pattern {ps:?} does not match its own literal {}",
                    show(lit)
                )
            })?;
        }
    }
    // escape_glob: the escaped input matches exactly the input.
    let input = crate::doc::string(rng, 8);
    let other = if rng.one_in(2) {
        let mut o = input.clone();
        o.push_str(&crate::doc::string(rng, 2));
        o
    } else {
        crate::doc::string(rng, 8)
    };
    let escaped = Glob::new(&escape_glob(&input));
    ensure(
        input.is_empty() || escaped.matches(input.as_bytes()),
        || format!("escape_glob({input:?}) does not match itself"),
    )?;
    ensure(other == input || !escaped.matches(other.as_bytes()), || {
        format!("escape_glob({input:?}) matches {other:?}")
    })?;
    ensure(
        reference(escape_glob(&input).as_bytes(), input.as_bytes()) || input.is_empty(),
        || format!("the reference disagrees on escape_glob({input:?})"),
    )?;
    // Hostile sizes: many stars, long classes, long keys; no panic, and a linear
    // matcher answers quickly (a hang shows as a stalled run).
    if rng.one_in(16) {
        let n = rng.below(4096);
        let mut p = Vec::with_capacity(n);
        for _ in 0..n {
            p.push(*rng.pick(PATTERN_BYTES));
        }
        let p = String::from_utf8_lossy(&p).into_owned();
        let key: Vec<u8> = (0..rng.below(1 << 14))
            .map(|_| *rng.pick(KEY_BYTES))
            .collect();
        let _ = Glob::new(&p).matches(&key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reference;

    #[test]
    fn reference_knows_the_quirks() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"x", true),
            (b"*", b"", false),
            (b"", b"", true),
            (b"a*", b"a", true),
            (b"[abc", b"b", true),
            (b"[", b"x", false),
            (b"[^", b"x", true),
            (b"[a-]", b"]", true),
            (b"a\\", b"a\\", true),
            (b"h\\*llo", b"h*llo", true),
            (b"*a*b*c", b"xxaxxbxxcx", false),
            (b"[\\]]", b"]", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                reference(p, s),
                *want,
                "{:?} {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(s)
            );
        }
    }
}
