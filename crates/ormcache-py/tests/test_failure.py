"""Redis killed and paused (SIGSTOP) under the Python API: the read paths the seed
says fall back (HybridCache reads, the decorator, get_or_compute) raise nothing, and
no call hangs past the timeouts. Bounds here are "not a hang" bounds (many times the
configured timeouts), not timing assertions."""

from __future__ import annotations

import asyncio

import pytest

from conftest import run

from ormcache import CacheError, DistributedCache, HybridCache, QueryCache

SOCKET_TIMEOUT = 0.3
NOT_A_HANG = 15  # seconds


async def bounded(awaitable):
    return await asyncio.wait_for(awaitable, NOT_A_HANG)


async def make(url):
    l2 = await DistributedCache.create(
        redis_url=url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    hybrid = HybridCache(QueryCache(max_size=100, default_ttl=60), l2, degraded_max_age=30)
    assert await hybrid.wait_coherent(10)
    return l2, hybrid


@pytest.mark.parametrize("failure", ["killed", "paused"])
def test_read_paths_fall_back_and_never_hang(redis_server, failure):
    calls = []

    async def main():
        l2, hybrid = await make(redis_server.url)
        await hybrid.set("warm", {"v": 1})

        @hybrid.cached(ttl=60, key_builder=lambda n: f"computed:{n}")
        async def compute(n):
            calls.append(n)
            return {"n": n}

        assert await compute(1) == {"n": 1}

        if failure == "killed":
            redis_server.kill()
        else:
            redis_server.pause()
        try:
            for i in range(20):
                # HybridCache reads: no exception, L1 (young entries) or a miss.
                assert await bounded(hybrid.get("warm")) in ({"v": 1}, None)
                assert await bounded(hybrid.get(f"cold:{i}")) is None
                assert await bounded(hybrid.batch_get(["warm", "cold"])) in (
                    {"warm": {"v": 1}, "cold": None},
                    {"warm": None, "cold": None},
                )
                # The decorator: the function's value, computed when Redis cannot answer.
                assert await bounded(compute(100 + i)) == {"n": 100 + i}
                assert await bounded(hybrid.get_or_compute(f"gc:{i}", lambda: asyncio.sleep(0, "x"))) == "x"
                # ping answers False, it does not raise.
                assert await bounded(l2.ping()) is False
                # Plain DistributedCache calls raise CacheError (not hang).
                with pytest.raises(CacheError) as e:
                    await bounded(l2.get("warm"))
                assert e.value.kind in ("connection", "timeout", "circuit_open")
                # Writes report the failure as a CacheError.
                with pytest.raises(CacheError):
                    await bounded(hybrid.set("w", 1))
            assert calls[0] == 1 and calls[1:] == list(range(100, 120))
            stats = await bounded(hybrid.get_stats())
            assert stats["coherence"]["fallbacks"] > 0
        finally:
            redis_server.resume()

    run(main())


def test_recovers_after_restart(redis_server):
    async def main():
        l2, hybrid = await make(redis_server.url)
        await hybrid.set("k", 1)
        redis_server.kill()
        assert await bounded(hybrid.get("k")) in (1, None)
        redis_server.start()
        # Back: writes and reads go through again (the breaker probes, the stream
        # resubscribes).
        deadline = asyncio.get_running_loop().time() + NOT_A_HANG
        while True:
            try:
                await hybrid.set("k", 2)
                break
            except CacheError:
                assert asyncio.get_running_loop().time() < deadline, "never recovered"
                await asyncio.sleep(0.2)
        assert await hybrid.wait_coherent(NOT_A_HANG)
        assert await hybrid.get("k") == 2
        assert await l2.get("k") == 2
        await hybrid.close()

    run(main())


def test_cancelled_calls_leave_the_others_working(redis_server):
    async def main():
        l2, hybrid = await make(redis_server.url)
        await l2.set("k", 1)
        redis_server.pause()
        try:
            # Cancelled while Redis is silent: the caller's timeout wins.
            for _ in range(5):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(l2.get("k"), 0.01)
        finally:
            redis_server.resume()
        # The calls of the same loop still complete (their results were queued
        # after the cancelled ones).
        deadline = asyncio.get_running_loop().time() + NOT_A_HANG
        while True:
            try:
                assert await bounded(l2.get("k")) == 1
                break
            except CacheError:  # the breaker may be open for a moment
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        results = await bounded(asyncio.gather(*(l2.get("k") for _ in range(100))))
        assert results == [1] * 100
        await hybrid.close()

    run(main())
