//! The scenarios, each against its raw baseline, one file each (`codec` holds
//! both codec scenarios). To add one: write a `fn(&Env) -> Result<Measured>` in a
//! new file and list it in [`ALL`]; what several scenarios use lives here.

mod cached_hit;
mod codec;
mod dead_redis;
mod fleet_scaling;
mod foreign_write;
mod hybrid_confirmed_write;
mod hybrid_invalidation;
mod hybrid_l1_get;
mod l1_get;
#[cfg(feature = "metrics")]
mod l1_get_metrics;
mod l1_get_under_invalidation;
mod l1_maps;
mod l2_get;
mod l2_many;
mod l2_set;
mod outage;
mod span_disabled;
mod stampede;
mod tag_vs_pattern;

use std::time::Duration;

use ormcache::{DistributedCache, HybridCache, QueryCache};
use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;
use redis::io::tcp::TcpSettings;
use serde::{Deserialize, Serialize};

use crate::stats::{Measured, Round, median, round_to};

/// Errors that end a scenario (setup failures, wrong answers).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Measured rounds per side (after one warm-up round each).
const ROUNDS: usize = 7;
/// Length of one Redis round.
const REDIS_ROUND: Duration = Duration::from_secs(1);
/// Concurrent tasks in the Redis scenarios.
const TASKS: usize = 50;
/// Operations per L1 round (tens of nanoseconds each).
const L1_OPS: u64 = 2_000_000;
/// Per-op latency samples of each side of a tight-loop scenario.
const LATENCY_SAMPLES: usize = 200_000;
/// TTL of everything written (ours: the default, 300 s; baseline: the same).
const TTL: Duration = Duration::from_secs(300);
/// How long a `HybridCache` may take to become coherent at setup.
const COHERENT_WAIT: Duration = Duration::from_secs(5);
/// The confirmation timeout of `hybrid_confirmed_write` (the default).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// A benchmark scenario and the baseline it is measured against.
#[derive(Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// Short name of the baseline (the JSON `baseline` field).
    pub(crate) baseline: &'static str,
    pub(crate) needs_redis: bool,
    /// The ratio the issue asks for, if any.
    pub(crate) goal_ratio: Option<f64>,
    /// The p99 latency (µs) the issue asks for, if any: `meets_goal` needs p99 below it.
    pub(crate) goal_p99_us: Option<f64>,
    pub(crate) run: fn(&Env) -> Result<Measured>,
}

/// Every scenario, in run order.
pub(crate) const ALL: &[Scenario] = &[
    Scenario {
        name: "l2_get",
        baseline: "redis-rs GET + serde_json",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: l2_get::l2_get,
    },
    Scenario {
        name: "l2_get_coalesced",
        baseline: "redis-rs GET + serde_json",
        needs_redis: true,
        goal_ratio: Some(1.3),
        goal_p99_us: None,
        run: l2_get::l2_get_coalesced,
    },
    Scenario {
        name: "l2_set",
        baseline: "redis-rs SET PX + serde_json",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: l2_set::l2_set,
    },
    Scenario {
        name: "l2_get_many_100",
        baseline: "DistributedCache::get, one key a call",
        needs_redis: true,
        goal_ratio: Some(l2_many::GOAL),
        goal_p99_us: None,
        run: l2_many::l2_get_many_100,
    },
    Scenario {
        name: "l2_set_many_100",
        baseline: "DistributedCache::set_ref, one key a call",
        needs_redis: true,
        goal_ratio: Some(l2_many::GOAL),
        goal_p99_us: None,
        run: l2_many::l2_set_many_100,
    },
    Scenario {
        name: "l1_get",
        baseline: "moka::sync::Cache get",
        needs_redis: false,
        goal_ratio: Some(1.5),
        goal_p99_us: None,
        run: l1_get::l1_get,
    },
    #[cfg(feature = "metrics")]
    Scenario {
        name: "l1_get_metrics",
        baseline: "the same hit, handles not recording",
        needs_redis: false,
        goal_ratio: Some(0.909),
        goal_p99_us: None,
        run: l1_get_metrics::l1_get_metrics,
    },
    Scenario {
        name: "l1_maps",
        baseline: "moka::sync::Cache get (1 thread)",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: l1_maps::l1_maps,
    },
    Scenario {
        name: "l1_get_under_invalidation",
        baseline: "the same hits, no invalidation",
        needs_redis: false,
        goal_ratio: Some(0.9),
        goal_p99_us: None,
        run: l1_get_under_invalidation::l1_get_under_invalidation,
    },
    Scenario {
        name: "span_disabled",
        baseline: "the same ready future, no span",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: span_disabled::span_disabled,
    },
    Scenario {
        name: "hybrid_l1_get",
        baseline: "QueryCache get (same async loop)",
        needs_redis: true,
        goal_ratio: Some(0.9),
        goal_p99_us: None,
        run: hybrid_l1_get::hybrid_l1_get,
    },
    Scenario {
        name: "cached_hit",
        baseline: "hash key + QueryCache get + clone",
        needs_redis: false,
        goal_ratio: Some(0.833),
        goal_p99_us: None,
        run: cached_hit::cached_hit,
    },
    Scenario {
        name: "hybrid_invalidation",
        baseline: "redis-rs PUBLISH → subscriber",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: Some(5_000.0),
        run: hybrid_invalidation::hybrid_invalidation,
    },
    Scenario {
        name: "hybrid_confirmed_write",
        baseline: "HybridCache set without confirmation",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: hybrid_confirmed_write::hybrid_confirmed_write,
    },
    Scenario {
        name: "fleet_scaling",
        baseline: "Protocol::Broadcast, same fleet sizes",
        needs_redis: true,
        goal_ratio: Some(1.0),
        goal_p99_us: None,
        run: fleet_scaling::fleet_scaling,
    },
    Scenario {
        name: "foreign_write",
        baseline: "Protocol::Broadcast (l1_max_ttl 2 s)",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: Some(5_000.0),
        run: foreign_write::foreign_write,
    },
    Scenario {
        name: "outage",
        baseline: "QueryCache miss (same async loop)",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: Some(1_000.0),
        run: outage::outage,
    },
    Scenario {
        name: "dead_redis",
        baseline: "QueryCache miss + load + store",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: Some(10_000.0),
        run: dead_redis::dead_redis,
    },
    Scenario {
        name: "codec_json",
        baseline: "serde_json to_vec+from_slice",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: codec::codec_json,
    },
    Scenario {
        name: "codec_msgpack",
        baseline: "rmp_serde to_vec_named+from_slice",
        needs_redis: false,
        goal_ratio: None,
        goal_p99_us: None,
        run: codec::codec_msgpack,
    },
    Scenario {
        name: "stampede",
        baseline: "naive get → load → set",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: stampede::stampede,
    },
    // Last: it grows the keyspace to a million keys (removed again at its end).
    Scenario {
        name: "tag_vs_pattern",
        baseline: "clear_pattern(\"grp:*\")",
        needs_redis: true,
        goal_ratio: None,
        goal_p99_us: None,
        run: tag_vs_pattern::tag_vs_pattern,
    },
];

/// What every scenario may use.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) rt: tokio::runtime::Runtime,
    /// Set when a selected scenario needs Redis.
    pub(crate) redis_url: Option<String>,
    /// A CA to trust for `rediss://` (`--tls` starts a server with a test CA).
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// Every Redis key written lives under `{prefix}:`.
    pub(crate) prefix: String,
}

impl Env {
    fn redis_url(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .ok_or_else(|| "this scenario needs Redis".into())
    }

    /// A `DistributedCache` with default settings under the run's prefix.
    async fn distributed(&self) -> Result<DistributedCache> {
        self.distributed_with(|b| b).await
    }

    /// [`distributed`](Self::distributed) with `settings` applied to its builder.
    async fn distributed_with(
        &self,
        settings: impl FnOnce(ormcache::DistributedBuilder) -> ormcache::DistributedBuilder,
    ) -> Result<DistributedCache> {
        let builder = DistributedCache::builder()
            .redis_url(self.redis_url()?)
            .tls(self.tls())
            .key_prefix(&self.prefix);
        Ok(settings(builder).build().await?)
    }

    /// The baseline's client: TCP_NODELAY, as ormcache sets it.
    fn raw_client(&self) -> Result<redis::Client> {
        let info = self
            .redis_url()?
            .into_connection_info()?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        if let Some(ca) = &self.tls_ca {
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca)?),
            };
            return Ok(redis::Client::build_with_tls(info, certs)?);
        }
        Ok(redis::Client::open(info)?)
    }

    /// What ormcache trusts for `rediss://`: the system roots and `tls_ca`.
    pub(crate) fn tls(&self) -> ormcache::TlsConfig {
        match &self.tls_ca {
            Some(ca) => ormcache::TlsConfig::new().ca_file(ca),
            None => ormcache::TlsConfig::new(),
        }
    }

    /// The baseline's connection: the kind ormcache uses (`ConnectionManager`), with
    /// the same TCP_NODELAY setting, so the ratio measures ormcache and not Nagle.
    async fn raw_connection(&self) -> Result<ConnectionManager> {
        Ok(self.raw_client()?.get_connection_manager().await?)
    }

    /// A coherent `HybridCache` over a fresh L1 and a default L2 under the run's
    /// prefix (its background tasks run on `self.rt`: call this inside it).
    async fn hybrid(&self) -> Result<HybridCache> {
        let l2 = self.distributed().await?;
        self.hybrid_over(l2, Some(CONFIRM_TIMEOUT)).await
    }

    /// [`hybrid`](Self::hybrid) over `l2`, with `confirm` as its confirmation timeout.
    async fn hybrid_over(
        &self,
        l2: DistributedCache,
        confirm: Option<Duration>,
    ) -> Result<HybridCache> {
        let cache = HybridCache::builder(QueryCache::new(10_000, TTL)?, l2)
            .l1_max_ttl(TTL)
            .confirm_invalidations(confirm)
            .build()?;
        if !cache.wait_coherent(COHERENT_WAIT).await {
            return Err(format!("HybridCache not coherent within {COHERENT_WAIT:?}").into());
        }
        Ok(cache)
    }
}

/// The runtime that drives the async tight loops: one thread, the caller's.
fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A ~200-byte database row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    id: u64,
    name: String,
    email: String,
    active: bool,
    score: f64,
    tags: Vec<String>,
    created_at: String,
}

const ROW_ID: u64 = 123_456;

fn row() -> Row {
    row_with_id(ROW_ID)
}

fn row_with_id(id: u64) -> Row {
    Row {
        id,
        name: "Augusta Ada King, Countess of Lovelace".into(),
        email: "ada.lovelace@example.com".into(),
        active: true,
        score: 98.25,
        tags: vec![
            "admin".into(),
            "beta".into(),
            "eu-west".into(),
            "analytical-engine".into(),
        ],
        created_at: "2026-11-25T21:38:52Z".into(),
    }
}

/// Median of the rounds' times, in ms.
fn median_ms(rounds: &[Round]) -> f64 {
    round_to(
        median(
            rounds
                .iter()
                .map(|r| r.elapsed.as_secs_f64() * 1e3)
                .collect(),
        ),
        3,
    )
}

/// A tight-loop scenario measured the way `l1_get` is: alternating rounds of
/// [`L1_OPS`] operations per side, then a latency pass of each.
fn tight_pair(mut ours: impl FnMut(), mut baseline: impl FnMut()) -> Measured {
    let (ours_rounds, baseline_rounds) = crate::stats::alternate(
        ROUNDS,
        || crate::stats::tight_loop(L1_OPS, &mut ours),
        || crate::stats::tight_loop(L1_OPS, &mut baseline),
    );
    Measured {
        ours: ours_rounds,
        baseline: baseline_rounds,
        ours_latency: Some(crate::stats::sample_each(LATENCY_SAMPLES, &mut ours)),
        baseline_latency: Some(crate::stats::sample_each(LATENCY_SAMPLES, &mut baseline)),
        ..Measured::default()
    }
}
