"""Fixtures: real redis-server processes on free ports (no mocks), and the Rust demo
service started as a process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server on a free port, in a directory of its own; killed on stop."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ormcache-py-redis-")
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not start: {self.read_log()}")

    def read_log(self) -> str:
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (the reply's first line)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            parts = [f"*{len(args)}\r\n".encode()]
            for a in args:
                b = a.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
            s.sendall(b"".join(parts))
            return s.recv(65536)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url


def answered_at_once(awaitable):
    """``(True, value)`` if awaiting ``awaitable`` completes without suspending (no
    event-loop turn, no thread hop: what an L1 hit must do); ``(False, None)`` if
    it suspends (it is then closed, never resumed)."""
    it = awaitable.__await__()
    try:
        it.send(None)
    except StopIteration as done:
        return True, done.value
    it.close()
    return False, None


def run(coro):
    """Runs a coroutine on a fresh event loop (what pytest-asyncio would do)."""
    return asyncio.run(coro)


# ---------------------------------------------------------------- the Rust demo


def built(env_var: str, cargo_args: list, path: str) -> Path:
    """A workspace binary: ``$env_var`` if set, else built with ``cargo build
    cargo_args`` and found at ``path`` under the target directory."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    subprocess.run(["cargo", "build", *cargo_args], cwd=REPO, check=True)
    return target / path


def demo_binary() -> Path:
    """The ormcache-demo binary: $ORMCACHE_DEMO_BIN, else built with cargo."""
    return built("ORMCACHE_DEMO_BIN", ["-p", "ormcache-demo", "--bin", "ormcache-demo"], "debug/ormcache-demo")


class Demo:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="ormcache-py-demo-")
        self.port = free_port()
        self.log_path = os.path.join(self.dir, "demo.log")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": f"sqlite://{self.dir}/demo.db?mode=rwc",
            "REDIS_URL": redis_url,
            "CACHE_PREFIX": prefix,
            "RUST_LOG": "info",
        }
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(demo_binary())], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"demo exited: {self.read_log()}")
            try:
                status, _, _ = self.request("GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"demo did not start: {self.read_log()}")

    def read_log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- other topologies


def topology_binary() -> Path:
    """The harness's topology starter (crates/ormcache-testing/examples/topology.rs):
    $ORMCACHE_TOPOLOGY_BIN, else built with cargo."""
    return built(
        "ORMCACHE_TOPOLOGY_BIN",
        ["-p", "ormcache-testing", "--example", "topology"],
        "debug/examples/topology",
    )


class Topology:
    """A TLS server, a Redis Cluster or a Sentinel setup started by the Rust test
    harness (real redis-server processes): ``info`` holds its URL and, for the TLS
    kinds, the certificate files. Stopped (every process killed) when its standard
    input closes."""

    def __init__(self, kind: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"ormcache-py-{kind}-")
        self.log_path = os.path.join(self.dir, "topology.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(topology_binary()), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"topology {kind} did not start: {self.read_log()}")
        self.info = json.loads(line)

    @property
    def url(self) -> str:
        return self.info["url"]

    def read_log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def command(self, line: str) -> dict:
        """A command to the starter (``failover``); its JSON answer."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"topology exited on {line!r}: {self.read_log()}")
        return json.loads(answer)

    def stop(self) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def topology():
    """``topology(kind)`` starts one; all are stopped at the end of the test."""
    started = []

    def start(kind: str) -> Topology:
        t = Topology(kind)
        started.append(t)
        return t

    try:
        yield start
    finally:
        for t in started:
            t.stop()
