#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs redis-server when it is
# missing (Debian/Ubuntu), then runs formatting and lint checks, every test against
# real redis-server processes, the doc tests and a short run of every fuzz target,
# and finally the library with each feature alone and with none.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "==> $1 not found; installing $2"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $1 is missing and this is not a Debian/Ubuntu system; install $2 (e.g. 'brew install redis') and rerun" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "error: $1 is missing; run 'apt-get install -y $2' as root and rerun" >&2
      exit 1
    fi
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "error: installing $2 did not provide $1" >&2; exit 1; }
}

need_pkg redis-server redis-server
# The dashboard test drives the page in a headless Chromium through chromedriver.
need_pkg chromium chromium
need_pkg chromedriver chromium-driver
echo "==> $(redis-server --version)"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> cargo doc (broken intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps
echo "==> cargo test (unit, integration and doc tests, a short run of every fuzz target)"
cargo test --workspace --all-features --no-fail-fast

# Code under cfg(not(feature = ...)) is compiled by none of the above. Each
# feature alone, and none: clippy on every target (the library, its tests, benches
# and examples must compile and be lint-clean) and the unit tests. The integration
# tests run once, above, with every feature: running them again per feature would
# multiply the longest part of the suite by seven for code they have already run.
for features in "" macros cluster axum sea-orm tls sentinel metrics; do
  label="${features:-no features}"
  echo "==> [$label] cargo clippy -p ormcache --all-targets"
  cargo clippy -p ormcache --no-default-features ${features:+--features "$features"} --all-targets -- -D warnings
  echo "==> [$label] cargo test -p ormcache --lib"
  cargo test -p ormcache --no-default-features ${features:+--features "$features"} --lib
done

echo "==> the Python package (scripts/test-python.sh)"
bash scripts/test-python.sh
