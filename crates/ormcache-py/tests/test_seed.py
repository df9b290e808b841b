"""Every example of the seed document (DISTRIBUTED_CACHE.md), with only the import
changed (``fastapi_orm`` -> ``ormcache``) and the Redis URL pointed at the test's own
server. The ORM pieces the examples call (``User.all``, ``session``...) are small
in-memory stand-ins: they are the database, not the cache."""


import asyncio
import contextvars
import datetime
import hashlib
import json
import logging
import re

import pytest

from conftest import answered_at_once, run

from ormcache import (  # the only line that differs from the seed
    CacheError,
    DistributedCache,
    HybridCache,
    InvalidInputError,
    QueryCache,
    get_signals,
    receiver,
    set_current_tenant,
)

logger = logging.getLogger("seed-examples")


# ---------------------------------------------------------------- ORM stand-ins


class FakeDB:
    """Rows and a count of queries, to tell a cache hit from a database read."""

    def __init__(self):
        self.queries = 0
        self.users = {i: {"id": i, "name": f"user{i}", "email": f"u{i}@example.com"} for i in range(1, 6)}


class UserRow:
    def __init__(self, data):
        self.__dict__.update(data)
        self._data = data

    def to_response(self):
        return dict(self._data)


def make_user_model(db: FakeDB):
    class User:
        @staticmethod
        async def all(session, limit=100):
            db.queries += 1
            return [dict(u) for u in list(db.users.values())[:limit]]

        @staticmethod
        async def get(session, user_id):
            db.queries += 1
            u = db.users.get(user_id)
            return UserRow(u) if u else None

        @staticmethod
        async def create(session, **data):
            db.queries += 1
            uid = max(db.users, default=0) + 1
            db.users[uid] = {"id": uid, **data}
            return UserRow(db.users[uid])

        @staticmethod
        async def delete_by_id(session, user_id):
            db.queries += 1
            return db.users.pop(user_id, None) is not None

        @staticmethod
        async def update_by_id(session, user_id, **data):
            db.queries += 1
            db.users[user_id].update(data)

        @staticmethod
        async def bulk_update(session, updates):
            db.queries += 1
            for uid, data in updates.items():
                db.users[uid].update(data)

    return User


session = object()


# ---------------------------------------------------------------- Quick Start


def test_quick_start_basic_usage(redis_url, capsys):
    async def main():
        # Create distributed cache
        cache = await DistributedCache.create(
            redis_url=redis_url,
            default_ttl=300,  # 5 minutes default TTL
        )

        # Set value
        await cache.set("user:1", {"id": 1, "name": "John"}, ttl=60)

        # Get value
        user = await cache.get("user:1")
        print(user)  # {"id": 1, "name": "John"}
        assert user == {"id": 1, "name": "John"}

        # Delete value
        await cache.delete("user:1")
        assert await cache.get("user:1") is None

        # Clear all caches
        await cache.set("user:2", {"id": 2}, ttl=60)
        await cache.clear()
        assert await cache.get("user:2") is None
        await cache.close()

    run(main())
    assert capsys.readouterr().out == "{'id': 1, 'name': 'John'}\n"


def test_decorator_usage(redis_url):
    db = FakeDB()
    User = make_user_model(db)

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)

        @cache.cached(ttl=120, key_prefix="users")
        async def get_all_users(session):
            """This result will be cached for 2 minutes"""
            return await User.all(session, limit=100)

        # First call - hits database
        users = await get_all_users(session)
        # Second call - uses cache (much faster!)
        users2 = await get_all_users(session)
        assert users == users2 == [dict(u) for u in db.users.values()]
        assert db.queries == 1
        assert get_all_users.__doc__ == "This result will be cached for 2 minutes"
        await cache.close()

    run(main())


# ---------------------------------------------------------------- Configuration


def test_configuration_options(redis_server):
    async def main():
        cache = await DistributedCache.create(
            redis_url=redis_server.url + "/0",  # Redis connection URL
            default_ttl=300,  # Default TTL in seconds
            key_prefix="myapp",  # Prefix for all keys
            serializer="json",  # "json" or "pickle"
            decode_responses=False,  # Redis decode responses
            max_connections=50,  # Connection pool size
            socket_timeout=5,  # Socket timeout
            socket_connect_timeout=5,  # Connection timeout
        )
        await cache.set("k", {"v": 1})
        # The prefix and the plain JSON layout, as the original package stores them.
        assert redis_server.command("GET", "myapp:k") == b'$7\r\n{"v":1}\r\n'
        ttl = await cache.ttl("k")
        assert 295 <= ttl <= 300
        assert cache.default_ttl == 300
        assert cache.key_prefix == "myapp"
        await cache.close()

    run(main())


def test_performance_tuning_connection_pooling(redis_url):
    async def main():
        # Optimize Redis connection pool
        cache = await DistributedCache.create(
            redis_url=redis_url,
            max_connections=50,  # Increase for high traffic
            socket_timeout=5,  # Prevent hanging
            socket_connect_timeout=2,  # Fast fail on connection issues
            socket_keepalive=True,  # Keep connections alive
            health_check_interval=30,  # Regular health checks
        )
        assert await cache.ping() is True
        await cache.close()

    run(main())


def test_serialization_strategy(redis_url):
    async def main():
        # JSON: Fast, human-readable, limited types
        cache_json = await DistributedCache.create(redis_url=redis_url, serializer="json", key_prefix="j")
        # Pickle: Slower, binary, supports all Python types
        cache_pickle = await DistributedCache.create(redis_url=redis_url, serializer="pickle", key_prefix="p")
        when = datetime.datetime(2024, 1, 2, 3, 4, 5)
        await cache_json.set("d", {"when": when, "n": [1, 2.5, None, True]})
        # JSON falls back to str() for what it cannot write, as the original did.
        assert await cache_json.get("d") == {"when": "2024-01-02 03:04:05", "n": [1, 2.5, None, True]}
        await cache_pickle.set("d", {"when": when, "set": {1, 2}})
        assert await cache_pickle.get("d") == {"when": when, "set": {1, 2}}
        # MessagePack (ormcache's addition).
        cache_msgpack = await DistributedCache.create(redis_url=redis_url, serializer="msgpack", key_prefix="m")
        await cache_msgpack.set("d", {"a": [1, "x", None], "b": 1.5})
        assert await cache_msgpack.get("d") == {"a": [1, "x", None], "b": 1.5}
        with pytest.raises(ValueError):
            await DistributedCache.create(redis_url=redis_url, serializer="yaml")
        for c in (cache_json, cache_pickle, cache_msgpack):
            await c.close()

    run(main())


# ---------------------------------------------------------------- Core methods


def test_core_methods_set_get_delete(redis_url):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        value = {"id": 7}
        user1_data, user2_data, user3_data = {"id": 1}, {"id": 2}, {"id": 3}
        # Basic set
        await cache.set("key", value)
        # With custom TTL
        await cache.set("key", value, ttl=60)
        # Set multiple values
        await cache.set("user:1", user1_data)
        await cache.set("user:2", user2_data)
        await cache.set("user:3", user3_data)

        # Get single value
        value = await cache.get("key")
        assert value == {"id": 7}
        # Returns None if not found or expired
        user = await cache.get("user:999")  # None
        assert user is None

        # Delete single key
        deleted = await cache.delete("user:1")  # Returns True/False
        assert deleted is True
        assert await cache.delete("user:1") is False
        # Delete multiple keys
        await cache.delete("user:1")
        await cache.delete("user:2")
        assert await cache.get("user:2") is None
        assert await cache.get("user:3") == {"id": 3}
        await cache.close()

    run(main())


def test_pattern_based_operations(redis_url, capsys):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        for i in range(5):
            await cache.set(f"user:{i}", i)
        await cache.set("session:2024-01", 1)
        await cache.set("session:2025-01", 1)
        await cache.set("other", 1)

        # Clear all user caches
        count = await cache.clear_pattern("user:*")
        print(f"Cleared {count} keys")
        # Clear specific pattern
        assert await cache.clear_pattern("session:2024-*") == 1
        assert await cache.get("session:2025-01") == 1
        # Clear all caches
        await cache.clear()
        assert await cache.get("other") is None
        await cache.close()

    run(main())
    assert capsys.readouterr().out == "Cleared 5 keys\n"


def test_advanced_methods_exists_and_ttl(redis_url, capsys):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        await cache.set("user:1", {"id": 1}, ttl=100)
        if await cache.exists("user:1"):
            print("User cache exists!")
        assert not await cache.exists("user:2")

        # Get remaining TTL
        ttl = await cache.ttl("user:1")
        print(f"Expires in {ttl} seconds")
        assert 95 <= ttl <= 100
        # Extend expiration
        assert await cache.expire("user:1", 3600) is True  # Reset to 1 hour
        assert 3590 <= await cache.ttl("user:1") <= 3600
        assert await cache.ttl("user:2") == -2
        assert await cache.expire("user:2", 10) is False
        await cache.close()

    run(main())
    out = capsys.readouterr().out
    assert out.startswith("User cache exists!\nExpires in ")


def test_statistics(redis_url):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url, default_ttl=300)
        await cache.set("a", 1)
        await cache.get("a")
        await cache.get("a")
        await cache.get("missing")
        stats = await cache.get_stats()
        print(stats)
        for field in ("hits", "misses", "sets", "errors", "hit_rate", "keys_count", "default_ttl"):
            assert field in stats, field
        assert (stats["hits"], stats["misses"], stats["sets"], stats["errors"]) == (2, 1, 1, 0)
        assert stats["hit_rate"] == pytest.approx(66.67, abs=0.01)
        assert stats["keys_count"] == 1
        assert stats["default_ttl"] == 300
        await cache.close()

    run(main())


def test_health_check(redis_server, capsys):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url)
        if await cache.ping():
            print("Redis is healthy!")
        else:
            print("Redis connection failed")
        redis_server.kill()
        if await cache.ping():
            print("Redis is healthy!")
        else:
            print("Redis connection failed")
        await cache.close()

    run(main())
    assert capsys.readouterr().out == "Redis is healthy!\nRedis connection failed\n"


# ---------------------------------------------------------------- Decorators


def test_basic_decorator(redis_url):
    calls = []

    async def perform_heavy_computation():
        calls.append(1)
        return {"answer": 42}

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)

        @cache.cached(ttl=300)
        async def expensive_operation():
            # This will be cached for 5 minutes
            result = await perform_heavy_computation()
            return result

        assert await expensive_operation() == {"answer": 42}
        assert await expensive_operation() == {"answer": 42}
        assert len(calls) == 1
        await cache.close()

    run(main())


def test_decorator_with_key_prefix(redis_server):
    products = {"books": [{"id": 1}], "games": [{"id": 2}]}
    queries = []

    class Product:
        @staticmethod
        async def filter(session, category):
            queries.append(category)
            return products[category]

    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url)

        @cache.cached(ttl=60, key_prefix="products")
        async def get_products(category: str):
            return await Product.filter(session, category=category)

        assert await get_products("books") == [{"id": 1}]
        assert await get_products("games") == [{"id": 2}]
        assert await get_products("books") == [{"id": 1}]
        assert queries == ["books", "games"]
        # Cache keys: "products:<hash>", the original package's hash.
        func_name = f"{get_products.__module__}.get_products"
        digest = hashlib.md5(f'{func_name}:["books"]:{{}}'.encode()).hexdigest()
        assert await cache.exists(f"products:{digest}")
        await cache.close()

    run(main())


def test_custom_key_builder(redis_server):
    db = FakeDB()
    User = make_user_model(db)

    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url)

        @cache.cached(ttl=120, key_builder=lambda user_id: f"user:{user_id}")
        async def get_user_by_id(user_id: int):
            u = await User.get(session, user_id)
            return u.to_response()

        assert await get_user_by_id(3) == db.users[3]
        assert await get_user_by_id(3) == db.users[3]
        assert db.queries == 1
        # Cache key: "user:123"
        assert await cache.get("user:3") == db.users[3]
        assert 0 < await cache.ttl("user:3") <= 120
        await cache.close()

    run(main())


def test_decorator_single_flight_and_errors(redis_url):
    calls = []

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)

        @cache.cached(ttl=60, key_builder=lambda n: f"slow:{n}")
        async def slow(n):
            calls.append(n)
            await asyncio.sleep(0.2)
            return n * 2

        results = await asyncio.gather(*(slow(1) for _ in range(20)))
        assert results == [2] * 20
        assert calls == [1]

        @cache.cached(ttl=60, key_builder=lambda: "boom")
        async def boom():
            raise KeyError("from the loader")

        with pytest.raises(KeyError):
            await boom()
        assert await cache.exists("boom") is False  # errors are never cached
        await cache.close()

    run(main())


# ---------------------------------------------------------------- HybridCache


def test_hybrid_usage_and_stats(redis_url):
    async def main():
        value = {"id": 1, "name": "John"}
        # Create L1 (in-memory) cache
        l1_cache = QueryCache(max_size=1000, default_ttl=60)
        # Create L2 (Redis) cache
        l2_cache = await DistributedCache.create(redis_url=redis_url, default_ttl=300)
        # Combine into hybrid cache
        cache = HybridCache(l1_cache, l2_cache)
        assert await cache.wait_coherent(10)

        # Use like any cache
        await cache.set("key", value)
        value = await cache.get("key")
        assert value == {"id": 1, "name": "John"}

        # Get flow: L2 then L1. Another writer (the plain L2) stores user:1.
        await l2_cache.set("user:1", {"id": 1})
        assert await cache.get("user:1") == {"id": 1}  # from L2, L1 filled
        assert await cache.get("user:1") == {"id": 1}  # from L1
        assert await cache.get("user:404") is None

        stats = await cache.get_stats()
        print(stats)
        assert set(stats) >= {"l1", "l2", "combined_hit_rate"}
        assert set(stats["l1"]) >= {"hits", "misses", "hit_rate", "size"}
        assert set(stats["l2"]) >= {"hits", "misses", "hit_rate", "keys_count"}
        # (The fleet protocol: the writer keeps no copy of what it wrote, so the
        # first get of "key" is an L1 miss too.)
        assert stats["l1"]["hits"] == 1
        # An L1 miss is counted once (not by the synchronous try and again by the async get).
        assert stats["l1"]["misses"] == 3
        assert stats["l2"]["keys_count"] == 2
        assert 0 < stats["combined_hit_rate"] <= 100
        await cache.close()

    run(main())


def test_hybrid_protocol_is_chosen_by_name(redis_url):
    async def main():
        l1 = QueryCache(max_size=100, default_ttl=60)
        l2 = await DistributedCache.create(redis_url=redis_url, key_prefix="proto")
        with pytest.raises(ValueError, match="fleet.*broadcast"):
            HybridCache(l1, l2, protocol="gossip")
        # Two instances on the broadcast protocol: a confirmed write through one
        # is fresh on the other, which held the old value in L1.
        a = HybridCache(QueryCache(max_size=100, default_ttl=60), l2, protocol="broadcast")
        b_l2 = await DistributedCache.create(redis_url=redis_url, key_prefix="proto")
        b = HybridCache(QueryCache(max_size=100, default_ttl=60), b_l2, protocol="broadcast")
        assert await a.wait_coherent(10) and await b.wait_coherent(10)
        await a.set("k", 1)
        assert await b.get("k") == 1
        assert await b.get("k") == 1
        await a.set("k", 2)
        assert await b.get("k") == 2
        await a.close()
        await b.close()

    run(main())


async def coherent_hybrid(redis_url):
    """A DistributedCache and a coherent HybridCache on it."""
    l2 = await DistributedCache.create(redis_url=redis_url)
    cache = HybridCache(QueryCache(max_size=100, default_ttl=60), l2)
    assert await cache.wait_coherent(10)
    return l2, cache


def test_hybrid_l1_hit_completes_inside_the_await(redis_url):
    async def main():
        l2, cache = await coherent_hybrid(redis_url)
        await cache.set("k", {"v": 1})
        # (The fleet protocol: the writer's copy comes with its next read.)
        assert await cache.get("k") == {"v": 1}
        # The hit never suspends: the value is there at the first step, no thread
        # or loop hop; it is counted as an L1 hit.
        before = (await cache.get_stats())["l1"]["hits"]
        assert answered_at_once(cache.get("k")) == (True, {"v": 1})
        assert (await cache.get_stats())["l1"]["hits"] == before + 1
        # A stored None is a hit too (not taken for a miss).
        await cache.set("none", None)
        assert await cache.get("none") is None
        assert answered_at_once(cache.get("none")) == (True, None)
        # A miss goes to Redis: it suspends.
        assert answered_at_once(cache.get("other")) == (False, None)
        assert await cache.get("other") is None
        await l2.set("only-in-redis", [1])
        assert await cache.get("only-in-redis") == [1]
        assert answered_at_once(cache.get("only-in-redis")) == (True, [1])
        # get_or_compute and @cached hits too; the loader is not called again.
        calls = []

        async def load():
            calls.append(1)
            return {"loaded": True}

        assert await cache.get_or_compute("computed", load, 60) == {"loaded": True}
        # (The fleet protocol: Redis reports the fill's own store back, which drops
        # the copy the fill took; the next read takes it from L2, tracked.)
        await asyncio.sleep(0.1)
        assert await cache.get_or_compute("computed", load, 60) == {"loaded": True}
        assert answered_at_once(cache.get_or_compute("computed", load, 60)) == (True, {"loaded": True})

        @cache.cached(ttl=60, key_builder=lambda n: f"deco:{n}")
        async def deco(n):
            calls.append(n)
            return n * 2

        assert await deco(21) == 42
        await asyncio.sleep(0.1)
        assert await deco(21) == 42
        assert answered_at_once(deco(21)) == (True, 42)
        assert calls == [1, 21]
        await cache.close()

    run(main())


def test_hybrid_l1_hits_stay_in_their_tenant(redis_url):
    async def main():
        _, cache = await coherent_hybrid(redis_url)

        async def in_tenant(t, value):
            set_current_tenant(t)
            if value is not None:
                await cache.set("k", value)
                # (The fleet protocol: the writer's copy comes with its next read;
                # Redis's report of the write, which drops any copy, comes first.)
                await asyncio.sleep(0.1)
                await cache.get("k")
            return answered_at_once(cache.get("k")), await cache.get("k")

        # Tenant a's entry is an L1 hit in a, and never answers in b or untenanted.
        assert await asyncio.create_task(in_tenant("a", "A")) == ((True, "A"), "A")
        assert await asyncio.create_task(in_tenant("b", None)) == ((False, None), None)
        assert await asyncio.create_task(in_tenant("b", "B")) == ((True, "B"), "B")
        assert await asyncio.create_task(in_tenant("a", None)) == ((True, "A"), "A")
        assert await cache.get("k") is None
        await cache.close()

    run(main())


def test_a_tenant_s_stored_name_reaches_nothing_untenanted():
    # A tenant's L1 entry is stored under "__oc:t:{tenant}:{key}". Spelled out
    # untenanted, that name finds, ages and deletes nothing.
    l1 = QueryCache(max_size=100, default_ttl=60)

    def as_acme(fn):
        def scoped():
            set_current_tenant("acme")
            return fn()

        return contextvars.copy_context().run(scoped)

    as_acme(lambda: l1.set("secret", "acme's"))
    raw = "__oc:t:acme:secret"
    assert l1.get(raw) is None
    assert l1.exists(raw) is False
    assert l1.ttl(raw) == -2
    assert l1.delete(raw) is False
    assert as_acme(lambda: l1.get("secret")) == "acme's"


def test_coalesce_gets_shares_mgets(redis_server):
    # Not in the original package: with coalesce_gets=True, concurrent gets share
    # MGETs and each still gets its own answer; without it, no MGET is sent.
    def mgets():
        stats = redis_server.command("INFO", "commandstats").decode()
        found = re.search(r"cmdstat_mget:calls=(\d+)", stats)
        return int(found.group(1)) if found else 0

    async def main():
        for coalesce in (False, True):
            cache = await DistributedCache.create(
                redis_url=redis_server.url, key_prefix=f"co{coalesce}", coalesce_gets=coalesce
            )
            for i in range(50):
                await cache.set(f"k{i}", {"i": i})
            before = mgets()
            got = await asyncio.gather(*(cache.get(f"k{i % 60}") for i in range(300)))
            assert got == [{"i": i % 60} if i % 60 < 50 else None for i in range(300)]
            sent = mgets() - before
            assert (sent > 0) == coalesce, (coalesce, sent)
            await cache.close()

    run(main())


def test_batch_operations(redis_url):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        users = [{"id": i} for i in range(3)]
        # Use Redis pipeline
        assert await cache.batch_set({f"user:{u['id']}": u for u in users}) == 3
        assert await cache.batch_get(["user:0", "user:2", "user:9"]) == {
            "user:0": {"id": 0},
            "user:2": {"id": 2},
            "user:9": None,
        }
        assert await cache.batch_delete(["user:0", "user:9"]) == 1
        assert await cache.set_many([("a", 1), ("b", 2)], ttl=30) == 2
        assert await cache.get_many(["a", "b", "c"]) == [1, 2, None]
        assert await cache.delete_many(["a", "b", "c"]) == 2

        hybrid = HybridCache(QueryCache(max_size=100, default_ttl=60), cache)
        assert await hybrid.batch_set({"h1": 1, "h2": [2]}, ttl=60) == 2
        assert await hybrid.batch_get(["h1", "h2", "h3"]) == {"h1": 1, "h2": [2], "h3": None}
        assert await hybrid.batch_delete(["h1", "h2"]) == 2
        await hybrid.close()

    run(main())


def test_tags_and_get_or_compute(redis_url):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        await cache.set_with_tags("p:1", {"id": 1}, ["products"], ttl=60)
        await cache.set_with_tags("p:2", {"id": 2}, ["products"], ttl=60)
        assert await cache.get("p:1") == {"id": 1}
        await cache.invalidate_tag("products")
        assert await cache.get_many(["p:1", "p:2"]) == [None, None]

        async def load():
            return {"loaded": True}

        assert await cache.get_or_compute("gc", load, ttl=30) == {"loaded": True}
        assert await cache.get_or_compute("gc", load, ttl=30, lock=True) == {"loaded": True}
        await cache.close()

    run(main())


def test_errors_carry_kind_and_message(redis_server):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url, socket_timeout=0.5)
        with pytest.raises(InvalidInputError) as e:
            await cache.set("", 1)
        assert e.value.kind == "invalid_input"
        assert isinstance(e.value, CacheError) and isinstance(e.value, ValueError)
        assert '""' in str(e.value)
        redis_server.kill()
        with pytest.raises(CacheError) as e:
            await cache.get("user:1")
        assert e.value.kind in ("connection", "timeout", "circuit_open")
        assert "user:1" in e.value.message or e.value.kind == "circuit_open"
        with pytest.raises(CacheError):
            await DistributedCache.create(redis_url=redis_server.url, socket_connect_timeout=0.5)

    run(main())


def test_every_url_form_parses(redis_server):
    # redis:// with a db, a user name and password the server does not need are
    # refused by the server, not by the parser; a bad scheme is an input error.
    async def main():
        cache = await DistributedCache.create(redis_url=f"redis://127.0.0.1:{redis_server.port}/3")
        await cache.set("k", 1)
        assert redis_server.command("SELECT", "3")  # exists
        await cache.close()
        with pytest.raises(CacheError) as e:
            await DistributedCache.create(redis_url="http://127.0.0.1:1")
        assert e.value.kind == "invalid_input"

    run(main())


# ---------------------------------------------------------------- FastAPI integration


def test_fastapi_integration(redis_url):
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.testclient import TestClient
    from pydantic import BaseModel

    db_rows = FakeDB()
    User = make_user_model(db_rows)

    class Database:
        def __init__(self, url):
            self.url = url

        async def get_session(self):
            yield session

        async def create_tables(self):
            pass

        async def close(self):
            pass

    class UserCreate(BaseModel):
        name: str
        email: str

    app = FastAPI()
    db = Database("postgresql+asyncpg://...")

    # Global cache instance
    _cache = None

    async def get_cache() -> DistributedCache:
        nonlocal _cache
        if _cache is None:
            _cache = await DistributedCache.create(redis_url=redis_url)
        return _cache

    async def get_db():
        async for session_ in db.get_session():
            yield session_

    @app.on_event("startup")
    async def startup():
        await db.create_tables()
        await get_cache()  # Initialize cache

    @app.on_event("shutdown")
    async def shutdown():
        cache = await get_cache()
        await cache.close()
        await db.close()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int, session=Depends(get_db), cache: DistributedCache = Depends(get_cache)):
        # Try cache first
        cache_key = f"user:{user_id}"
        user_data = await cache.get(cache_key)
        if user_data is not None:
            return user_data
        # Cache miss - fetch from database
        user = await User.get(session, user_id)
        if user:
            user_data = user.to_response()
            await cache.set(cache_key, user_data, ttl=300)
            return user_data
        raise HTTPException(status_code=404, detail="User not found")

    @app.post("/users")
    async def create_user(user_data: UserCreate, session=Depends(get_db), cache: DistributedCache = Depends(get_cache)):
        user = await User.create(session, **user_data.dict())
        # Cache the new user
        cache_key = f"user:{user.id}"
        await cache.set(cache_key, user.to_response(), ttl=300)
        # Invalidate list cache
        await cache.clear_pattern("users:list:*")
        return user.to_response()

    @app.delete("/users/{user_id}")
    async def delete_user(user_id: int, session=Depends(get_db), cache: DistributedCache = Depends(get_cache)):
        deleted = await User.delete_by_id(session, user_id)
        if deleted:
            # Invalidate user cache
            await cache.delete(f"user:{user_id}")
            await cache.clear_pattern("users:list:*")
            return {"message": "User deleted"}
        raise HTTPException(status_code=404, detail="User not found")

    @app.get("/cache/stats")
    async def cache_stats(cache: DistributedCache = Depends(get_cache)):
        """Monitor cache performance"""
        stats = await cache.get_stats()
        # Alert if hit rate is too low
        if stats["hit_rate"] < 50:
            logger.warning(f"Low cache hit rate: {stats['hit_rate']}%")
        return stats

    with TestClient(app) as client:
        r = client.get("/users/1")
        assert r.status_code == 200 and r.json() == db_rows.users[1]
        assert db_rows.queries == 1
        r = client.get("/users/1")
        assert r.json() == db_rows.users[1]
        assert db_rows.queries == 1  # served by the cache
        assert client.get("/users/99").status_code == 404
        r = client.post("/users", json={"name": "Ann", "email": "ann@example.com"})
        new_id = r.json()["id"]
        queries = db_rows.queries
        assert client.get(f"/users/{new_id}").json()["name"] == "Ann"
        assert db_rows.queries == queries  # cached on create
        assert client.delete(f"/users/{new_id}").json() == {"message": "User deleted"}
        assert client.get(f"/users/{new_id}").status_code == 404
        stats = client.get("/cache/stats").json()
        assert stats["hits"] >= 2 and stats["sets"] >= 2


# ---------------------------------------------------------------- Invalidation


def test_time_based_ttl(redis_url):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        prices, catalog = {"x": 1.5}, ["a", "b"]
        # Short TTL for frequently changing data
        await cache.set("live_prices", prices, ttl=5)
        # Long TTL for static data
        await cache.set("product_catalog", catalog, ttl=3600)
        assert 0 < await cache.ttl("live_prices") <= 5
        assert 3590 < await cache.ttl("product_catalog") <= 3600
        # Best practices: every TTL in the table
        await cache.set("stock_price", 1, ttl=10)
        await cache.set("user_profile", {}, ttl=60)
        await cache.set("product_categories", [], ttl=1800)
        await cache.set("site_config", {}, ttl=86400)
        await cache.close()

    run(main())


def test_event_based_invalidation(redis_url):
    db = FakeDB()
    User = make_user_model(db)
    _cache = None

    async def get_cache():
        nonlocal _cache
        if _cache is None:
            _cache = await DistributedCache.create(redis_url=redis_url)
        return _cache

    signals = get_signals()

    @receiver(signals.post_save, sender=User)
    async def invalidate_user_cache(sender, instance, created, **kwargs):
        """Invalidate cache when user is saved"""
        cache = await get_cache()
        await cache.delete(f"user:{instance.id}")
        await cache.clear_pattern("users:list:*")

    @receiver(signals.post_delete, sender=User)
    async def invalidate_user_on_delete(sender, instance, **kwargs):
        """Invalidate cache when user is deleted"""
        cache = await get_cache()
        await cache.delete(f"user:{instance.id}")
        await cache.clear_pattern("users:*")

    async def main():
        cache = await get_cache()
        await cache.set("user:1", {"id": 1})
        await cache.set("users:list:0", [1])
        await User.update_by_id(session, 1, name="new")
        await signals.post_save.send(User, instance=UserRow(db.users[1]), created=False)
        assert await cache.get("user:1") is None
        assert await cache.get("users:list:0") is None
        await cache.set("user:2", {"id": 2})
        await cache.set("users:x", 1)
        await signals.post_delete.send(User, instance=UserRow(db.users[2]))
        assert await cache.get_many(["user:2", "users:x"]) == [None, None]
        signals.post_save.disconnect(invalidate_user_cache)
        signals.post_delete.disconnect(invalidate_user_on_delete)
        await cache.close()

    run(main())


def test_manual_invalidation(redis_url):
    db = FakeDB()
    User = make_user_model(db)

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        user_id = 1
        updates = {2: {"name": "x"}, 3: {"name": "y"}}
        for i in (1, 2, 3):
            await cache.set(f"user:{i}", db.users[i])
        # After updating a user
        await User.update_by_id(session, user_id, email="new@example.com")
        await cache.delete(f"user:{user_id}")
        assert await cache.get("user:1") is None
        # After bulk operations
        await User.bulk_update(session, updates)
        await cache.clear_pattern("user:*")
        assert await cache.get_many(["user:2", "user:3"]) == [None, None]
        await cache.close()

    run(main())


# ---------------------------------------------------------------- Multi-tenancy


def test_multi_tenancy(redis_url):
    queries = []

    class TenantMixin:
        pass

    class Model:
        pass

    class Product(Model, TenantMixin):
        @staticmethod
        async def all(session):
            queries.append(1)
            return [{"name": "p", "price": 1.0}]

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)

        # Cache with tenant isolation
        @cache.cached(ttl=300, key_builder=lambda tenant_id: f"products:{tenant_id}:all")
        async def get_tenant_products(tenant_id: str, session):
            set_current_tenant(tenant_id)
            return await Product.all(session)

        tenant_id = "acme"
        assert await get_tenant_products(tenant_id, session) == [{"name": "p", "price": 1.0}]
        assert await get_tenant_products(tenant_id, session) == [{"name": "p", "price": 1.0}]
        assert len(queries) == 1
        # Clear tenant-specific cache
        assert await cache.clear_pattern(f"products:{tenant_id}:*") == 1
        await get_tenant_products(tenant_id, session)
        assert len(queries) == 2

        # set_current_tenant isolates keys per context (task).
        async def in_tenant(t, value):
            set_current_tenant(t)
            if value is not None:
                await cache.set("shared-name", value)
            return await cache.get("shared-name")

        assert await asyncio.create_task(in_tenant("a", "A")) == "A"
        assert await asyncio.create_task(in_tenant("b", None)) is None
        assert await asyncio.create_task(in_tenant("a", None)) == "A"
        assert await cache.get("shared-name") is None  # no tenant here
        await cache.close()

    run(main())


# ---------------------------------------------------------------- Failures


def test_handle_cache_failures_gracefully(redis_server):
    db = FakeDB()
    User = make_user_model(db)

    class HTTPException(Exception):
        def __init__(self, status_code, detail):
            self.status_code = status_code

    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url, socket_timeout=0.5)

        async def get_user_with_fallback(user_id: int, session):
            """Always serve data, even if cache fails"""
            try:
                # Try cache first
                cache_key = f"user:{user_id}"
                cached = await cache.get(cache_key)
                if cached:
                    return cached
            except Exception as e:
                # Log cache error but continue
                logger.error(f"Cache error: {e}")
            # Fallback to database
            user = await User.get(session, user_id)
            if not user:
                raise HTTPException(status_code=404, detail="User not found")
            # Try to cache result
            try:
                await cache.set(cache_key, user.to_response(), ttl=300)
            except Exception:
                pass  # Ignore cache errors when setting
            return user.to_response()

        assert await get_user_with_fallback(1, session) == db.users[1]
        assert await get_user_with_fallback(1, session) == db.users[1]
        assert db.queries == 1
        redis_server.kill()
        for _ in range(10):  # connection errors, then the breaker: always served
            assert await get_user_with_fallback(2, session) == db.users[2]
        assert db.queries == 11

    run(main())


def test_troubleshooting_connection_errors_fall_back_to_local(redis_server):
    async def main():
        redis_server.kill()
        try:
            cache = await DistributedCache.create(redis_url=redis_server.url, socket_connect_timeout=0.5)
            if not await cache.ping():
                raise Exception("Redis not responding")
        except Exception as e:
            logger.error(f"Redis connection failed: {e}")
            # Fallback to local cache
            cache = QueryCache()
        assert isinstance(cache, QueryCache)

        # Serialization errors: make custom objects JSON-serializable
        from dataclasses import asdict, dataclass

        @dataclass
        class CustomData:
            id: int
            name: str

            def to_dict(self):
                return asdict(self)

        data = CustomData(1, "example")
        cache.set("key", data.to_dict())
        assert cache.get("key") == {"id": 1, "name": "example"}

    run(main())


# ---------------------------------------------------------------- Best practices


def test_cache_warming_and_hierarchical_keys(redis_url):
    db = FakeDB()

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)

        async def warm_cache():
            """Populate cache with frequently accessed data"""
            for uid, user in db.users.items():
                await cache.set(f"user:{uid}", user, ttl=1800)

        await warm_cache()
        await cache.set("user:1:profile", {"bio": "x"})
        await cache.set("user:1:posts:recent", [1, 2])
        assert await cache.clear_pattern("user:1:*") == 2
        assert await cache.get("user:1") == db.users[1]
        assert (await cache.get_stats())["keys_count"] == 5
        await cache.close()

    run(main())


# ---------------------------------------------------------------- Migration


def test_migration_from_local_cache(redis_url):
    value = {"a": [1, 2, 3]}
    # Before (local cache)
    cache = QueryCache(default_ttl=300)
    cache.set("key", value)  # Instead of cache.set()
    assert cache.get("key") == value
    assert cache.get_stats()["hits"] == 1
    assert cache.delete("key") is True
    cache.set("user:1", 1)
    cache.set("user:2", 2)
    assert cache.clear_pattern("user:") == 2  # the original's prefix match

    async def main():
        # After (distributed cache)
        cache = await DistributedCache.create(redis_url=redis_url, default_ttl=300)
        # API is identical, just await all operations
        await cache.set("key", value)  # Instead of cache.set()
        got = await cache.get("key")  # Instead of cache.get()
        assert got == value
        await cache.close()

    run(main())


def test_json_is_byte_compatible_with_the_original_package(redis_server):
    async def main():
        cache = await DistributedCache.create(redis_url=redis_server.url)
        # What the original writes: json.dumps(value, default=str), with spaces.
        original = json.dumps({"id": 1, "name": "John", "tags": ["a"]}, default=str)
        redis_server.command("SET", "fastapi_orm:legacy", original)
        assert await cache.get("legacy") == {"id": 1, "name": "John", "tags": ["a"]}
        # What we write, the original reads with json.loads.
        await cache.set("new", {"id": 2, "ok": True, "x": None})
        raw = redis_server.command("GET", "fastapi_orm:new").split(b"\r\n")[1]
        assert json.loads(raw) == {"id": 2, "ok": True, "x": None}
        await cache.close()

    run(main())


def test_unix_socket_url(tmp_path):
    import subprocess
    import time

    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)

        async def main():
            cache = await DistributedCache.create(redis_url=f"redis+unix://{sock}?db=2", key_prefix="u")
            await cache.set("k", {"over": "unix"})
            assert await cache.get("k") == {"over": "unix"}
            await cache.close()

        run(main())
    finally:
        proc.kill()
        proc.wait()


def test_under_uvloop(redis_url):
    """A loop without an instance __dict__ (uvloop) completes calls through
    pyo3-async-runtimes instead of the per-loop queue."""
    uvloop = pytest.importorskip("uvloop")

    async def main():
        cache = await DistributedCache.create(redis_url=redis_url)
        await cache.set("k", [1, 2])
        assert await cache.get("k") == [1, 2]
        hybrid = HybridCache(QueryCache(max_size=10, default_ttl=60), cache)
        assert await hybrid.wait_coherent(10)
        assert await hybrid.get("k") == [1, 2]
        await hybrid.close()

    uvloop.run(main())
