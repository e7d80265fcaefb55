"""A host in network namespaces for security-group tests and benchmarks (root only).

One bridge namespace (the host: ``br0`` or the endpoints' own bridges, one per port
group, br_netfilter on, where zsd's ruleset goes) and one namespace per endpoint,
each joined by a veth whose bridge end is the endpoint's "tap". In each endpoint
runs an agent: a TCP server on the given ports that answers ``ok`` (a client that
reads it proves replies pass), and a client that probes many paths in parallel,
pings, or opens connections as fast as it can. On request it also runs echo
servers (TCP and UDP), holds TCP connections open to check later whether they
still carry data, and sends UDP from a chosen source port.
Every namespace is created and deleted by name; nothing is left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsd.network.secgroups.nftapply import enable_bridge_netfilter, in_netns

AGENT = r"""
import json, socket, struct, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

def bound(kind, port):
    # on port of every IPv4 and IPv6 address, listening if TCP
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(512)
    return s

def serve(port):
    s = bound(socket.SOCK_STREAM, port)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"ok")
        except OSError:
            pass
        finally:
            c.close()

def connect(host, port, source, timeout):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        # close with a reset: no TIME_WAIT, so a benchmark can reuse client ports at once
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return s.recv(2) == b"ok"
    except OSError:
        return False
    finally:
        s.close()

def ping(host, timeout):
    run = subprocess.run(["busybox", "ping", "-c", "1", "-W", str(int(timeout)), host], capture_output=True)
    return run.returncode == 0

def blast(host, port, seconds, threads):
    counts = [0] * threads
    fails = [0] * threads
    end = time.monotonic() + seconds
    def loop(i):
        while time.monotonic() < end:
            if connect(host, port, None, 2.0):
                counts[i] += 1
            else:
                fails[i] += 1
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"ok": sum(counts), "failed": sum(fails), "seconds": time.monotonic() - start}

def echo_tcp(port):
    s = bound(socket.SOCK_STREAM, port)
    def serve_one(c):
        with c:
            while data := c.recv(4096):
                c.sendall(data)
    while True:
        c, _ = s.accept()
        accepted.setdefault(port, []).append(c)
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()

def echo_udp(port):
    s = bound(socket.SOCK_DGRAM, port)
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(data, peer)

held = {}
accepted = {}

def push(port):
    # the server speaks first on every connection its echo server on port accepted
    sent = 0
    for c in accepted.get(port, []):
        try:
            c.sendall(b"p")
            sent += 1
        except OSError:
            pass
    return sent

def hold(name, host, port, timeout):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        return False
    held[name] = s
    return still_works(name, timeout)

def still_works(name, timeout):
    s = held[name]
    s.settimeout(timeout)
    try:
        s.sendall(b"x")
        return len(s.recv(1)) == 1  # the echo, or what the server pushed
    except OSError:
        return False

def udp(host, port, sport, timeout):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
        s.sendto(b"u", (host, port))
        return s.recv(1) == b"u"
    except OSError:
        return False
    finally:
        s.close()

pool = ThreadPoolExecutor(64)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "listen":
        for p in cmd["ports"]:
            threading.Thread(target=serve, args=(p,), daemon=True).start()
        out = True
    elif cmd["op"] == "probe":
        out = list(pool.map(lambda t: connect(t[0], t[1], t[2], cmd["timeout"]), cmd["targets"]))
    elif cmd["op"] == "ping":
        out = list(pool.map(lambda h: ping(h, cmd["timeout"]), cmd["hosts"]))
    elif cmd["op"] == "echo":
        for p in cmd["ports"]:
            threading.Thread(target=echo_tcp, args=(p,), daemon=True).start()
            threading.Thread(target=echo_udp, args=(p,), daemon=True).start()
        time.sleep(0.1)
        out = True
    elif cmd["op"] == "hold":
        out = hold(cmd["name"], cmd["host"], cmd["port"], cmd["timeout"])
    elif cmd["op"] == "push":
        out = push(cmd["port"])
    elif cmd["op"] == "check":
        out = list(pool.map(lambda n: still_works(n, cmd["timeout"]), cmd["names"]))
    elif cmd["op"] == "udp":
        out = list(pool.map(lambda t: udp(t[0], t[1], t[2], cmd["timeout"]), cmd["targets"]))
    else:
        out = blast(cmd["host"], cmd["port"], cmd["seconds"], cmd["threads"])
    print(json.dumps(out), flush=True)
"""


@dataclass(frozen=True)
class Endpoint:
    name: str
    ipv4: str
    ipv6: str
    mac: str
    bridge: str = "br0"
    """The bridge of its port group in the bridge namespace."""

    @property
    def port(self) -> str:
        """The bridge end of its veth: the "tap" zsd filters."""
        return f"tap-{self.name}"


class Agent:
    """The agent process in one endpoint namespace."""

    def __init__(self, ns: str) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-I", "-c", AGENT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@dataclass(frozen=True)
class Lab:
    bridge_ns: str
    endpoints: dict[str, Endpoint]
    agents: dict[str, Agent]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@contextmanager
def lab(prefix: str, endpoints: Sequence[Endpoint], ports: Sequence[int]) -> Iterator[Lab]:
    """Namespaces ``<prefix>-br`` and ``<prefix>-<endpoint>``, agents listening on ``ports``."""
    bridge = f"{prefix}-br"
    names = [bridge, *(f"{prefix}-{e.name}" for e in endpoints)]
    agents: dict[str, Agent] = {}
    try:
        sh("ip", "netns", "add", bridge)
        for br in sorted({e.bridge for e in endpoints}):
            sh("ip", "-n", bridge, "link", "add", br, "type", "bridge")
            sh("ip", "-n", bridge, "link", "set", br, "up")
        for ep in endpoints:
            ns = f"{prefix}-{ep.name}"
            sh("ip", "netns", "add", ns)
            sh(
                "ip",
                "-n",
                bridge,
                "link",
                "add",
                ep.port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            sh("ip", "-n", bridge, "link", "set", ep.port, "master", ep.bridge, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "address", ep.mac)
            sh("ip", "-n", ns, "addr", "add", f"{ep.ipv4}/24", "dev", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{ep.ipv6}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        in_netns(bridge, lambda: enable_bridge_netfilter(Path("/proc")))
        for ep in endpoints:
            agents[ep.name] = Agent(f"{prefix}-{ep.name}")
            agents[ep.name].ask(op="listen", ports=list(ports))
        yield Lab(bridge_ns=bridge, endpoints={e.name: e for e in endpoints}, agents=agents)
    finally:
        for agent in agents.values():
            agent.stop()
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)
