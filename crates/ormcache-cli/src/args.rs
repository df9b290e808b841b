//! The command line (clap derive). The global options and command names are pinned
//! (issue 12): `ormcache --url URL --prefix PREFIX [--json] COMMAND …`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Operator tool for ormcache: look inside a running cache, and delete or clear
/// entries so that every running HybridCache instance drops its L1 copies too.
///
/// Exit codes: 0 done; 1 Redis failed (unreachable, timeout, refused credentials,
/// error reply); 2 usage (bad arguments, URL, key, tenant id); 3 not confirmed
/// (a clear declined, or no terminal to ask on and no --yes); 4 no such key
/// (get, ttl).
#[derive(Debug, Parser)]
#[command(name = "ormcache", version, max_term_width = 100)]
pub(crate) struct Cli {
    /// Redis URL: redis://, rediss://, redis+unix://, redis+cluster://,
    /// redis+sentinel:// (and their TLS forms), as the library accepts them.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub(crate) url: String,

    /// The caches' key prefix (`key_prefix`).
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: String,

    /// Machine-readable output: one JSON document per command (`watch`: one JSON
    /// line per event).
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// How long to listen to the invalidation channel before acting: how `peers`
    /// and `stats` find the live instances, and how writes learn which instances
    /// must confirm them (heartbeats come every 500 ms by default).
    #[arg(long, global = true, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) listen: Duration,

    /// How long a write (and the `peers` probe) waits for each live instance to
    /// confirm it has dropped its L1 copies.
    #[arg(long, global = true, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) confirm_timeout: Duration,

    /// The coherence protocol the services use (`HybridBuilder::protocol`), which
    /// the writes (`del`, `clear`, `invalidate-tag`, `clear-tenant`) follow:
    /// `fleet` (the library's default) or `broadcast`.
    #[arg(long, global = true, default_value = "fleet", value_parser = parse_protocol, value_name = "PROTOCOL")]
    pub(crate) protocol: ormcache::Protocol,

    /// A CA certificate (PEM) to trust beside the system roots (TLS URLs).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// A client certificate (PEM) for TLS; needs --tls-key.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The cluster-wide stats hash ({prefix}:stats), the key count and the live
    /// instances.
    Stats,
    /// An entry as stored: its value (whatever codec wrote it), TTL, tags and
    /// whether a cache read would return it.
    Get {
        /// The key, without the prefix.
        key: String,
        /// The tenant whose key it is.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// The remaining lifetime of an entry.
    Ttl {
        /// The key, without the prefix.
        key: String,
        /// The tenant whose key it is.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Deletes an entry; every live instance drops its L1 copy.
    Del {
        /// The key, without the prefix.
        key: String,
        /// The tenant whose key it is.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Deletes the entries matching a Redis glob (reserved keys and tenants'
    /// keys never match); counts them and asks first.
    Clear {
        /// Redis glob under the prefix (`*`, `?`, `[...]`, `\` escapes).
        #[arg(long, value_name = "P")]
        pattern: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Clear in this tenant's namespace instead.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Invalidates every entry carrying a tag, in Redis and in every L1.
    InvalidateTag {
        /// The tag.
        tag: String,
        /// The tenant whose tag it is.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
    },
    /// Deletes every entry of one tenant; counts them and asks first.
    ClearTenant {
        /// The tenant id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// The instances on the invalidation channel, their last heartbeat, and which
    /// of them do not confirm invalidations (probed with a message that
    /// invalidates nothing).
    Peers {
        /// Only listen: publish no probe (the `confirmed` column stays empty).
        #[arg(long)]
        no_probe: bool,
    },
    /// Follows the invalidation stream live: operation, keys, sender, and each
    /// acknowledgement's lag (from the message to the peer's acknowledgement, as
    /// seen here).
    Watch {
        /// Show heartbeats too.
        #[arg(long)]
        heartbeats: bool,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// `250ms`, `1s`, `1.5s`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 500ms, 1s, 2m"))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 500ms, 1s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}

/// `fleet` or `broadcast`.
fn parse_protocol(s: &str) -> Result<ormcache::Protocol, String> {
    match s {
        "fleet" => Ok(ormcache::Protocol::Fleet),
        "broadcast" => Ok(ormcache::Protocol::Broadcast),
        other => Err(format!("`{other}` is not a protocol: fleet or broadcast")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "5", "s", "1h", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
