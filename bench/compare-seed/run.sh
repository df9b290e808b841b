#!/usr/bin/env bash
# The whole service against the original: the same HTTP load against
#   demo-redis      the demo (release build), L1 + Redis
#   demo-local      the demo, in-process cache only (REDIS_URL unset)
#   seed-distributed  fastapi-orm 0.11.0's documented FastAPI integration, DistributedCache
#   seed-hybrid       the same with HybridCache(QueryCache, DistributedCache)
# all on SQLite (a fresh file each) and one redis-server started here on a free port.
# Loads: hot cached GET /users/1, and 90 % GET / 10 % PATCH /users/{1..100}.
# The load generator (wrk, installed with apt-get when missing) runs on core 0, the
# server on core 1 (taskset); redis-server is not pinned.
#
# Settings (environment): DURATION (s, default 20), CONNECTIONS (32), USERS (100),
# ROUNDS (1: each cell is the median of ROUNDS runs), COST_GETS (2000),
# TARGETS (all four, space separated), DEMO_BIN (a prebuilt demo: skips the build),
# LOAD_CORE (0), SERVER_CORE (1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DURATION="${DURATION:-20}"
CONNECTIONS="${CONNECTIONS:-32}"
USERS="${USERS:-100}"
ROUNDS="${ROUNDS:-1}"
COST_GETS="${COST_GETS:-2000}"
TARGETS="${TARGETS:-demo-redis demo-local seed-distributed seed-hybrid}"
LOAD_CORE="${LOAD_CORE:-0}"
SERVER_CORE="${SERVER_CORE:-1}"
export USERS

say() { echo "compare-seed: $*" >&2; }

# --- tools ------------------------------------------------------------------
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    say "installing $* with apt-get"
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "$@" >&2
}
command -v wrk >/dev/null || apt_install wrk
command -v redis-server >/dev/null || apt_install redis-server
command -v taskset >/dev/null || apt_install util-linux
command -v python3 >/dev/null || apt_install python3 python3-venv
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

venv="$here/.venv"
if ! "$venv/bin/python" -c 'import fastapi_orm, redis, uvicorn, greenlet, aiosqlite' 2>/dev/null; then
    say "creating $venv with fastapi-orm 0.11.0 and uvicorn"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'fastapi-orm[redis]==0.11.0' uvicorn greenlet aiosqlite >&2
fi
py="$venv/bin/python"

if [ -z "${DEMO_BIN:-}" ]; then
    say "building the demo (release)"
    (cd "$repo" && cargo build --release -q -p ormcache-demo >&2)
    DEMO_BIN="${CARGO_TARGET_DIR:-$repo/target}/release/ormcache-demo"
fi
[ -x "$DEMO_BIN" ] || { say "no demo binary at $DEMO_BIN"; exit 1; }

# --- Redis --------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/compare-seed.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

redis_port="$("$py" "$here/client.py" free-port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis_url="redis://127.0.0.1:$redis_port"
say "redis-server $(redis-server --version | awk '{print $3}') on port $redis_port; work dir $work"

# --- one target -------------------------------------------------------------
server_pid=""
start() { # target port
    local target="$1" port="$2" db="$work/$1.db"
    case "$target" in
    demo-redis)
        PORT="$port" DATABASE_URL="sqlite://$db" REDIS_URL="$redis_url" CACHE_PREFIX="demo" \
            taskset -c "$SERVER_CORE" "$DEMO_BIN" >"$work/$target.log" 2>&1 &
        ;;
    demo-local)
        PORT="$port" DATABASE_URL="sqlite://$db" REDIS_URL="" \
            taskset -c "$SERVER_CORE" "$DEMO_BIN" >"$work/$target.log" 2>&1 &
        ;;
    seed-distributed | seed-hybrid)
        (cd "$here" && SEED_CACHE="${target#seed-}" REDIS_URL="$redis_url" \
            DATABASE_URL="sqlite+aiosqlite:///$db" \
            exec taskset -c "$SERVER_CORE" "$venv/bin/uvicorn" seed_app:app \
            --host 127.0.0.1 --port "$port" --no-access-log --log-level warning) \
            >"$work/$target.log" 2>&1 &
        ;;
    *) say "unknown target $target"; exit 1 ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    "$py" "$here/client.py" wait "$port" || { cat "$work/$target.log" >&2; exit 1; }
}

load() { # port patch-percent url
    PATCH_PERCENT="$2" taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
        --timeout 5s -s "$here/load.lua" "http://127.0.0.1:$1$3" | awk '/^RESULT/ {print}'
}

field() { # name line
    sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

results=()
for target in $TARGETS; do
    port="$("$py" "$here/client.py" free-port)"
    say "$target: starting on port $port, core $SERVER_CORE"
    redis-cli -p "$redis_port" flushall >/dev/null
    start "$target" "$port"
    "$py" "$here/client.py" seed "$port" "$USERS"
    cost="$("$py" "$here/client.py" cost "$port" "$redis_port" "$COST_GETS" "$USERS")"
    say "$target: Redis commands per cached GET: $cost"
    for spec in "hot GET:0:/users/1" "90/10 GET/PATCH:10:/"; do
        IFS=: read -r name patch url <<<"$spec"
        rps=(); p50=(); p99=(); errors=0
        for round in $(seq "$ROUNDS"); do
            say "$target: $name, round $round/$ROUNDS (${DURATION}s, $CONNECTIONS connections)"
            line="$(load "$port" "$patch" "$url")"
            [ -n "$line" ] || { say "wrk printed no result"; exit 1; }
            rps+=("$(field rps "$line")")
            p50+=("$(field p50_us "$line")")
            p99+=("$(field p99_us "$line")")
            errors=$((errors + $(field errors "$line")))
        done
        results+=("$(printf '%s|%s|%s|%s|%s|%s|%s' "$target" "$name" \
            "$(printf '%s\n' "${rps[@]}" | median)" \
            "$(printf '%s\n' "${p50[@]}" | median)" \
            "$(printf '%s\n' "${p99[@]}" | median)" \
            "$errors" "${cost%% *}")")
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
done

# --- the table -----------------------------------------------------------------
echo
echo "$(nproc) cores, load generator on core $LOAD_CORE (wrk -t1 -c$CONNECTIONS -d${DURATION}s), server on core $SERVER_CORE; $ROUNDS round(s) per cell (median); $(date -u +%F)"
echo
echo "| target | load | requests/s | p50 ms | p99 ms | errors | Redis commands per cached GET |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for r in "${results[@]}"; do
    IFS='|' read -r target name rps p50 p99 errors cost <<<"$r"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$name" \
        "$(printf '%.0f' "$rps")" \
        "$(awk -v u="$p50" 'BEGIN {printf "%.2f", u / 1000}')" \
        "$(awk -v u="$p99" 'BEGIN {printf "%.2f", u / 1000}')" \
        "$errors" "$cost"
done
