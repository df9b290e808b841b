"""run.sh's helper (standard library only): free ports, waiting for a server,
seeding users and counting the Redis commands of cached GETs."""

import http.client
import json
import socket
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(port, path="/users/0", timeout=60.0):
    """Until the server answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"no HTTP answer on port {port} after {timeout}s")


def seed(port, n):
    """Creates users 1..n (a fresh database), then reads each once so it is cached."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(1, n + 1):
        body = json.dumps({"name": f"user {i}", "email": f"user{i}@example.com"})
        c.request("POST", "/users", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        created = json.loads(r.read())
        if r.status not in (200, 201) or created.get("id") != i:
            sys.exit(f"seeding user {i}: HTTP {r.status} {created}")
    gets(port, n, n)


def gets(port, n, users):
    """n keep-alive GETs of /users/{1..users}, round robin; every one must be 200."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(n):
        c.request("GET", f"/users/{i % users + 1}")
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"GET /users/{i % users + 1}: HTTP {r.status}")


def redis(port, *command):
    """One command over RESP; the reply's text (bulk strings and integers)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        parts = [f"*{len(command)}\r\n"]
        for a in command:
            parts.append(f"${len(a.encode())}\r\n{a}\r\n")
        s.sendall("".join(parts).encode())
        f = s.makefile("rb")
        line = f.readline()
        if line.startswith(b"$"):
            size = int(line[1:])
            return f.read(size + 2)[:-2].decode() if size >= 0 else ""
        return line[1:].strip().decode()


def commands(port):
    """{command: calls} from INFO commandstats."""
    out = {}
    for line in redis(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.split(","))
            out[name] = int(fields["calls"])
    return out


def cost(http_port, redis_port, n, users):
    """Redis commands per cached GET: commandstats delta over n GETs of cached ids
    (the INFO calls themselves left out)."""
    gets(http_port, users, users)  # every id cached
    before = commands(redis_port)
    gets(http_port, n, users)
    after = commands(redis_port)
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    delta["info"] = delta.get("info", 0) - 1
    delta = {k: v for k, v in delta.items() if v > 0}
    total = sum(delta.values())
    detail = " ".join(f"{k}={v / n:.2f}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]))
    print(f"{total / n:.2f} {detail or '-'}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "wait":
        wait(int(args[0]))
    elif cmd == "seed":
        seed(int(args[0]), int(args[1]))
    elif cmd == "cost":
        cost(int(args[0]), int(args[1]), int(args[2]), int(args[3]))
    else:
        sys.exit(f"unknown command {cmd}")
