"""Health checks of service nodes: a TCP connect, an HTTP GET, or a command, until it passes.

TCP and HTTP are tried from a thread that enters the node's network namespace and connects to
127.0.0.1, so they need nothing inside the image; a command runs through the engine (docker exec).
"""

from __future__ import annotations

import graphlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable

from pyroute2.netns import setns

from provisioners.base import NodeStartError


def probe(netns: str, check: dict, exec_argv: Callable[[list[str]], list[str]]) -> tuple[bool, str]:
    """One try: (passed, what was seen)."""
    if "command" in check:
        cmd = check["command"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        try:
            proc = subprocess.run(exec_argv(argv), capture_output=True, text=True, timeout=max(1.0, check["interval"] * 4))
        except subprocess.TimeoutExpired:
            return False, "the check command timed out"
        return proc.returncode == 0, f"exit code {proc.returncode} {proc.stderr.strip()[-200:]}".strip()
    port = check.get("tcp") or check["port"]
    request = f"GET {check['http']} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode() if "http" in check else None
    result: list = [False, "no answer"]

    def attempt() -> None:
        try:
            setns(netns, flags=0)  # this thread only; flags=0: never create a namespace that is not there
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if request is None:
                    result[:] = [True, f"port {port} accepts connections"]
                    return
                s.sendall(request)
                status = s.recv(64).decode(errors="replace").split("\r\n", 1)[0]
                code = int(status.split()[1]) if len(status.split()) > 1 and status.split()[1].isdigit() else 0
                result[:] = [200 <= code < 400, f"GET {check['http']}: {status or 'no status line'}"]
        except OSError as exc:
            result[:] = [False, f"port {port}: {exc.strerror or exc}"]

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    return result[0], result[1]


def wait_healthy(name: str, netns: str, check: dict, exec_argv: Callable[[list[str]], list[str]]) -> str:
    """Probes every `interval` until one passes; after `timeout`, raises with the last thing seen."""
    deadline = time.monotonic() + check["timeout"]
    while True:
        ok, seen = probe(netns, check, exec_argv)
        if ok:
            return seen
        if time.monotonic() >= deadline:
            raise NodeStartError(f"service {name} is not healthy after {check['timeout']:g} s ({seen}); the services "
                                 "that depend on it were not started")
        time.sleep(check["interval"])


def levels(deps: dict[str, list[str]]) -> list[list[str]]:
    """Start order: each level depends only on earlier ones (dependencies outside `deps` count as met)."""
    order = graphlib.TopologicalSorter({n: [d for d in ds if d in deps] for n, ds in deps.items()})
    order.prepare()  # raises graphlib.CycleError (the loader refuses cycles first)
    out = []
    while order.is_active():
        level = sorted(order.get_ready())
        out.append(level)
        order.done(*level)
    return out
