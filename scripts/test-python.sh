#!/usr/bin/env bash
# The Python package (crates/ormcache-py): lint its Rust, build and install it with
# pip (maturin, PEP 517) into a venv under the target directory, then run its pytest
# suite against real redis-server processes (and the demo service, built here).
# Needs Rust, Python >= 3.9 with venv, redis-server, redis-cli, openssl; PyPI for maturin, pytest,
# fastapi, httpx, msgpack.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$target"
venv="$target/py-venv"
python="${PYTHON:-python3}"

echo "==> ormcache-py: cargo fmt --check, clippy"
cargo fmt --manifest-path crates/ormcache-py/Cargo.toml -- --check
cargo clippy --manifest-path crates/ormcache-py/Cargo.toml --all-targets -- -D warnings

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  "$python" -m venv "$venv"
fi
echo "==> pip install maturin pytest fastapi httpx msgpack uvloop"
"$venv/bin/python" -m pip install -q --upgrade pip maturin pytest fastapi httpx msgpack uvloop
echo "==> pip install ./crates/ormcache-py"
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./crates/ormcache-py

echo "==> building the demo service for the cross-language tests"
cargo build -p ormcache-demo --bin ormcache-demo
export ORMCACHE_DEMO_BIN="$target/debug/ormcache-demo"
echo "==> building the harness's topology starter for the TLS/cluster/Sentinel tests"
cargo build -p ormcache-testing --example topology
export ORMCACHE_TOPOLOGY_BIN="$target/debug/examples/topology"

echo "==> pytest crates/ormcache-py/tests"
cd crates/ormcache-py
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
