//! Hiding secrets in text that may be a Redis URL, well-formed or not: what error
//! messages quote and `Debug` shows of a URL that did not parse.

/// Hides the secrets in anything that may be a Redis URL, well-formed or not: the
/// password of `scheme://user:password@…` (everything between the first `:` of the
/// credentials and the last `@`), the same without a scheme (`user:pw@host`), and
/// the value of any query option whose name contains `pass`.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::from(scheme);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        None => out.push_str(rest),
        Some((head, query)) => {
            out.push_str(head);
            out.push('?');
            let parts: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&parts.join("&"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_redaction_hides_every_password() {
        for (raw, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@h:1/2", "redis://:***@h:1/2"),
            ("rediss://bob:p@ss:w0rd@h:1", "rediss://bob:***@h:1"),
            ("redis://alice@h", "redis://alice@h"),
            (
                "redis+unix:///run/r.sock?pass=s3cret",
                "redis+unix:///run/r.sock?pass=***",
            ),
            (
                "unix:///r.sock?db=1&password=s3cret",
                "unix:///r.sock?db=1&password=***",
            ),
            (":s3cret@host:6379", ":***@host:6379"),
            ("user:s3cret@host:6379", "user:***@host:6379"),
            ("redis://u:pa/ss@h/0", "redis://u:***@h/0"),
            (
                "redis+sentinel://h/m?sentinel_password=s3cret",
                "redis+sentinel://h/m?sentinel_password=***",
            ),
        ] {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }
}
