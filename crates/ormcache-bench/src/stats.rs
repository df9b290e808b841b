//! Measuring: rounds, alternation, percentiles, and the report row a scenario becomes.

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use tokio::runtime::Runtime;

/// What one round of one side measured.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Operations that succeeded.
    pub(crate) ops: u64,
    /// Operations that failed or returned a wrong answer (not counted in `ops`).
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Per-op latencies in nanoseconds; empty for tight loops, whose latency is
    /// sampled in a separate pass so that reading the clock does not slow the round.
    pub(crate) samples: Vec<u64>,
}

impl Round {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// One warm-up round of each side (discarded), then `rounds` rounds of each,
/// alternating: ours, baseline, ours, baseline, …
pub(crate) fn alternate(
    rounds: usize,
    mut ours: impl FnMut() -> Round,
    mut baseline: impl FnMut() -> Round,
) -> (Vec<Round>, Vec<Round>) {
    ours();
    baseline();
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        a.push(ours());
        b.push(baseline());
    }
    (a, b)
}

/// Runs `op` `ops` times, timing the loop as a whole.
pub(crate) fn tight_loop(ops: u64, mut op: impl FnMut()) -> Round {
    let start = Instant::now();
    for _ in 0..ops {
        op();
    }
    Round {
        ops,
        errors: 0,
        elapsed: start.elapsed(),
        samples: Vec::new(),
    }
}

/// Times `n` single calls of `op`, in nanoseconds (clock overhead included).
pub(crate) fn sample_each(n: usize, mut op: impl FnMut()) -> Vec<u64> {
    let mut samples = Vec::with_capacity(n);
    let mut last = Instant::now();
    for _ in 0..n {
        op();
        let now = Instant::now();
        samples.push(nanos(now - last));
        last = now;
    }
    samples
}

/// [`tight_loop`] for an async operation, driven by `rt` (a current-thread runtime):
/// `op` runs `ops` times, each `.await`ed in one loop timed as a whole. An op that
/// answers `false` counts as an error.
pub(crate) fn tight_loop_async<F: Future<Output = bool>>(
    rt: &Runtime,
    ops: u64,
    mut op: impl FnMut() -> F,
) -> Round {
    rt.block_on(async {
        let mut errors = 0u64;
        let start = Instant::now();
        for _ in 0..ops {
            errors += u64::from(!op().await);
        }
        Round {
            ops: ops - errors,
            errors,
            elapsed: start.elapsed(),
            samples: Vec::new(),
        }
    })
}

/// [`sample_each`] for an async operation, driven by `rt`.
pub(crate) fn sample_each_async<F: Future<Output = bool>>(
    rt: &Runtime,
    n: usize,
    mut op: impl FnMut() -> F,
) -> Vec<u64> {
    rt.block_on(async {
        let mut samples = Vec::with_capacity(n);
        let mut last = Instant::now();
        for _ in 0..n {
            black_box(op().await);
            let now = Instant::now();
            samples.push(nanos(now - last));
            last = now;
        }
        samples
    })
}

/// One concurrent client: the state a task keeps between operations.
pub(crate) trait Worker: Send + 'static {
    /// Runs one operation; `false` if it failed or answered wrongly.
    fn op(&mut self) -> impl Future<Output = bool> + Send;
}

/// Runs every worker in its own task, each looping until `duration` has passed,
/// and times every operation.
pub(crate) async fn concurrent_round<W: Worker>(workers: Vec<W>, duration: Duration) -> Round {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            tokio::spawn(async move {
                let mut round = Round {
                    samples: Vec::with_capacity(16 * 1024),
                    ..Round::default()
                };
                let mut last = Instant::now();
                while last < deadline {
                    let ok = worker.op().await;
                    let now = Instant::now();
                    if ok {
                        round.ops += 1;
                        round.samples.push(nanos(now - last));
                    } else {
                        round.errors += 1;
                    }
                    last = now;
                }
                round
            })
        })
        .collect();
    let mut total = Round::default();
    for task in tasks {
        let round = task.await.expect("a benchmark task panicked");
        total.ops += round.ops;
        total.errors += round.errors;
        total.samples.extend(round.samples);
    }
    total.elapsed = start.elapsed();
    total
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a scenario measured; [`Report::new`] turns it into a row.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub(crate) ours: Vec<Round>,
    pub(crate) baseline: Vec<Round>,
    /// Latency samples taken outside the rounds (tight loops); `None`: the rounds'.
    pub(crate) ours_latency: Option<Vec<u64>>,
    pub(crate) baseline_latency: Option<Vec<u64>>,
    /// Encoded size of the value, where that is interesting (codecs).
    pub(crate) bytes: Option<usize>,
    pub(crate) baseline_bytes: Option<usize>,
    /// What `ratio` compares (default: throughput).
    pub(crate) ratio_of: RatioOf,
    /// Replaces the default wording of `ratio_definition`.
    pub(crate) ratio_definition: Option<&'static str>,
    /// Per-round-pair ratios the scenario computed itself (e.g. of loader runs);
    /// replaces `ratio_of`, and `ratio_definition` must say what they are.
    pub(crate) ratios: Option<Vec<f64>>,
    /// A further condition of `meets_goal` (ANDed with the scenario's goals).
    pub(crate) goal_also: Option<bool>,
    /// Scenario-specific fields, appended to the JSON object in this order.
    pub(crate) extras: Vec<(&'static str, Value)>,
    /// Scenario-specific notes for the table.
    pub(crate) notes: Vec<String>,
}

/// What the `ratio` of a report compares, per round pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RatioOf {
    /// ours ops/s ÷ baseline ops/s.
    #[default]
    Throughput,
    /// baseline p99 latency ÷ ours p99 latency (the rounds' own samples).
    InverseP99,
}

impl RatioOf {
    fn definition(self) -> &'static str {
        match self {
            Self::Throughput => {
                "median over round pairs of ours ops/s / baseline ops/s; higher is better"
            }
            Self::InverseP99 => {
                "median over round pairs of baseline p99 / ours p99 latency; higher is better"
            }
        }
    }
}

/// One scenario's result: one line of `--json` output, one row of the table.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    /// Successful operations of ours, over all measured rounds.
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) baseline: &'static str,
    pub(crate) baseline_ops_per_sec: f64,
    pub(crate) baseline_p50_us: f64,
    pub(crate) baseline_p99_us: f64,
    /// Median over round pairs of ours/baseline throughput; higher is better.
    pub(crate) ratio: f64,
    pub(crate) ratio_min: f64,
    pub(crate) ratio_max: f64,
    pub(crate) ratio_definition: &'static str,
    /// Measured rounds per side (after one warm-up round each).
    pub(crate) rounds: usize,
    pub(crate) errors: u64,
    pub(crate) baseline_errors: u64,
    /// How latency was sampled: `in_rounds` or `separate_pass`.
    pub(crate) latency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) baseline_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) goal_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) goal_p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) meets_goal: Option<bool>,
    #[serde(flatten)]
    pub(crate) extras: Extras,
    #[serde(skip)]
    notes: Vec<String>,
}

/// A scenario's own fields, serialized in the order it gave them (a JSON map would
/// sort them).
#[derive(Debug, Default)]
pub(crate) struct Extras(Vec<(&'static str, Value)>);

impl Serialize for Extras {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

struct Side {
    ops: u64,
    errors: u64,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn side(rounds: &[Round], latency: Option<Vec<u64>>) -> Side {
    let ops = rounds.iter().map(|r| r.ops).sum();
    let elapsed: Duration = rounds.iter().map(|r| r.elapsed).sum();
    let mut samples = latency.unwrap_or_else(|| {
        rounds
            .iter()
            .flat_map(|r| r.samples.iter().copied())
            .collect()
    });
    samples.sort_unstable();
    Side {
        ops,
        errors: rounds.iter().map(|r| r.errors).sum(),
        ops_per_sec: round_to(ops as f64 / elapsed.as_secs_f64(), 1),
        p50_us: percentile_us(&samples, 0.50),
        p99_us: percentile_us(&samples, 0.99),
    }
}

/// Nearest-rank percentile of sorted nanosecond samples, in microseconds.
pub(crate) fn percentile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    round_to(sorted[rank - 1] as f64 / 1000.0, 3)
}

/// p99 of one round's own samples, in microseconds.
fn round_p99(round: &Round) -> f64 {
    let mut samples = round.samples.clone();
    samples.sort_unstable();
    percentile_us(&samples, 0.99)
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl Report {
    pub(crate) fn new(
        scenario: &'static str,
        baseline: &'static str,
        goal_ratio: Option<f64>,
        goal_p99_us: Option<f64>,
        m: Measured,
    ) -> Self {
        let ratios: Vec<f64> = m.ratios.unwrap_or_else(|| {
            m.ours
                .iter()
                .zip(&m.baseline)
                .map(|(a, b)| match m.ratio_of {
                    RatioOf::Throughput => a.ops_per_sec() / b.ops_per_sec(),
                    RatioOf::InverseP99 => round_p99(b) / round_p99(a),
                })
                .collect()
        });
        let ratio_min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let ratio_max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ratio = round_to(median(ratios), 3);
        let latency = if m.ours_latency.is_some() {
            "separate_pass"
        } else {
            "in_rounds"
        };
        let ours = side(&m.ours, m.ours_latency);
        let base = side(&m.baseline, m.baseline_latency);
        let meets_goal = (goal_ratio.is_some() || goal_p99_us.is_some()).then(|| {
            goal_ratio.is_none_or(|g| ratio >= g)
                && goal_p99_us.is_none_or(|g| ours.p99_us < g)
                && m.goal_also.unwrap_or(true)
        });
        Self {
            scenario,
            ops: ours.ops,
            ops_per_sec: ours.ops_per_sec,
            p50_us: ours.p50_us,
            p99_us: ours.p99_us,
            baseline,
            baseline_ops_per_sec: base.ops_per_sec,
            baseline_p50_us: base.p50_us,
            baseline_p99_us: base.p99_us,
            ratio,
            ratio_min: round_to(ratio_min, 3),
            ratio_max: round_to(ratio_max, 3),
            ratio_definition: m
                .ratio_definition
                .unwrap_or_else(|| m.ratio_of.definition()),
            rounds: m.ours.len(),
            errors: ours.errors,
            baseline_errors: base.errors,
            latency,
            bytes: m.bytes,
            baseline_bytes: m.baseline_bytes,
            goal_ratio,
            goal_p99_us,
            meets_goal,
            extras: Extras(m.extras),
            notes: m.notes,
        }
    }

    /// The table header matching [`table_row`](Self::table_row).
    pub(crate) fn table_header() -> String {
        format!(
            "{:<19} {:>12} {:>9} {:>9}   {:<33} {:>12} {:>9} {:>9}   {:>6} {:>13}  {}",
            "scenario",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "baseline",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "ratio",
            "(min–max)",
            "notes"
        )
    }

    /// One row of the human-readable table.
    pub(crate) fn table_row(&self) -> String {
        let mut notes = Vec::new();
        if let Some(met) = self.meets_goal {
            let mut goals = Vec::new();
            if let Some(goal) = self.goal_ratio {
                goals.push(format!("ratio ≥{goal:.2}"));
            }
            if let Some(goal) = self.goal_p99_us {
                goals.push(format!("p99 <{goal:.0} µs"));
            }
            notes.push(format!(
                "goal {}: {}",
                goals.join(", "),
                if met { "met" } else { "MISSED" }
            ));
        }
        notes.extend(self.notes.iter().cloned());
        if let Some(bytes) = self.bytes {
            match self.baseline_bytes {
                Some(b) => notes.push(format!("{bytes} B (baseline {b} B)")),
                None => notes.push(format!("{bytes} B")),
            }
        }
        if self.errors + self.baseline_errors > 0 {
            notes.push(format!("errors {}/{}", self.errors, self.baseline_errors));
        }
        format!(
            "{:<19} {:>12.0} {:>9.3} {:>9.3}   {:<33} {:>12.0} {:>9.3} {:>9.3}   {:>6.3} {:>13}  {}",
            self.scenario,
            self.ops_per_sec,
            self.p50_us,
            self.p99_us,
            self.baseline,
            self.baseline_ops_per_sec,
            self.baseline_p50_us,
            self.baseline_p99_us,
            self.ratio,
            format!("({:.3}–{:.3})", self.ratio_min, self.ratio_max),
            notes.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&samples, 0.50), 50.0);
        assert_eq!(percentile_us(&samples, 0.99), 99.0);
        assert_eq!(percentile_us(&[7000], 0.99), 7.0);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn ratio_is_the_median_of_round_pairs() {
        let round = |ops| Round {
            ops,
            errors: 0,
            elapsed: Duration::from_secs(1),
            samples: vec![1000; 10],
        };
        let m = Measured {
            ours: vec![round(90), round(50), round(100)],
            baseline: vec![round(100), round(100), round(100)],
            ..Measured::default()
        };
        let r = Report::new("x", "y", Some(0.8), None, m);
        assert_eq!((r.ratio, r.ratio_min, r.ratio_max), (0.9, 0.5, 1.0));
        assert_eq!(r.meets_goal, Some(true));
        assert_eq!(r.ops, 240);
    }
}
