//! CI's short run: every target for a few seconds (or 20,000 cases), no findings.

use std::time::Duration;

use ormcache_fuzz::{Budget, TARGETS, fuzz};

#[test]
fn every_target_runs_clean() {
    let budget = Budget {
        time: Duration::from_secs(3),
        cases: 20_000,
        min_cases: 0,
    };
    let mut failures = Vec::new();
    for t in TARGETS {
        let report = fuzz(t, 0x5eed, budget);
        eprintln!("{report}");
        // A target that ran almost nothing proves nothing.
        assert!(report.cases >= 200, "{report}");
        if report.findings > 0 {
            failures.push(report.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
