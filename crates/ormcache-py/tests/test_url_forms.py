"""The URL forms beyond ``redis://`` from the Python API, against real servers
started by the Rust test harness (crates/ormcache-testing, through its
``topology`` example): TLS with a CA and a client certificate (``rediss://``),
Redis Cluster (``redis+cluster://``, ``rediss+cluster://``) and Sentinel
(``redis+sentinel://``, ``rediss+sentinel://``)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from conftest import run

from ormcache import CacheError, DistributedCache, HybridCache, QueryCache

TIMEOUT = 5  # seconds, for connecting and for each call


def raw(port: int, *args: str, password: str = "") -> bytes:
    """One command to the server on plain-text ``port`` (the test's own check,
    not through ormcache): the reply's last line."""
    commands = [("AUTH", password)] if password else []
    commands.append(args)
    wire = b""
    for cmd in commands:
        wire += b"*%d\r\n" % len(cmd)
        for a in cmd:
            wire += b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(wire)
        data = b""
        while data.count(b"\r\n") < len(commands):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[-2]


def dbsize(port: int, password: str = "") -> int:
    return int(raw(port, "DBSIZE", password=password).lstrip(b":"))


async def connect(url: str, **options) -> DistributedCache:
    return await DistributedCache.create(
        redis_url=url,
        key_prefix="urlforms",
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        **options,
    )


async def eventually_reads(cache, key, want) -> None:
    """Polls (bounded: not a timing assertion) until ``cache`` reads ``want``."""
    got = None
    for _ in range(500):
        got = await cache.get(key)
        if got == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key}: still {got!r}, want {want!r}")


async def roundtrip_and_coherence(url: str, confirmed: bool = True, **options) -> None:
    """Values round-trip, and two HybridCaches on the URL stay coherent: a write
    through one is what the next read through the other returns (``confirmed``),
    or what it soon returns (on a cluster, as the Rust cluster tests have it)."""
    cache = await connect(url, **options)
    assert await cache.ping()
    for i in range(50):
        await cache.set(f"user:{i}", {"id": i, "name": f"user {i}"}, ttl=60)
    for i in range(50):
        assert await cache.get(f"user:{i}") == {"id": i, "name": f"user {i}"}
    assert await cache.exists("user:7")
    assert await cache.delete("user:7")
    assert await cache.get("user:7") is None
    assert await cache.batch_get(["user:1", "user:7"]) == {"user:1": {"id": 1, "name": "user 1"}, "user:7": None}

    a = HybridCache(QueryCache(max_size=100, default_ttl=60), cache)
    b = HybridCache(QueryCache(max_size=100, default_ttl=60), await connect(url, **options))
    assert await a.wait_coherent(10)
    assert await b.wait_coherent(10)
    await a.set("shared", {"v": 1})
    assert await b.get("shared") == {"v": 1}  # now in b's L1
    assert await b.get("shared") == {"v": 1}
    await a.set("shared", {"v": 2})
    if confirmed:
        assert await b.get("shared") == {"v": 2}
    else:
        await eventually_reads(b, "shared", {"v": 2})
    await a.delete("shared")
    if confirmed:
        assert await b.get("shared") is None
    else:
        await eventually_reads(b, "shared", None)
    await a.close()
    await b.close()


def test_tls_with_a_ca_and_a_client_certificate(topology):
    tls = topology("tls")  # the server requires a client certificate signed by the CA
    info = tls.info
    assert tls.url.startswith("rediss://")

    async def main():
        await roundtrip_and_coherence(
            tls.url, ssl_ca_certs=info["ca"], ssl_certfile=info["cert"], ssl_keyfile=info["key"]
        )
        # The writes went to that server (over TLS).
        assert dbsize(info["plain_ports"][0]) > 0

    run(main())


def test_tls_refusals_are_cache_errors(topology):
    tls = topology("tls")
    info = tls.info

    async def refused(**options):
        with pytest.raises(CacheError) as e:
            await asyncio.wait_for(connect(tls.url, **options), 30)
        # No secret file content and no password in the message.
        assert "PRIVATE KEY" not in str(e.value)
        return e.value

    async def main():
        # No client certificate: the server refuses the handshake.
        await refused(ssl_ca_certs=info["ca"])
        # A CA that did not sign the server's certificate: we refuse the server.
        await refused(ssl_ca_certs=info["other_ca"], ssl_certfile=info["cert"], ssl_keyfile=info["key"])
        # A client certificate from another CA: the server refuses it.
        await refused(ssl_ca_certs=info["ca"], ssl_certfile=info["rogue_cert"], ssl_keyfile=info["rogue_key"])
        # A certificate without its key: an input error, before any connection.
        e = await refused(ssl_ca_certs=info["ca"], ssl_certfile=info["cert"])
        assert e.kind == "invalid_input"

    run(main())


def test_tls_files_from_the_environment_as_rust_services_read_them(topology, monkeypatch):
    tls = topology("tls")
    info = tls.info
    monkeypatch.setenv("REDIS_TLS_CA_FILE", info["ca"])
    monkeypatch.setenv("REDIS_TLS_CERT_FILE", info["cert"])
    monkeypatch.setenv("REDIS_TLS_KEY_FILE", info["key"])

    async def main():
        cache = await connect(tls.url)
        await cache.set("env", {"ok": True})
        assert await cache.get("env") == {"ok": True}
        await cache.close()

    run(main())


def test_redis_cluster(topology):
    cluster = topology("cluster")
    assert cluster.url.startswith("redis+cluster://")

    async def main():
        await roundtrip_and_coherence(cluster.url, confirmed=False)
        cache = await connect(cluster.url)
        # Keys across every slot owner: clear_pattern walks every primary.
        assert await cache.clear_pattern("user:*") == 49
        assert await cache.get("user:1") is None
        for i in range(30):
            await cache.set(f"spread:{i}", i)
        await cache.close()

    run(main())
    # The keys went to more than one node: this was a cluster client, not one node.
    assert sum(1 for p in cluster.info["plain_ports"] if dbsize(p) > 0) >= 2


def test_redis_cluster_over_tls(topology):
    cluster = topology("tls-cluster")
    assert cluster.url.startswith("rediss+cluster://")
    run(roundtrip_and_coherence(cluster.url, confirmed=False, ssl_ca_certs=cluster.info["ca"]))
    assert sum(1 for p in cluster.info["plain_ports"] if dbsize(p) > 0) >= 2


def test_sentinel_and_a_failover(topology):
    sentinel = topology("sentinel")  # password s3cret on the servers and Sentinels
    assert sentinel.url.startswith("redis+sentinel://")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(roundtrip_and_coherence(sentinel.url))
        cache = loop.run_until_complete(connect(sentinel.url))
        answer = sentinel.command("failover")  # the replica becomes the master
        assert "master_port" in answer, answer

        async def after():
            # The cache follows the Sentinels to the new master: a write through
            # it lands there (retried while the old master is being demoted and
            # the switch settles; bounded).
            last = None
            for i in range(100):
                try:
                    await cache.set("after", {"v": i})
                    if raw(answer["master_port"], "GET", "urlforms:after", password="s3cret") == b'{"v":%d}' % i:
                        return await cache.get("after") == {"v": i}
                except CacheError as e:
                    last = e
                await asyncio.sleep(0.2)
            raise AssertionError(f"no write on the new master: {last!r}")

        async def close():
            await cache.close()

        assert loop.run_until_complete(after())
        loop.run_until_complete(close())
    finally:
        loop.close()


def test_sentinel_over_tls(topology):
    sentinel = topology("tls-sentinel")
    assert sentinel.url.startswith("rediss+sentinel://")
    run(roundtrip_and_coherence(sentinel.url, ssl_ca_certs=sentinel.info["ca"]))
