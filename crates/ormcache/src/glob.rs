//! Redis glob patterns (`KEYS`/`SCAN MATCH` semantics) for the L1's pattern clears,
//! plus [`escape_glob`] for matching user input literally.
//!
//! The matcher is internal: the caches take patterns as strings and apply them
//! under their prefix (and tenant), so a caller never needs a compiled pattern. It
//! is reachable by the fuzz targets (feature `fuzzing`) and the test that checks it
//! against a real `redis-server`.
//!
//! The pattern is compiled once into tokens that mirror how Redis's
//! `stringmatchlen` walks a pattern (including its quirks: an unterminated `[` class
//! runs to the end of the pattern, `[a-]` treats `]` as the end of a range, a trailing
//! `\` is a literal backslash, `*` does not match an empty string on its own). Matching
//! is iterative, with backtracking only to the last `*`, so it needs no stack and runs
//! in O(pattern × key) in the worst case: a 1 MiB key or a pattern of many stars is
//! safe. The behaviour is checked against a real `redis-server` in the test suite.
//! Ranges compare bytes as signed `char`s, as Redis does on x86-64 Linux (so `[é-?]`
//! is a range from a negative byte to `?`); patterns made of ASCII are unaffected.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
enum Token {
    Star,
    /// A single byte from this set (a literal, `?`, or a class).
    Byte(Box<[u64; 4]>),
}

fn set_has(set: &[u64; 4], b: u8) -> bool {
    set[(b >> 6) as usize] & (1u64 << (b & 63)) != 0
}

fn set_add(set: &mut [u64; 4], b: u8) {
    set[(b >> 6) as usize] |= 1u64 << (b & 63);
}

/// A compiled Redis glob pattern: `GlobPattern::new("user:[0-9]*:profile")` matches
/// `user:42:profile`, not `user:x:profile`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct GlobPattern {
    source: String,
    tokens: Vec<Token>,
    literal: Option<Vec<u8>>,
}

impl fmt::Debug for GlobPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GlobPattern").field(&self.source).finish()
    }
}

impl GlobPattern {
    /// Compiles a pattern. Every string is a valid pattern (as in Redis).
    pub(crate) fn new(pattern: &str) -> Self {
        let tokens = compile(pattern.as_bytes());
        let literal = if tokens.iter().all(|t| matches!(t, Token::Byte(set) if set.iter().map(|w| w.count_ones()).sum::<u32>() == 1)) {
            Some(
                tokens
                    .iter()
                    .filter_map(|t| match t {
                        Token::Byte(set) => (0..=255u8).find(|b| set_has(set, *b)),
                        Token::Star => None,
                    })
                    .collect(),
            )
        } else {
            None
        };
        Self {
            source: pattern.to_owned(),
            tokens,
            literal,
        }
    }

    /// The pattern matches only one string (it has no wildcard): that string.
    pub(crate) fn literal(&self) -> Option<&[u8]> {
        self.literal.as_deref()
    }

    /// Whether `key` matches, with Redis semantics.
    pub(crate) fn matches(&self, key: &str) -> bool {
        self.matches_bytes(key.as_bytes())
    }

    /// Whether `key` matches, with Redis semantics, on raw bytes.
    pub(crate) fn matches_bytes(&self, s: &[u8]) -> bool {
        if let Some(lit) = &self.literal {
            return lit.as_slice() == s;
        }
        if s.is_empty() {
            // Redis's matcher never enters its loop for an empty string.
            return self.tokens.is_empty();
        }
        let toks = &self.tokens;
        let (mut t, mut i) = (0usize, 0usize);
        // Where to resume after the last star: (token after the star, string index).
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if i == s.len() {
                // The rest of the pattern must be stars only.
                return toks[t..].iter().all(|x| *x == Token::Star);
            }
            match toks.get(t) {
                Some(Token::Star) => {
                    t += 1;
                    if t == toks.len() {
                        return true;
                    }
                    resume = Some((t, i));
                    continue;
                }
                Some(Token::Byte(set)) if set_has(set, s[i]) => {
                    t += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((rt, ri)) => {
                    // Let the last star swallow one more byte.
                    resume = Some((rt, ri + 1));
                    t = rt;
                    i = ri + 1;
                }
                None => return false,
            }
        }
    }
}

/// Mirrors the pattern walk of Redis's `stringmatchlen` (src/util.c); where that code
/// reads past the pattern it sees the NUL terminator, here `None`.
fn compile(p: &[u8]) -> Vec<Token> {
    let at = |i: usize| p.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0usize;
    while i < p.len() {
        match p[i] {
            b'*' => {
                while at(i + 1) == Some(b'*') {
                    i += 1;
                }
                tokens.push(Token::Star);
            }
            b'?' => tokens.push(Token::Byte(Box::new([u64::MAX; 4]))),
            b'[' => {
                i += 1;
                let not = at(i) == Some(b'^');
                if not {
                    i += 1;
                }
                let mut set = [0u64; 4];
                loop {
                    let remaining = p.len().saturating_sub(i);
                    if at(i) == Some(b'\\') && remaining >= 2 {
                        i += 1;
                        set_add(&mut set, p[i]);
                    } else if at(i) == Some(b']') {
                        break;
                    } else if remaining == 0 {
                        // Unterminated class: it ends with the pattern.
                        i -= 1;
                        break;
                    } else if remaining >= 3 && at(i + 1) == Some(b'-') {
                        // Redis compares `char`s, which are signed on the x86-64
                        // and most other Linux builds: bytes >= 0x80 sort below ASCII.
                        let (mut lo, mut hi) = (p[i] as i8, p[i + 2] as i8);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        for b in lo..=hi {
                            set_add(&mut set, b as u8);
                        }
                        i += 2;
                    } else {
                        set_add(&mut set, p[i]);
                    }
                    i += 1;
                }
                if not {
                    for w in &mut set {
                        *w = !*w;
                    }
                }
                tokens.push(Token::Byte(Box::new(set)));
            }
            c => {
                let c = if c == b'\\' && i + 1 < p.len() {
                    i += 1;
                    p[i]
                } else {
                    c
                };
                let mut set = [0u64; 4];
                set_add(&mut set, c);
                tokens.push(Token::Byte(Box::new(set)));
            }
        }
        i += 1;
    }
    tokens
}

/// Escapes `input` so that, used in a pattern, it matches itself literally: build
/// [`Cache::clear_pattern`](crate::Cache::clear_pattern) patterns from user input
/// with it.
///
/// ```
/// use std::time::Duration;
/// use ormcache::{Cache, QueryCache, escape_glob};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let cache = QueryCache::new(100, Duration::from_secs(60)).unwrap();
/// Cache::set(&cache, "search:a*b?[c]:page1", 1, None).await.unwrap();
/// Cache::set(&cache, "search:aXXb?[c]:page1", 2, None).await.unwrap();
///
/// let user_input = "a*b?[c]";
/// let pattern = format!("search:{}:*", escape_glob(user_input));
/// assert_eq!(Cache::clear_pattern(&cache, &pattern).await.unwrap(), 1);
/// assert!(Cache::exists(&cache, "search:aXXb?[c]:page1").await.unwrap());
/// # });
/// ```
pub fn escape_glob(input: &str) -> String {
    let mut out = String::with_capacity(input.len() + 8);
    for c in input.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob_match(pattern: &str, key: &str) -> bool {
        GlobPattern::new(pattern).matches(key)
    }

    #[test]
    fn compiled_patterns() {
        let p = GlobPattern::new("user:[0-9]*:profile");
        assert!(p.matches("user:42:profile"));
        assert!(!p.matches("user:x:profile"));
        assert!(GlobPattern::new("h\\*llo").matches("h*llo"));
        assert_eq!(GlobPattern::new("a\\*b").literal(), Some(&b"a*b"[..]));
        assert_eq!(GlobPattern::new("a*").literal(), None);
    }

    #[test]
    fn basics() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", false),
            ("", "", true),
            ("", "a", false),
            ("user:*", "user:", true),
            ("user:*", "user:1", true),
            ("user:?", "user:1", true),
            ("user:?", "user:12", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("a\\", "a\\", true),
            ("[abc", "b", true),
            ("[", "x", false),
            ("[^", "x", true),
            ("[a-]", "]", true),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxbxxcx", false),
            ("a*", "a", true),
            ("**a", "ba", true),
            ("[\\]]", "]", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p, s), *want, "pattern {p:?} key {s:?}");
        }
    }

    #[test]
    fn escape_round_trips() {
        for s in ["plain", "a*b", "?", "[x]", "\\", "a-b^c", "ünïcödé *"] {
            assert!(glob_match(&escape_glob(s), s), "{s}");
            assert!(!glob_match(&escape_glob(s), &format!("{s}x")), "{s}");
        }
    }

    #[test]
    fn long_inputs_are_fast() {
        let key = "a".repeat(1 << 20);
        let pattern = "*a".repeat(2000) + "b";
        assert!(!glob_match(&pattern, &key));
        assert!(glob_match("*a", &key));
    }
}
