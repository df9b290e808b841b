"""ormcache for Python: the API of FastAPI ORM's distributed cache on ormcache's Rust core.

Code written for ``fastapi_orm``'s ``DistributedCache``, ``HybridCache`` and
``QueryCache`` runs with only the import changed::

    from ormcache import DistributedCache, HybridCache, QueryCache

    cache = await DistributedCache.create(redis_url="redis://localhost:6379", default_ttl=300)
    await cache.set("user:1", {"id": 1, "name": "John"}, ttl=60)
    assert await cache.get("user:1") == {"id": 1, "name": "John"}

What differs from the original, on purpose:

* Redis calls raise :class:`CacheError` (a subclass per kind: timeout, connection,
  circuit open, ...) instead of logging and returning ``None``/``False``; ``ping()``
  still answers ``False``. Read-through paths (``HybridCache.get``/``batch_get``,
  ``get_or_compute``, ``@cached``) never raise on a Redis failure: they fall back.
* ``HybridCache`` is coherent: a write through any instance (Python or Rust, same
  Redis and prefix) is applied to every other instance's L1 before it returns.
* Stats cost no round trip per ``get``; ``keys_count`` is an estimate on big databases.
* ``serializer="pickle"`` executes whatever Redis holds when read: never use it with
  a Redis that anyone you do not trust can write to. ``"json"`` (the default) is
  byte-compatible with the original package and with Rust services; ``"msgpack"``
  (needs the ``msgpack`` package) is what Rust's ``Codec::MessagePack`` reads.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import json
import pickle
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _ormcache
from ._ormcache import escape_glob
from .signals import Signal, Signals, get_signals, receiver

__all__ = [
    "DistributedCache",
    "HybridCache",
    "QueryCache",
    "CacheError",
    "CacheConnectionError",
    "CacheTimeoutError",
    "CircuitOpenError",
    "EncodeError",
    "DecodeError",
    "ValueTooLargeError",
    "InvalidInputError",
    "ServerError",
    "CacheClosedError",
    "AuthError",
    "NoPermissionError",
    "set_current_tenant",
    "get_current_tenant",
    "escape_glob",
    "get_signals",
    "receiver",
    "Signal",
    "Signals",
]

__version__ = _ormcache.__version__


# ---------------------------------------------------------------- errors


class CacheError(Exception):
    """An ormcache error: ``kind`` (``"timeout"``, ``"connection"``, ...) and ``message``.

    Messages name the operation and the key, never the value or a password.
    """

    kind = "error"

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = _KIND_NAMES.get(kind, kind)
        self.message = message


class CacheConnectionError(CacheError, ConnectionError):
    """Redis could not be reached (refused, reset, DNS)."""


class CacheTimeoutError(CacheError, TimeoutError):
    """A Redis call outlived ``socket_timeout`` (or connecting, ``socket_connect_timeout``)."""


class CircuitOpenError(CacheConnectionError):
    """The circuit breaker is open after repeated failures: the call was not tried."""


class EncodeError(CacheError, ValueError):
    """The value could not be serialized."""


class DecodeError(CacheError, ValueError):
    """Bytes in Redis could not be decoded."""


class ValueTooLargeError(CacheError, ValueError):
    """The value is over the size limit."""


class InvalidInputError(CacheError, ValueError):
    """An empty or reserved key, a bad TTL, a bad tag or pattern."""


class ServerError(CacheError):
    """Redis answered with an error."""


class CacheClosedError(CacheError):
    """The cache was closed."""


class AuthError(CacheError, PermissionError):
    """Redis refused the credentials."""


class NoPermissionError(CacheError, PermissionError):
    """The Redis ACL user may not run a command the cache needs."""


_ERRORS = {
    "Connection": CacheConnectionError,
    "Timeout": CacheTimeoutError,
    "CircuitOpen": CircuitOpenError,
    "Encode": EncodeError,
    "Decode": DecodeError,
    "ValueTooLarge": ValueTooLargeError,
    "InvalidInput": InvalidInputError,
    "Server": ServerError,
    "Closed": CacheClosedError,
    "Auth": AuthError,
    "NoPermission": NoPermissionError,
}
_KIND_NAMES = {
    "Connection": "connection",
    "Timeout": "timeout",
    "CircuitOpen": "circuit_open",
    "Encode": "encode",
    "Decode": "decode",
    "ValueTooLarge": "value_too_large",
    "InvalidInput": "invalid_input",
    "Server": "server",
    "Closed": "closed",
    "Auth": "auth",
    "NoPermission": "no_permission",
}


# ---------------------------------------------------------------- tenants

_current_tenant: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "ormcache_current_tenant", default=None
)


def set_current_tenant(tenant_id: Optional[Any]) -> None:
    """Sets the tenant of the current context (task): every cache call made in it
    reads and writes that tenant's own keys (``None``: no tenant)."""
    _ormcache._tenants_used()
    _current_tenant.set(None if tenant_id is None else str(tenant_id))


def get_current_tenant() -> Optional[str]:
    """The tenant of the current context, if any."""
    return _current_tenant.get()


# ---------------------------------------------------------------- serializers

try:  # optional
    import msgpack as _msgpack

    _packb = functools.partial(_msgpack.packb, use_bin_type=True)
    _unpackb = functools.partial(_msgpack.unpackb, raw=False)
except ImportError:  # pragma: no cover - depends on the environment
    _packb = None
    _unpackb = None

# What ``HybridCache._get_l1`` answers when L1 does not hold the key (``None`` is a
# value a cache can hold).
_MISS = object()

_ormcache._register(
    {
        "miss": _MISS,
        # The original package's json.dumps(value, default=str), compact.
        "json_dumps": functools.partial(json.dumps, default=str, separators=(",", ":")),
        "json_loads": json.loads,
        "pickle_dumps": pickle.dumps,
        "pickle_loads": pickle.loads,
        "msgpack_packb": _packb,
        "msgpack_unpackb": _unpackb,
        "tenant_var": _current_tenant,
        "errors": _ERRORS,
        "base_error": CacheError,
    }
)


# ---------------------------------------------------------------- helpers


def _generate_key(func: Callable, args: tuple, kwargs: dict, prefix: str = "") -> str:
    """The original package's key: ``prefix:md5(module.name:args:kwargs)``."""
    func_name = f"{func.__module__}.{func.__name__}"
    try:
        args_str = json.dumps(args, sort_keys=True, default=str)
        kwargs_str = json.dumps(kwargs, sort_keys=True, default=str)
    except (TypeError, ValueError):
        args_str = str(args)
        kwargs_str = str(sorted(kwargs.items()))
    key_hash = hashlib.md5(f"{func_name}:{args_str}:{kwargs_str}".encode()).hexdigest()
    return f"{prefix}:{key_hash}" if prefix else key_hash


def _key_builder_caller(key_builder: Callable) -> Callable[[tuple, dict], str]:
    """Calls ``key_builder`` with the arguments it accepts: all of them if it takes
    ``*args``/``**kwargs``, else the leading positional ones and the keywords it names
    (the seed's ``lambda tenant_id: ...`` on ``f(tenant_id, session)``)."""
    try:
        sig = inspect.signature(key_builder)
    except (TypeError, ValueError):
        return lambda a, k: key_builder(*a, **k)
    params = list(sig.parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return lambda a, k: key_builder(*a, **k)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = {p.name for p in params if p.kind != p.POSITIONAL_ONLY}

    def call(a: tuple, k: dict) -> str:
        a = a[: len(positional)]
        taken = {p.name for p in positional[: len(a)]}
        kw = {n: v for n, v in k.items() if n in names and n not in taken}
        return key_builder(*a, **kw)

    return call


def _cached(cache: Any, ttl, key_prefix: str, key_builder, lock: bool):
    build = _key_builder_caller(key_builder) if key_builder is not None else None

    def decorator(func: Callable):
        if not inspect.iscoroutinefunction(func):
            raise TypeError("@cache.cached decorates async functions")

        @functools.wraps(func)
        async def wrapper(*args, **kwargs):
            if build is not None:
                key = str(build(args, kwargs))
            else:
                key = _generate_key(func, args, kwargs, key_prefix)
            return await cache.get_or_compute(key, lambda: func(*args, **kwargs), ttl, lock)

        return wrapper

    return decorator


def _items(data: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    if isinstance(data, Mapping):
        return list(data.items())
    return [(k, v) for k, v in data]


class _Shared:
    """What DistributedCache and HybridCache add in Python over their Rust core."""

    def cached(
        self,
        ttl: Optional[float] = None,
        key_prefix: str = "",
        key_builder: Optional[Callable] = None,
        lock: bool = False,
    ):
        """Caches an async function's result (the seed's decorator).

        Keys are ``key_builder(*args, **kwargs)`` or the original package's
        ``key_prefix:md5(...)``. Concurrent calls with one key run the function once in
        this process (``lock=True``: once in the cluster). Redis failures fall back to
        calling the function; its exceptions propagate and are never cached.
        """
        return _cached(self, ttl, key_prefix, key_builder, lock)

    async def set_many(
        self, data: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]], ttl: Optional[float] = None
    ) -> int:
        """Stores every pair with one TTL, in one round trip; the count."""
        return await self._set_many(_items(data), ttl)

    async def batch_set(self, data: Dict[str, Any], ttl: Optional[int] = None) -> int:
        """``fastapi-orm`` 0.11's ``batch_set(data, ttl=None) -> int``."""
        if not data:
            return 0
        return await self._set_many(_items(data), ttl)

    async def batch_get(self, keys: List[str]) -> Dict[str, Optional[Any]]:
        """``fastapi-orm`` 0.11's ``batch_get(keys) -> {key: value or None}``."""
        keys = list(keys)
        if not keys:
            return {}
        values = await self.get_many(keys)
        return dict(zip(keys, values))

    async def batch_delete(self, keys: List[str]) -> int:
        """``fastapi-orm`` 0.11's ``batch_delete(keys) -> deleted count``."""
        keys = list(keys)
        if not keys:
            return 0
        return await self.delete_many(keys)


# ---------------------------------------------------------------- caches


class QueryCache(_ormcache.QueryCache):
    """The in-process cache with the seed's synchronous API (bounded, per-entry TTL).

    ``QueryCache(max_size=1000, default_ttl=60)``; ``get``/``set``/``delete``/``clear``/
    ``clear_pattern``/``get_stats`` are plain (not async) calls, as in the original.
    Objects are kept as they are (not copied), as in the original.
    """

    def __new__(cls, default_ttl: float = 300, max_size: int = 1000):
        return super().__new__(cls, default_ttl, max_size)

    def __init__(self, default_ttl: float = 300, max_size: int = 1000):
        self.max_size = max_size

    def clear_pattern(self, pattern: str) -> int:
        """Removes the keys matching ``pattern``: a Redis glob, or, without glob
        characters, a prefix (the original's "simple prefix matching")."""
        if not any(c in pattern for c in "*?[\\"):
            pattern = escape_glob(pattern) + "*"
        return self._clear_glob(pattern)

    def cleanup_expired(self) -> int:
        """Expired entries are never returned and are dropped as the cache works: 0."""
        return 0

    def get_stats(self) -> Dict[str, Any]:
        """``{"size", "max_size", "hits", "misses", "hit_rate", "default_ttl"}`` and more."""
        s = self._stats()
        s["default_ttl"] = _num(self.default_ttl)
        s["hit_rate"] = round(float(s.get("hit_rate", 0.0)), 2)
        return s

    def cached(self, ttl: Optional[float] = None, key_prefix: str = ""):
        """Caches a function's result (sync or async), as the original's decorator."""

        def decorator(func: Callable):
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args, **kwargs):
                    key = _generate_key(func, args, kwargs, key_prefix)
                    hit = self.get(key)
                    if hit is not None:
                        return hit
                    result = await func(*args, **kwargs)
                    self.set(key, result, ttl)
                    return result

                return async_wrapper

            @functools.wraps(func)
            def sync_wrapper(*args, **kwargs):
                key = _generate_key(func, args, kwargs, key_prefix)
                hit = self.get(key)
                if hit is not None:
                    return hit
                result = func(*args, **kwargs)
                self.set(key, result, ttl)
                return result

            return sync_wrapper

        return decorator


class DistributedCache(_Shared, _ormcache.DistributedCache):
    """The Redis cache: every process, container and server shares it.

    Create it with ``await DistributedCache.create(...)``. Calls raise
    :class:`CacheError` subclasses on Redis failures (``ping()`` answers ``False``).
    """

    @classmethod
    async def create(
        cls,
        redis_url: str = "redis://localhost:6379",
        default_ttl: float = 300,
        key_prefix: str = "fastapi_orm",
        serializer: str = "json",
        decode_responses: bool = False,
        max_connections: Optional[int] = None,
        socket_timeout: Optional[float] = None,
        socket_connect_timeout: Optional[float] = None,
        socket_keepalive: Optional[bool] = None,
        health_check_interval: Optional[float] = None,
        ssl_ca_certs: Optional[str] = None,
        ssl_certfile: Optional[str] = None,
        ssl_keyfile: Optional[str] = None,
        coalesce_gets: bool = False,
        **_ignored: Any,
    ) -> "DistributedCache":
        """Connects to Redis. Every URL form the Rust side takes: ``redis://``,
        ``rediss://``, ``redis+unix://``, ``redis+cluster://``, ``redis+sentinel://``
        and their TLS forms. Times are seconds. ``decode_responses`` has no meaning
        here (values are decoded by the serializer) and is accepted for compatibility.

        TLS (``rediss://`` and the ``rediss+…`` forms) trusts the system roots, plus
        ``ssl_ca_certs`` (a PEM CA file) if given; ``ssl_certfile`` + ``ssl_keyfile``
        (PEM) are a client certificate for servers that require one (redis-py's
        names). Each one not given is read from ``REDIS_TLS_CA_FILE``,
        ``REDIS_TLS_CERT_FILE``, ``REDIS_TLS_KEY_FILE``, as Rust services read them.

        ``coalesce_gets=True`` (not in the original package): a ``get`` that finds
        another read on the wire queues, and the queue goes out as one ``MGET`` when
        that read comes back (the Rust side's ``DistributedConfig::coalesce_gets``).
        A lone read is not delayed. In a queued read, a key holding a list or a hash
        reads as a miss.

        Raises :class:`CacheError` (e.g. :class:`CacheConnectionError`) if Redis
        cannot be reached within ``socket_connect_timeout``.
        """
        self = cls()
        await self._connect(
            redis_url,
            float(default_ttl),
            key_prefix,
            serializer,
            max_connections,
            None if socket_timeout is None else float(socket_timeout),
            None if socket_connect_timeout is None else float(socket_connect_timeout),
            socket_keepalive,
            None if health_check_interval is None else float(health_check_interval),
            None if ssl_ca_certs is None else str(ssl_ca_certs),
            None if ssl_certfile is None else str(ssl_certfile),
            None if ssl_keyfile is None else str(ssl_keyfile),
            bool(coalesce_gets),
        )
        self.serializer = serializer
        self.decode_responses = decode_responses
        return self

    async def get_stats(self) -> Dict[str, Any]:
        """The seed's ``{"hits", "misses", "sets", "errors", "hit_rate", "keys_count",
        "default_ttl"}`` (cluster-wide counters), plus ormcache's extra fields."""
        s = await self._stats()
        s["default_ttl"] = _num(self.default_ttl)
        return s


class HybridCache(_Shared, _ormcache.HybridCache):
    """L1 (a :class:`QueryCache`) + L2 (a :class:`DistributedCache`), kept coherent
    with every other instance (Python or Rust) on the same Redis and prefix.

    ``await hybrid.get(k)`` answers an L1 hit inside the ``await`` (no thread hop);
    Redis failures never raise from reads: young L1 entries or a miss answer.
    """

    def __new__(cls, l1_cache: QueryCache, l2_cache: DistributedCache, **options: Any):
        return super().__new__(cls, l1_cache, l2_cache, **options)

    def __init__(self, l1_cache: QueryCache, l2_cache: DistributedCache, **options: Any):
        self.l1 = l1_cache
        self.l2 = l2_cache

    async def get(self, key: str) -> Any:
        """The value at ``key``, or ``None``: L1, then Redis. An L1 hit is answered
        by one synchronous Rust call inside this coroutine (no thread hop, no event
        loop turn); a Redis failure never raises (young L1 entries answer)."""
        value = self._get_l1(key)
        if value is _MISS:
            return await _rust_hybrid_get(self, key)
        return value

    async def get_or_compute(
        self, key: str, loader: Callable, ttl: Optional[float] = None, lock: bool = False
    ) -> Any:
        """Read-through with single flight (``lock=True``: once in the cluster): an L1
        hit returns at once, as in :meth:`get`; else Redis, else ``await loader()``
        once, stored with ``ttl``. Redis failures fall back to the loader."""
        value = self._get_l1(key)
        if value is _MISS:
            return await _rust_hybrid_get_or_compute(self, key, loader, ttl, lock)
        return value

    async def get_stats(self) -> Dict[str, Any]:
        """The seed's ``{"l1": {...}, "l2": {...}, "combined_hit_rate": ...}``; ``l2``
        holds zeros (and ``"error"``) while Redis cannot be asked."""
        s = await self._stats()
        s["l1"]["default_ttl"] = _num(self.l1.default_ttl)
        if s.get("l2") is None:
            s["l2"] = {"hits": 0, "misses": 0, "hit_rate": 0.0, "keys_count": 0, "error": "unavailable"}
        else:
            s["l2"]["default_ttl"] = _num(self.l2.default_ttl)
        return s


_rust_hybrid_get = _ormcache.HybridCache.get
_rust_hybrid_get_or_compute = _ormcache.HybridCache.get_or_compute


def _num(secs: float):
    return int(secs) if float(secs).is_integer() else secs
