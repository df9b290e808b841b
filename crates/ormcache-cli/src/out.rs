//! Writing results to stdout: text for people, JSON for scripts.

use std::io::Write;
use std::time::Duration;

use ormcache::Ttl;
use serde_json::{Value, json};

/// Writes one line to stdout. A closed pipe (`ormcache watch | head`) ends the
/// program quietly; any other write error ends it with the Redis-failure code.
pub(crate) fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{s}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "ormcache: cannot write to stdout: {e}");
        std::process::exit(i32::from(crate::fail::REDIS));
    }
}

/// One JSON document on one line.
pub(crate) fn json(v: &Value) {
    line(&v.to_string());
}

/// A value for a person: one line when short, else indented and cut after
/// [`MAX_VALUE_LINES`] lines (`--json` prints it whole).
pub(crate) fn value_text(v: &Value) -> String {
    let compact = v.to_string();
    if compact.len() <= 100 {
        return compact;
    }
    let pretty = serde_json::to_string_pretty(v).unwrap_or(compact);
    let lines: Vec<&str> = pretty.lines().collect();
    if lines.len() <= MAX_VALUE_LINES {
        return pretty;
    }
    format!(
        "{}\n… ({} more lines; --json prints the whole value)",
        lines[..MAX_VALUE_LINES].join("\n"),
        lines.len() - MAX_VALUE_LINES
    )
}

/// How many lines of a value the text form shows.
const MAX_VALUE_LINES: usize = 30;

/// A duration for people: `850ms`, `12.3s`, `4m 05s`, `3h 02m`, `2d 05h`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d < Duration::from_millis(10) => format!("{:.1}ms", d.as_secs_f64() * 1e3),
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Milliseconds with a fraction, for JSON.
pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A TTL for people.
pub(crate) fn ttl_text(ttl: Ttl) -> String {
    match ttl {
        Ttl::Remaining(d) => human(d),
        Ttl::NoExpiry => "no expiry (not written by ormcache: every ormcache write expires)".into(),
        _ => "missing".into(),
    }
}

/// A TTL for scripts: `{"ttl": "remaining" | "no_expiry" | "missing", "ttl_ms": n | null}`.
pub(crate) fn ttl_json(ttl: Ttl) -> (Value, Value) {
    match ttl {
        Ttl::Remaining(d) => (json!("remaining"), json!(d.as_millis() as u64)),
        Ttl::NoExpiry => (json!("no_expiry"), Value::Null),
        _ => (json!("missing"), Value::Null),
    }
}

/// `name    value` lines, names padded to one column.
pub(crate) fn table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        // Continuation lines of a multi-line value stay in the value column.
        let v = v.replace('\n', &format!("\n{:width$}  ", ""));
        line(&format!("{k:<width$}  {v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_micros(1590)), "1.6ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human(Duration::from_secs(245)), "4m 05s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120)), "3h 02m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 5 * 3600)), "2d 05h");
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
    }

    #[test]
    fn long_values_are_cut_for_people() {
        assert_eq!(value_text(&json!({"id": 1})), r#"{"id":1}"#);
        let long = value_text(&json!(vec!["row"; 100]));
        assert_eq!(long.lines().count(), MAX_VALUE_LINES + 1);
        assert!(
            long.ends_with("(72 more lines; --json prints the whole value)"),
            "{long}"
        );
    }
}
