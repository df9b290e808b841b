"""Side-by-side bench, one run, one redis-server of its own: ormcache (this package)
vs the original ``fastapi-orm==0.11.0`` caches, raw redis-py (asyncio, hiredis) and
cashews.

    pip install fastapi-orm==0.11.0 greenlet "redis[hiredis]" cashews
    python crates/ormcache-py/bench/bench.py [--seconds 3] [--tasks 50]

L2: 50 asyncio tasks doing GET (or SET) of ~200-byte dict values for a fixed time:
ops/s and p99 latency. L1: one task awaiting ``hybrid.get(k)`` on a hit, and the
synchronous ``QueryCache.get`` hit: ns per call, in ``--rounds`` rounds that
alternate ours and the original's (best and median of the rounds). Ratios against raw redis-py (L2)
and the original package (L1) are printed; they are what is comparable on a shared
machine, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

VALUE = {
    "id": 12345,
    "name": "John Smith",
    "email": "john.smith@example.com",
    "active": True,
    "score": 98.5,
    "tags": ["admin", "staff", "beta"],
    "address": {"city": "Springfield", "zip": "12345", "street": "742 Evergreen Terrace"},
}
KEYS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    port = free_port()
    d = tempfile.mkdtemp(prefix="ormcache-bench-")
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    return p, port, d


async def load(op, tasks: int, seconds: float):
    """``tasks`` tasks calling ``op(i)`` for ``seconds``: (ops/s, p99 µs)."""
    lat = []
    stop = time.perf_counter() + seconds

    async def worker(w):
        i = w
        local = []
        pc = time.perf_counter_ns
        while time.perf_counter() < stop:
            t0 = pc()
            await op(i % KEYS)
            local.append(pc() - t0)
            i += tasks
        lat.extend(local)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    p99 = lat[int(len(lat) * 0.99)] / 1000 if lat else float("nan")
    return len(lat) / elapsed, p99


async def hit_latency(get, n=200_000):
    """ns per awaited call of ``get()``."""
    for _ in range(1000):
        await get()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await get()
    return (time.perf_counter_ns() - t0) / n


def sync_latency(get, n=500_000):
    for _ in range(1000):
        get()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        get()
    return (time.perf_counter_ns() - t0) / n


async def main(args):
    url = f"redis://127.0.0.1:{args.port}"
    rows = []

    def row(name, get, set_):
        rows.append((name, get, set_))
        print(f"  {name:38s} GET {get[0]:>9,.0f} ops/s p99 {get[1]:>8.0f} µs | SET {set_[0]:>9,.0f} ops/s p99 {set_[1]:>8.0f} µs", flush=True)

    async def run_l2(name, get, set_):
        for i in range(KEYS):
            await set_(i)
        g = await load(get, args.tasks, args.seconds)
        s = await load(set_, args.tasks, args.seconds)
        row(name, g, s)

    print(f"L2: {args.tasks} tasks, {len(json.dumps(VALUE))}-byte JSON values, {args.seconds}s each", flush=True)

    # ormcache
    import ormcache

    # socket_timeout as the seed configures it (redis-py has none by default): a
    # stall of the shared machine must not end the run.
    oc = await ormcache.DistributedCache.create(redis_url=url, key_prefix="oc", socket_timeout=5)
    await run_l2("ormcache DistributedCache", lambda i: oc.get(f"k{i}"), lambda i: oc.set(f"k{i}", VALUE, ttl=300))

    # raw redis-py asyncio + hiredis (json module for values, like the others)
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, max_connections=args.tasks)
    dumps, loads = json.dumps, json.loads

    async def rget(i):
        v = await r.get(f"raw:k{i}")
        return loads(v) if v is not None else None

    await run_l2("redis-py asyncio (hiredis)", rget, lambda i: r.set(f"raw:k{i}", dumps(VALUE), ex=300))

    # the original package
    have_orig = True
    try:
        from fastapi_orm.cache import QueryCache as OrigQueryCache
        from fastapi_orm.distributed_cache import DistributedCache as OrigDistributed
        from fastapi_orm.distributed_cache import HybridCache as OrigHybrid
    except Exception as e:  # pragma: no cover
        print(f"  fastapi-orm not importable ({e}); skipped")
        have_orig = False
    if have_orig:
        od = await OrigDistributed.create(redis_url=url, key_prefix="orig", max_connections=args.tasks)
        await run_l2("fastapi-orm 0.11.0 DistributedCache", lambda i: od.get(f"k{i}"), lambda i: od.set(f"k{i}", VALUE, ttl=300))

    # cashews
    try:
        from cashews import Cache

        cw = Cache()
        cw.setup(url + "/0", client_side=False, max_connections=args.tasks)
        await run_l2("cashews (redis backend)", lambda i: cw.get(f"cw:k{i}"), lambda i: cw.set(f"cw:k{i}", VALUE, expire=300))
    except Exception as e:  # pragma: no cover
        print(f"  cashews skipped: {e}")

    base = next(x for x in rows if x[0].startswith("redis-py"))
    ours = rows[0]
    print(f"  ormcache / redis-py: GET x{ours[1][0] / base[1][0]:.2f}, SET x{ours[2][0] / base[2][0]:.2f}")

    rounds = args.rounds
    print(f"L1 hit latency (one task, same key; {rounds} alternating rounds, best and median):", flush=True)
    hy = ormcache.HybridCache(ormcache.QueryCache(max_size=10_000, default_ttl=300), oc)
    await hy.wait_coherent(10)
    await hy.set("hot", VALUE)
    q = ormcache.QueryCache(max_size=10_000, default_ttl=300)
    q.set("hot", VALUE)
    if have_orig:
        oh = OrigHybrid(OrigQueryCache(default_ttl=300, max_size=10_000), od)
        await oh.set("hot", VALUE)
        oq = OrigQueryCache(default_ttl=300, max_size=10_000)
        oq.set("hot", VALUE)
    # Ours and the original alternate, round by round, so that a load change of the
    # shared machine hits both alike.
    samples = {"hy": [], "q": [], "oh": [], "oq": []}
    for _ in range(rounds):
        samples["hy"].append(await hit_latency(lambda: hy.get("hot"), n=100_000))
        samples["q"].append(sync_latency(lambda: q.get("hot"), n=200_000))
        if have_orig:
            samples["oh"].append(await hit_latency(lambda: oh.get("hot"), n=100_000))
            samples["oq"].append(sync_latency(lambda: oq.get("hot"), n=200_000))

    def best_median(xs):
        xs = sorted(xs)
        return xs[0], xs[len(xs) // 2]

    names = {
        "hy": "ormcache HybridCache  await get(k) hit",
        "q": "ormcache QueryCache         get(k) hit",
        "oh": "fastapi-orm HybridCache await get(k) hit",
        "oq": "fastapi-orm QueryCache      get(k) hit",
    }
    stats = {k: best_median(v) for k, v in samples.items() if v}
    for k, (best, median) in stats.items():
        print(f"  {names[k]}: best {best:6.0f} ns, median {median:6.0f} ns", flush=True)
    if have_orig:
        print(
            "  ormcache / fastapi-orm (best, median): "
            f"HybridCache hit x{stats['oh'][0] / stats['hy'][0]:.2f}, x{stats['oh'][1] / stats['hy'][1]:.2f} faster; "
            f"QueryCache hit x{stats['oq'][0] / stats['q'][0]:.2f}, x{stats['oq'][1] / stats['q'][1]:.2f} faster"
        )
    await hy.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=7, help="alternating L1 rounds")
    args = ap.parse_args()
    proc, args.port, d = start_redis()
    try:
        asyncio.run(main(args))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)
