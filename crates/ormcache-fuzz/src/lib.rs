//! Fuzz targets for ormcache, on the stable toolchain: each target draws structured
//! inputs from a seeded PRNG, mutates valid encodings byte by byte, and checks
//! properties (never panic; `decode(encode(x)) == x`; a corrupt input is an error,
//! never a wrong value, where that is checkable).
//!
//! ```text
//! cargo run --profile fuzz -p ormcache-fuzz -- <target|all> --seconds 600
//! ```
//!
//! Every case has its own seed, printed with each finding; `--replay <seed>` runs
//! that one case again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

pub mod codec;
pub mod coherence;
pub mod doc;
pub mod glob;
pub mod keys;
pub mod rng;
pub mod url;

pub use rng::Rng;

/// The outcome of one case: `Err` describes a broken property.
pub type Check = Result<(), String>;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name given on the command line.
    pub name: &'static str,
    /// What it feeds and what it checks.
    pub about: &'static str,
    /// Runs one case.
    pub case: fn(&mut Rng) -> Check,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    codec::JSON,
    codec::MSGPACK,
    codec::LZ4,
    codec::TAGGED,
    coherence::TARGET,
    glob::TARGET,
    keys::TARGET,
    url::TARGET,
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// When a run stops: at `cases`, or once both `time` and `min_cases` are reached.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Wall-clock time.
    pub time: Duration,
    /// At most this many cases.
    pub cases: u64,
    /// At least this many cases, however long they take.
    pub min_cases: u64,
}

/// A finding: the case's seed and what broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Replays the case (`--replay`).
    pub seed: u64,
    /// The broken property or the panic message.
    pub what: String,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Cases run.
    pub cases: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// Every finding, counted.
    pub findings: u64,
    /// The first findings with distinct messages (at most 10).
    pub first: Vec<Finding>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "target {}: {} cases in {:.1} s ({:.0}/s), {} findings",
            self.target,
            self.cases,
            secs,
            self.cases as f64 / secs.max(1e-9),
            self.findings
        )?;
        for x in &self.first {
            write!(f, "\n  finding (--replay {:#018x}): {}", x.seed, x.what)?;
        }
        Ok(())
    }
}

/// The seed of case `n` of a run seeded with `seed`.
pub fn case_seed(seed: u64, n: u64) -> u64 {
    Rng::new(seed ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03)).next_u64()
}

/// Runs one case, turning a panic into a finding.
pub fn run_case(target: &Target, seed: u64) -> Check {
    let mut rng = Rng::new(seed);
    match catch_unwind(AssertUnwindSafe(|| (target.case)(&mut rng))) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-string payload".into());
            Err(format!("panic: {msg}"))
        }
    }
}

/// Runs `target` until the budget is spent. Panics are caught and counted (the
/// default panic hook still prints them; the caller may silence it).
pub fn fuzz(target: &'static Target, seed: u64, budget: Budget) -> Report {
    fuzz_reporting(target, seed, budget, Duration::MAX, |_| {})
}

/// [`fuzz`], handing the report so far to `progress` every `every`.
pub fn fuzz_reporting(
    target: &'static Target,
    seed: u64,
    budget: Budget,
    every: Duration,
    mut progress: impl FnMut(&Report),
) -> Report {
    let start = Instant::now();
    let mut next_progress = every;
    let mut report = Report {
        target: target.name,
        cases: 0,
        elapsed: Duration::ZERO,
        findings: 0,
        first: Vec::new(),
    };
    while report.cases < budget.cases {
        // Checking the clock every case would cost more than most cases.
        if report.cases.is_multiple_of(64) {
            let elapsed = start.elapsed();
            if report.cases >= budget.min_cases && elapsed >= budget.time {
                break;
            }
            if elapsed >= next_progress {
                report.elapsed = elapsed;
                progress(&report);
                next_progress = next_progress.saturating_add(every);
            }
        }
        let s = case_seed(seed, report.cases);
        report.cases += 1;
        if let Err(what) = run_case(target, s) {
            report.findings += 1;
            if report.first.len() < 10 && report.first.iter().all(|f| f.what != what) {
                report.first.push(Finding { seed: s, what });
            }
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// `Err(what)` unless `cond`.
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(what()) }
}

/// A short, printable form of bytes for a finding.
pub fn show(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(96).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 96 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}
