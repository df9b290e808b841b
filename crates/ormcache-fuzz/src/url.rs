//! Redis URLs: every form a deployment may write, with a password, through every
//! text the library shows a person (`Debug`, the redacted address, the error of a
//! bad URL). The password must never appear; nothing may panic.
//!
//! The library is reached through one adapter, [`surface`], so that pointing this
//! target at another URL parser is a one-line change.

use crate::rng::mutate;
use crate::{Check, Rng, Target};

/// URL parsing and redaction.
pub const TARGET: Target = Target {
    name: "url",
    about: "Redis URLs of every form with a password: it never appears in Debug, the redacted URL or a parse error; mutated URLs never panic",
    case,
};

/// Every text the library derives from `url` for people to read.
pub fn surface(url: &str) -> Vec<String> {
    ormcache::__fuzz::url_surface(url)
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A password: a distinctive token (so that finding it in the output is a leak,
/// not a coincidence), sometimes with characters URLs treat specially.
fn password(rng: &mut Rng) -> String {
    let mut pw: String = (0..10 + rng.below(8))
        .map(|_| *rng.pick(ALNUM) as char)
        .collect();
    if rng.one_in(3) {
        let special = ["%40", "%3A", "%2F", "%25", "!", "$", "~", "-", "."][rng.below(9)];
        let at = rng.below(pw.len());
        pw.insert_str(at, special);
    }
    pw
}

fn host(rng: &mut Rng) -> &'static str {
    [
        "127.0.0.1",
        "localhost",
        "redis.internal",
        "[::1]",
        "10.0.0.7",
        "h",
    ][rng.below(6)]
}

fn port(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => String::new(),
        1 => ":6379".into(),
        2 => format!(":{}", rng.below(70_000)),
        _ => ":".into(),
    }
}

/// A URL of one of the forms a deployment writes, carrying `pw`.
fn url_with(rng: &mut Rng, pw: &str) -> String {
    let user = ["", "alice", "default", "u"][rng.below(4)];
    let scheme = [
        "redis",
        "rediss",
        "valkey",
        "valkeys",
        "redis+cluster",
        "rediss+cluster",
        "redis+sentinel",
        "REDIS",
        "Redis",
    ][rng.below(9)];
    let db = ["", "/0", "/3", "/", "/x", "/0?protocol=resp3", "?db=2"][rng.below(7)];
    let h = host(rng);
    let p = port(rng);
    match rng.below(12) {
        0..=2 => format!("{scheme}://{user}:{pw}@{h}{p}{db}"),
        // `scheme://name@host` names a user (no password): shown, like any user
        // name; the password-only form is `scheme://:pw@host`.
        3 => format!("{scheme}://:{pw}@{h}{p}{db}"),
        4 => format!("redis+unix:///run/redis.sock?pass={pw}"),
        5 => format!("unix:///tmp/redis.sock?db=1&pass={pw}&user={user}"),
        6 => format!(":{pw}@{h}{p}"),
        7 => format!("{user}:{pw}@{h}{p}"),
        8 => format!("{scheme}://{user}:{pw}@{h}{p}{db}#frag"),
        9 => format!("{scheme}://{h}{p}/0?password={pw}"),
        10 => format!("{scheme}://{user}:{pw}@{h}{p},{h}:6380"),
        _ => format!(" {scheme}://{user}:{pw}@{h}{p}{db} "),
    }
}

/// The forms in which a leaked `pw` could show.
fn spellings(pw: &str) -> Vec<String> {
    let decoded = pw
        .replace("%40", "@")
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%25", "%");
    if decoded == pw {
        vec![pw.to_owned()]
    } else {
        vec![pw.to_owned(), decoded]
    }
}

fn case(rng: &mut Rng) -> Check {
    let pw = password(rng);
    let url = url_with(rng, &pw);
    for text in surface(&url) {
        for s in spellings(&pw) {
            if text.contains(&s) {
                return Err(format!("password shown for {url:?}: {text:?}"));
            }
        }
    }
    // Mutated URLs: no panic. (The password may have been cut into a piece that
    // no longer reads as one, so only panics count here.)
    let mut bytes = url.into_bytes();
    mutate(rng, &mut bytes);
    let _ = surface(&String::from_utf8_lossy(&bytes));
    Ok(())
}
