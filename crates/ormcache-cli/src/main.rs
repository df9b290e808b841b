//! `ormcache`: the operator tool of ormcache. See `ormcache --help` and the
//! README's "Operator CLI" section.
//!
//! Reads go through [`ormcache::inspect`]; writes (`del`, `clear`,
//! `invalidate-tag`, `clear-tenant`) through a [`ormcache::HybridCache`] of its
//! own, so that every running instance applies them exactly as a write of one of
//! its peers (their L1 copies go, confirmed).

mod args;
mod commands;
mod fail;
mod out;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { fail::USAGE } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            fail::report(
                &cli.url,
                &fail::Failure::redis(format!("cannot start the runtime: {e}")),
            );
            return ExitCode::from(fail::REDIS);
        }
    };
    match runtime.block_on(commands::run(&cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            fail::report(&cli.url, &f);
            ExitCode::from(f.code)
        }
    }
}
