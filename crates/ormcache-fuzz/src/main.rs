//! `ormcache-fuzz <target|all|list> [--seconds N] [--min-cases N] [--cases N] [--seed S] [--replay SEED]`
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use ormcache_fuzz::{Budget, TARGETS, Target, fuzz_reporting, run_case, target};

const USAGE: &str =
    "usage: ormcache-fuzz <target|all|list> [--seconds N] [--cases N] [--seed S] [--replay SEED]";

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(which) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut budget = Budget {
        time: Duration::from_secs(10),
        cases: u64::MAX,
        min_cases: 0,
    };
    let mut seed = 0x6f72_6d63_6163_6865; // "ormcache"
    let mut replay = None;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().and_then(|v| parse_u64(v));
        match (flag.as_str(), value) {
            ("--seconds", Some(v)) => budget.time = Duration::from_secs(v),
            ("--cases", Some(v)) => budget.cases = v,
            ("--min-cases", Some(v)) => budget.min_cases = v,
            ("--seed", Some(v)) => seed = v,
            ("--replay", Some(v)) => replay = Some(v),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    if which == "list" {
        for t in TARGETS {
            println!("{:<10} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<&'static Target> = if which == "all" {
        TARGETS.iter().collect()
    } else if let Some(t) = target(which) {
        vec![t]
    } else {
        eprintln!("unknown target {which:?}; `ormcache-fuzz list` names them");
        return ExitCode::from(2);
    };
    if let Some(case) = replay {
        // One case, with the default panic hook: its message and location show.
        for t in chosen {
            match run_case(t, case) {
                Ok(()) => println!("target {}: case {case:#018x} passes", t.name),
                Err(e) => println!("target {}: case {case:#018x}: {e}", t.name),
            }
        }
        return ExitCode::SUCCESS;
    }
    // Panics are findings, reported with their case; the hook would print each.
    std::panic::set_hook(Box::new(|_| {}));
    let mut found = 0;
    for t in chosen {
        let report = fuzz_reporting(t, seed, budget, Duration::from_secs(60), |r| {
            eprintln!(
                "  … {} cases, {:.0} s, {} findings",
                r.cases,
                r.elapsed.as_secs_f64(),
                r.findings
            );
        });
        println!("{report}");
        found += report.findings;
    }
    if found == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
