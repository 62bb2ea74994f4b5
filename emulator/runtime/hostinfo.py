"""Facts about this machine that the pure stages need as input (read-only)."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from emulator.compiler.addressing import Reserved

#: Docker's default bridge network: reserved even before dockerd starts.
ALWAYS_RESERVED: list[Reserved] = [(ipaddress.ip_network("172.17.0.0/16"), "Docker's default bridge")]


def reserved_networks() -> list[Reserved]:
    """The machine's own IPv4 routes (default route excluded), which an address plan must not overlap."""
    out = list(ALWAYS_RESERVED)
    try:
        proc = subprocess.run(["ip", "-4", "-j", "route", "show"], capture_output=True, text=True, timeout=10)
        routes = json.loads(proc.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return out
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("default", ""):
            continue
        try:
            net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
        except ValueError:
            continue
        out.append((net, f"dev {r.get('dev', '?')}"))
    return out
