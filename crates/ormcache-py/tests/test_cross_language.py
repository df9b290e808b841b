"""The Rust demo service (crates/ormcache-demo, a real process) and a Python
HybridCache on one Redis and prefix: a write through either is what the next read
through the other returns, and values written by either read in the other."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Demo, answered_at_once, run

from ormcache import DistributedCache, HybridCache, QueryCache

PREFIX = "crosslang"


@pytest.fixture
def demo(redis_server):
    d = Demo(redis_server.url, PREFIX)
    try:
        yield d
    finally:
        d.stop()


def test_writes_through_either_language_are_the_next_read_of_the_other(redis_server, demo):
    async def main():
        l2 = await DistributedCache.create(redis_url=redis_server.url, key_prefix=PREFIX, default_ttl=300)
        py = HybridCache(QueryCache(max_size=1000, default_ttl=60), l2)
        assert await py.wait_coherent(10)

        # A row created through the demo, read (and cached, in Redis) by the demo.
        status, _, row = demo.request("POST", "/users", {"name": "Ann", "email": "ann@example.com"})
        assert status == 201, row
        uid = row["id"]
        status, headers, body = demo.request("GET", f"/users/{uid}")
        assert (status, headers.get("x-cache")) == (200, "MISS")
        assert body == row

        # Rust wrote it; Python reads the same value (and keeps it in its L1).
        assert await py.get(f"user:{uid}") == row
        # An L1 hit now. (The demo's own fill of the key was a Redis write whose
        # tracking invalidation may land after Python's first fill and evict it:
        # read again until the L1 holds it; bounded.)
        for _ in range(100):
            hit = answered_at_once(py.get(f"user:{uid}"))
            if hit[0]:
                break
            assert await py.get(f"user:{uid}") == row
            await asyncio.sleep(0.02)
        assert hit == (True, row)

        # Python writes; the demo's very next read returns it, from its cache.
        from_python = dict(row, name="Written by Python")
        await py.set(f"user:{uid}", from_python)
        status, headers, body = demo.request("GET", f"/users/{uid}")
        assert (status, headers.get("x-cache")) == (200, "HIT")
        assert body == from_python

        # The demo writes (PATCH: its signals invalidate the key in every instance);
        # Python's next read does not return its L1 copy.
        status, _, patched = demo.request("PATCH", f"/users/{uid}", {"name": "Patched in Rust"})
        assert status == 200, patched
        got = await py.get(f"user:{uid}")
        assert got != from_python
        assert got in (None, patched)
        # The demo's next read caches the new row; Python reads it.
        status, _, body = demo.request("GET", f"/users/{uid}")
        assert body["name"] == "Patched in Rust"
        assert await py.get(f"user:{uid}") == body

        # Python deletes; the demo's next read misses its cache and reads the database.
        await py.delete(f"user:{uid}")
        status, headers, body = demo.request("GET", f"/users/{uid}")
        assert (status, headers.get("x-cache")) == (200, "MISS")
        assert body["name"] == "Patched in Rust"

        # A cached "not found" written by Rust (JSON null) reads as None in Python.
        status, headers, _ = demo.request("GET", "/users/999999")
        assert status == 404
        assert await py.exists("user:999999")
        assert await py.get("user:999999") is None

        # Python clears a pattern; the demo recomputes.
        assert await py.clear_pattern("user:*") >= 1
        status, headers, _ = demo.request("GET", f"/users/{uid}")
        assert headers.get("x-cache") == "MISS"

        stats = await py.get_stats()
        assert stats["coherence"]["coherent"] is True
        await py.close()

    run(main())


def test_python_values_read_in_rust_types(redis_server, demo):
    """A product written by Python is decoded by the demo as its Rust struct."""

    async def main():
        l2 = await DistributedCache.create(redis_url=redis_server.url, key_prefix=PREFIX)
        py = HybridCache(QueryCache(max_size=100, default_ttl=60), l2)
        assert await py.wait_coherent(10)
        status, _, row = demo.request("POST", "/products", {"name": "Lamp", "price": 12.5})
        assert status == 201, row
        pid = row["id"]
        value = dict(row, price=99.25, description="from python", in_stock=False)
        await py.set(f"product:{pid}", value)
        status, headers, body = demo.request("GET", f"/products/{pid}")
        assert (status, headers.get("x-cache")) == (200, "HIT")
        assert body == value
        # A value the Rust struct cannot decode is a miss for the demo (it reads the
        # database), never an error.
        await py.set(f"product:{pid}", {"not": "a product"})
        status, headers, body = demo.request("GET", f"/products/{pid}")
        assert status == 200 and body["name"] == "Lamp"
        await py.close()

    run(main())
