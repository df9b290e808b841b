//! The commands. Reads go through `ormcache::inspect` and the `DistributedCache`;
//! writes through a `HybridCache` of our own (see [`Writer`]).

use std::collections::HashMap;
use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ormcache::inspect::{self, ChannelEvent, InvalidationOp, Peer};
use ormcache::tenant::{self, TenantId};
use ormcache::{Codec, DistributedCache, HybridCache, QueryCache, RedisUrl, Ttl};
use serde_json::{Value, json};

use crate::args::{Cli, Command};
use crate::fail::{self, Failure};
use crate::out;

/// The command timeout unless the URL sets one (`?timeout=`): an operator's
/// `SCAN` of a big keyspace should not trip the services' 250 ms default.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Values up to this size are shown (the services' limit is 8 MiB by default).
const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;
/// How long a write waits for its own invalidation stream to come up.
const STREAM_UP: Duration = Duration::from_secs(5);

/// Runs the command; the exit code on success (`NOT_FOUND` is not a failure).
pub(crate) async fn run(cli: &Cli) -> Result<u8, Failure> {
    // Parsed first, so that a malformed URL is a usage error naming the problem.
    RedisUrl::parse(&cli.url)?;
    let l2 = connect(cli).await?;
    let result = dispatch(cli, &l2).await;
    if !l2.is_closed() {
        let _ = l2.close().await;
    }
    result
}

async fn connect(cli: &Cli) -> Result<DistributedCache, Failure> {
    let mut builder = DistributedCache::builder()
        .command_timeout(COMMAND_TIMEOUT)
        .redis_url(&cli.url)
        .key_prefix(cli.prefix.clone())
        .max_value_bytes(MAX_VALUE_BYTES)
        .stats_flush_interval(Duration::from_secs(3600));
    if cli.tls_ca.is_some() || cli.tls_cert.is_some() {
        let mut tls = ormcache::TlsConfig::new();
        if let Some(ca) = &cli.tls_ca {
            tls = tls.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
            tls = tls.client_cert_files(cert, key);
        }
        builder = builder.tls(tls);
    }
    Ok(builder.build().await?)
}

fn tenant_id(id: Option<&String>) -> Result<Option<TenantId>, Failure> {
    id.map(|id| TenantId::new(id).map_err(Failure::from))
        .transpose()
}

/// Runs `f` in the tenant's scope, if one was named.
async fn scoped<F: Future>(tenant: Option<&TenantId>, f: F) -> F::Output {
    match tenant {
        Some(t) => tenant::scope(t.clone(), f).await,
        None => f.await,
    }
}

async fn dispatch(cli: &Cli, l2: &DistributedCache) -> Result<u8, Failure> {
    match &cli.command {
        Command::Stats => stats(cli, l2).await,
        Command::Get { key, tenant } => get(cli, l2, key, tenant_id(tenant.as_ref())?).await,
        Command::Ttl { key, tenant } => ttl(cli, l2, key, tenant_id(tenant.as_ref())?).await,
        Command::Del { key, tenant } => {
            let t = tenant_id(tenant.as_ref())?;
            let w = Writer::start(cli, l2).await?;
            let deleted = scoped(t.as_ref(), w.cache.delete(key)).await;
            let report = w.finish().await;
            let deleted = deleted?;
            if cli.json {
                out::json(&json!({
                    "key": key, "tenant": t.as_ref().map(TenantId::as_str),
                    "deleted": deleted, "instances": report.0, "unconfirmed": report.1,
                }));
            } else {
                let redis_key = scoped(t.as_ref(), async { l2.redis_key(key) }).await;
                let what = if deleted {
                    "deleted"
                } else {
                    "not found (nothing to delete):"
                };
                out::line(&format!("{what} {redis_key}{}", confirmation(report)));
            }
            Ok(0)
        }
        Command::Clear {
            pattern,
            yes,
            tenant,
        } => {
            let t = tenant_id(tenant.as_ref())?;
            let matched = scoped(t.as_ref(), inspect::count_matching(l2, pattern)).await?;
            let scope = match &t {
                Some(t) => format!("tenant `{t}` of prefix `{}`", cli.prefix),
                None => format!("prefix `{}`", cli.prefix),
            };
            let question = format!(
                "delete {matched} key{} matching `{pattern}` under {scope}",
                plural(matched)
            );
            clear_after_confirming(cli, l2, matched, &question, *yes, |cache| {
                let t = t.clone();
                let pattern = pattern.clone();
                async move { scoped(t.as_ref(), cache.clear_pattern(&pattern)).await }
            })
            .await
            .map(|(cleared, report)| {
                if cli.json {
                    out::json(&json!({
                        "pattern": pattern, "tenant": t.as_ref().map(TenantId::as_str),
                        "matched": matched, "cleared": cleared,
                        "instances": report.map(|r| r.0), "unconfirmed": report.map(|r| r.1),
                    }));
                } else if let Some(report) = report {
                    out::line(&format!(
                        "cleared {cleared} key{} matching `{pattern}` under {scope}{}",
                        plural(cleared),
                        confirmation(report)
                    ));
                } else {
                    out::line(&format!(
                        "no keys match `{pattern}` under {scope}: nothing cleared"
                    ));
                }
                0
            })
        }
        Command::InvalidateTag { tag, tenant } => {
            let t = tenant_id(tenant.as_ref())?;
            let w = Writer::start(cli, l2).await?;
            let done = scoped(t.as_ref(), w.cache.invalidate_tag(tag)).await;
            let report = w.finish().await;
            done?;
            if cli.json {
                out::json(&json!({
                    "tag": tag, "tenant": t.as_ref().map(TenantId::as_str),
                    "invalidated": true, "instances": report.0, "unconfirmed": report.1,
                }));
            } else {
                out::line(&format!("invalidated tag `{tag}`{}", confirmation(report)));
            }
            Ok(0)
        }
        Command::ClearTenant { id, yes } => {
            let t = TenantId::new(id)?;
            let matched = tenant::scope(t.clone(), inspect::count_matching(l2, "*")).await?;
            let question = format!(
                "delete all {matched} key{} of tenant `{t}` under prefix `{}`",
                plural(matched),
                cli.prefix
            );
            clear_after_confirming(cli, l2, matched, &question, *yes, |cache| {
                let t = t.clone();
                async move { tenant::scope(t, cache.clear()).await }
            })
            .await
            .map(|(cleared, report)| {
                if cli.json {
                    out::json(&json!({
                        "tenant": t.as_str(), "matched": matched, "cleared": cleared,
                        "instances": report.map(|r| r.0), "unconfirmed": report.map(|r| r.1),
                    }));
                } else if let Some(report) = report {
                    out::line(&format!(
                        "cleared {cleared} key{} of tenant `{t}`{}",
                        plural(cleared),
                        confirmation(report)
                    ));
                } else {
                    out::line(&format!("tenant `{t}` has no keys: nothing cleared"));
                }
                0
            })
        }
        Command::Peers { no_probe } => peers(cli, l2, !*no_probe).await,
        Command::Watch { heartbeats, count } => watch(cli, l2, *heartbeats, *count).await,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `(live instances, instances that did not confirm)` as the writer saw them.
type Report = (usize, usize);

fn confirmation((instances, unconfirmed): Report) -> String {
    match (instances, unconfirmed) {
        (0, _) => " (no other instance live)".into(),
        (n, 0) => format!(
            " (confirmed by {n} live instance{})",
            if n == 1 { "" } else { "s" }
        ),
        (n, u) => format!(
            " ({} of {n} live instances confirmed; {u} did not within the timeout and drop their copies when they next hear the stream)",
            n - u
        ),
    }
}

/// Counts, asks, then clears through a [`Writer`]; `(cleared, report)`, with no
/// report when nothing matched (then nothing is done).
async fn clear_after_confirming<F, Fut>(
    cli: &Cli,
    l2: &DistributedCache,
    matched: u64,
    question: &str,
    yes: bool,
    clear: F,
) -> Result<(u64, Option<Report>), Failure>
where
    F: FnOnce(HybridCache) -> Fut,
    Fut: Future<Output = ormcache::Result<u64>>,
{
    if matched == 0 {
        return Ok((0, None));
    }
    confirm(question, yes)?;
    let w = Writer::start(cli, l2).await?;
    let cleared = clear(w.cache.clone()).await;
    let report = w.finish().await;
    Ok((cleared?, Some(report)))
}

/// Asks on the terminal unless `yes`; refuses when there is no terminal to ask on.
fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    use std::io::{BufRead, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::not_confirmed(format!(
            "refusing to {question} without confirmation: stdin is not a terminal; pass --yes"
        )));
    }
    {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{question}? [y/N] ");
        let _ = err.flush();
    }
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::not_confirmed("not confirmed: nothing was cleared")),
    }
}

/// A [`HybridCache`] of our own for the writes: its writes publish the same
/// invalidation messages as a service's, and return once every live instance
/// confirmed it dropped its L1 copies.
struct Writer {
    cache: HybridCache,
    /// Live instances known before the write.
    live: usize,
}

impl Writer {
    /// Listens for `--listen` to count the live instances, then starts the cache
    /// and waits for its invalidation stream.
    async fn start(cli: &Cli, l2: &DistributedCache) -> Result<Self, Failure> {
        // The live instances, heard for `--listen` before ours starts (their
        // heartbeats: on the channel under the broadcast protocol, in their inboxes
        // under the fleet one, where a write waits only for those that hold what it
        // names).
        let live = match inspect::peers(l2, cli.listen, None).await {
            Ok(peers) => peers.iter().filter(|p| !p.closing).count(),
            Err(_) => 0,
        };
        let l1 = QueryCache::new(16, Duration::from_secs(1))?;
        let cache = HybridCache::builder(l1, l2.clone())
            .confirm_invalidations(Some(cli.confirm_timeout))
            .protocol(cli.protocol)
            .build()?;
        if !cache.wait_coherent(STREAM_UP).await {
            let _ = cache.close().await;
            return Err(Failure::redis(format!(
                "the invalidation channel of prefix `{}` did not come up within {}: nothing was changed",
                cli.prefix,
                out::human(STREAM_UP)
            )));
        }
        Ok(Self { cache, live })
    }

    /// What the writes saw of the other instances; closes the cache (its goodbye
    /// tells the instances not to wait for it).
    async fn finish(self) -> Report {
        let unconfirmed = match self.cache.get_stats().await {
            Ok(s) => s.coherence.peers_unresponsive,
            Err(_) => 0,
        };
        let report = (self.live, unconfirmed);
        let _ = self.cache.close().await;
        report
    }
}

async fn stats(cli: &Cli, l2: &DistributedCache) -> Result<u8, Failure> {
    let fields = inspect::stats_hash(l2).await?;
    let merged = l2.get_stats().await?;
    let peers = inspect::peers(l2, cli.listen, None).await?;
    let live: Vec<&Peer> = peers.iter().filter(|p| !p.closing).collect();
    let stats_key = format!("{}:stats", cli.prefix);
    if cli.json {
        let hash: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| {
                let v = v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n));
                (k.clone(), v)
            })
            .collect();
        out::json(&json!({
            "prefix": cli.prefix,
            "stats_key": stats_key,
            "stats": hash,
            "hit_rate": merged.hit_rate,
            "keys_count": merged.keys_count,
            "keys_count_exact": merged.keys_count_exact,
            "listened_ms": out::millis(cli.listen),
            "peers": live.iter().map(|p| peer_json(p)).collect::<Vec<_>>(),
        }));
        return Ok(0);
    }
    let mut rows = vec![("stats hash", stats_key)];
    let named: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (format!("  {k}"), v.clone()))
        .collect();
    rows.extend(named.iter().map(|(k, v)| (k.as_str(), v.clone())));
    if fields.is_empty() {
        rows.push((
            "",
            "(empty: no instance has flushed its counters yet)".into(),
        ));
    }
    rows.push(("hit rate", format!("{:.2}%", merged.hit_rate)));
    rows.push((
        "keys",
        if merged.keys_count_exact {
            format!("{}", merged.keys_count)
        } else {
            format!("~{} (estimated from a sample)", merged.keys_count)
        },
    ));
    rows.push((
        "instances",
        format!(
            "{} live on {} (listened {})",
            live.len(),
            inspect::channel(&cli.prefix),
            out::human(cli.listen)
        ),
    ));
    let ids: Vec<(String, String)> = live
        .iter()
        .map(|p| {
            (
                format!("  {}", p.id),
                format!("last heartbeat {} ago", out::human(p.last_heard)),
            )
        })
        .collect();
    rows.extend(ids.iter().map(|(k, v)| (k.as_str(), v.clone())));
    out::table(&rows);
    Ok(0)
}

async fn get(
    cli: &Cli,
    l2: &DistributedCache,
    key: &str,
    t: Option<TenantId>,
) -> Result<u8, Failure> {
    let Some(e) = scoped(t.as_ref(), inspect::entry(l2, key)).await? else {
        let redis_key = scoped(t.as_ref(), async { l2.redis_key(key) }).await;
        if cli.json {
            out::json(
                &json!({"key": key, "redis_key": redis_key, "tenant": t.as_ref().map(TenantId::as_str), "found": false}),
            );
        } else {
            out::line(&format!("not found: {redis_key}"));
        }
        return Ok(fail::NOT_FOUND);
    };
    let codec = |c: Codec| {
        if c == Codec::MessagePack {
            "msgpack"
        } else {
            "json"
        }
    };
    let tag_json = |s: &inspect::TagState| json!({"name": s.name, "token": s.token, "current": s.is_current()});
    if cli.json {
        let (state, ms) = out::ttl_json(e.ttl);
        let (format, value, error) = match &e.decoded {
            Ok(d) => (
                json!({"codec": codec(d.format.codec), "compressed": d.format.compressed, "tagged": d.format.tagged}),
                d.value.clone(),
                Value::Null,
            ),
            Err(err) => (Value::Null, Value::Null, json!(err.to_string())),
        };
        out::json(&json!({
            "key": key, "redis_key": e.redis_key, "tenant": t.as_ref().map(TenantId::as_str),
            "found": true, "ttl": state, "ttl_ms": ms, "bytes": e.bytes, "format": format,
            "tags": e.tags.iter().map(tag_json).collect::<Vec<_>>(),
            "namespace": e.namespace.as_ref().map(tag_json),
            "fresh": e.is_fresh(), "value": value, "decode_error": error,
        }));
        return Ok(0);
    }
    let mut rows = vec![("key", e.redis_key.clone()), ("ttl", out::ttl_text(e.ttl))];
    let tag_text = |s: &inspect::TagState| {
        let state = if s.is_current() {
            "current"
        } else {
            "invalidated"
        };
        format!(
            "{} ({state})",
            if s.name.is_empty() {
                "namespace"
            } else {
                &s.name
            }
        )
    };
    match &e.decoded {
        Ok(d) => {
            let mut f = vec![codec(d.format.codec)];
            if d.format.compressed {
                f.push("lz4");
            }
            if d.format.tagged {
                f.push("tagged");
            }
            rows.push(("format", format!("{}, {} bytes", f.join(" + "), e.bytes)));
        }
        Err(err) => rows.push(("format", format!("undecodable, {} bytes: {err}", e.bytes))),
    }
    if !e.tags.is_empty() {
        rows.push((
            "tags",
            e.tags.iter().map(tag_text).collect::<Vec<_>>().join(", "),
        ));
    }
    if let Some(ns) = &e.namespace {
        rows.push(("namespace", tag_text(ns)));
    }
    rows.push((
        "fresh",
        if e.is_fresh() {
            "yes: a cache read returns this value".into()
        } else {
            "no: a cache read misses (and removes it)".into()
        },
    ));
    if let Ok(d) = &e.decoded {
        rows.push(("value", out::value_text(&d.value)));
    }
    out::table(&rows);
    Ok(0)
}

async fn ttl(
    cli: &Cli,
    l2: &DistributedCache,
    key: &str,
    t: Option<TenantId>,
) -> Result<u8, Failure> {
    let ttl = scoped(t.as_ref(), l2.ttl(key)).await?;
    let redis_key = scoped(t.as_ref(), async { l2.redis_key(key) }).await;
    if cli.json {
        let (state, ms) = out::ttl_json(ttl);
        out::json(
            &json!({"key": key, "redis_key": redis_key, "tenant": t.as_ref().map(TenantId::as_str), "ttl": state, "ttl_ms": ms}),
        );
    } else if ttl == Ttl::Missing {
        out::line(&format!("not found: {redis_key}"));
    } else {
        out::line(&out::ttl_text(ttl));
    }
    Ok(if ttl == Ttl::Missing {
        fail::NOT_FOUND
    } else {
        0
    })
}

fn peer_json(p: &Peer) -> Value {
    let (confirmed, ack_ms) = match p.confirmed {
        Some(Ok(d)) => (json!(true), json!(out::millis(d))),
        Some(Err(())) => (json!(false), Value::Null),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": p.id, "last_heard_ms": out::millis(p.last_heard), "messages": p.messages,
        "last_seq": p.last_seq, "closing": p.closing, "confirmed": confirmed, "ack_ms": ack_ms,
    })
}

async fn peers(cli: &Cli, l2: &DistributedCache, probe: bool) -> Result<u8, Failure> {
    let found = inspect::peers(l2, cli.listen, probe.then_some(cli.confirm_timeout)).await?;
    let live = found.iter().filter(|p| !p.closing).count();
    let unconfirmed = found
        .iter()
        .filter(|p| p.confirmed == Some(Err(())))
        .count();
    let channel = inspect::channel(&cli.prefix);
    if cli.json {
        out::json(&json!({
            "channel": channel, "listened_ms": out::millis(cli.listen), "probed": probe,
            "live": live, "unconfirmed": unconfirmed,
            "peers": found.iter().map(peer_json).collect::<Vec<_>>(),
        }));
        return Ok(0);
    }
    if !found.is_empty() {
        out::line(&format!(
            "{:<20}  {:>14}  {:>8}  confirmed",
            "instance", "last heartbeat", "last seq"
        ));
    }
    for p in &found {
        let confirmed = match (p.closing, p.confirmed) {
            (true, _) => "closing".to_owned(),
            (_, Some(Ok(d))) => format!("yes, in {}", out::human(d)),
            (_, Some(Err(()))) => {
                format!("NO (nothing within {})", out::human(cli.confirm_timeout))
            }
            (_, None) if probe => "not probed (joined during the probe)".to_owned(),
            (_, None) => "-".to_owned(),
        };
        out::line(&format!(
            "{:<20}  {:>14}  {:>8}  {confirmed}",
            p.id,
            format!("{} ago", out::human(p.last_heard)),
            p.last_seq
        ));
    }
    out::line(&format!(
        "{live} live instance{} on {channel}, {unconfirmed} unconfirmed (listened {})",
        if live == 1 { "" } else { "s" },
        out::human(cli.listen)
    ));
    Ok(0)
}

async fn watch(
    cli: &Cli,
    l2: &DistributedCache,
    heartbeats: bool,
    count: Option<u64>,
) -> Result<u8, Failure> {
    let mut listener = inspect::listen(l2).await?;
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "watching {} (Ctrl-C to stop)",
            listener.channel()
        );
    }
    let start = Instant::now();
    // When each message was seen here, for the lag of its acknowledgements.
    let mut seen: HashMap<(u64, u64), Instant> = HashMap::new();
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        let Some(event) = listener.next().await else {
            return Err(Failure::redis(format!(
                "the subscription to {} was lost",
                listener.channel()
            )));
        };
        let now = Instant::now();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let at = format!("+{:.3}s", now.duration_since(start).as_secs_f64());
        let (doc, text) = match event {
            ChannelEvent::Invalidation(m) => {
                if seen.len() > 100_000 {
                    seen.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
                }
                seen.insert((m.sender, m.seq), now);
                let tenant = m
                    .tenant
                    .as_deref()
                    .map(|t| format!("  tenant {t}"))
                    .unwrap_or_default();
                let (op, what, detail) = match &m.op {
                    InvalidationOp::Keys(k) => ("keys", json!({"keys": k}), k.join(", ")),
                    InvalidationOp::Pattern(p) => ("pattern", json!({"pattern": p}), p.clone()),
                    InvalidationOp::Clear => ("clear", json!({}), "(everything)".into()),
                    InvalidationOp::Tag(t) => ("tag", json!({"tag": t}), t.clone()),
                    _ => {
                        if !heartbeats {
                            continue;
                        }
                        let state = if m.joined {
                            "joined"
                        } else if m.closing {
                            "closing"
                        } else {
                            ""
                        };
                        (
                            "heartbeat",
                            json!({"joined": m.joined, "closing": m.closing}),
                            state.into(),
                        )
                    }
                };
                let mut doc = json!({
                    "event": if op == "heartbeat" { "heartbeat" } else { "invalidation" },
                    "op": op, "sender": m.sender, "seq": m.seq, "tenant": m.tenant, "ts_ms": ts,
                });
                if let (Some(d), Some(w)) = (doc.as_object_mut(), what.as_object()) {
                    d.extend(w.clone());
                }
                let text = format!(
                    "{at}  {op:<9}  {detail}  sender {} #{}{tenant}",
                    m.sender, m.seq
                );
                (doc, text)
            }
            ChannelEvent::Ack(a) => {
                let lag = seen
                    .get(&(a.sender, a.upto))
                    .map(|t| now.duration_since(*t));
                let doc = json!({
                    "event": "ack", "peer": a.peer, "sender": a.sender, "upto": a.upto,
                    "lag_ms": lag.map(out::millis), "ts_ms": ts,
                });
                let lag = lag.map_or_else(
                    || "lag unknown".into(),
                    |l| format!("lag {}", out::human(l)),
                );
                let text = format!(
                    "{at}  ack        peer {} applied sender {} up to #{}  {lag}",
                    a.peer, a.sender, a.upto
                );
                (doc, text)
            }
            ChannelEvent::Unreadable { channel } => {
                let doc = json!({"event": "unreadable", "channel": channel, "ts_ms": ts});
                let text = format!(
                    "{at}  UNREADABLE message on {channel} (instances flush their L1 on it)"
                );
                (doc, text)
            }
            _ => continue,
        };
        if cli.json {
            out::json(&doc);
        } else {
            out::line(&text);
        }
        printed += 1;
    }
    Ok(0)
}
