"""Pinging pairs of nodes on this machine: the same for `pingall` here and for a cluster machine's worker."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from emulator.compiler.plan import Plan
from provisioners.base import Provisioner


def failing_pairs(plan: Plan, engine: Provisioner, pairs: list[list[str]], *, timeout: float,
                  wait: float, workers: int = 32) -> list[list[str]]:
    """[source node, destination address] pairs, each pinged once in parallel through the node's network
    namespace with the machine's own `ping` (one `lxc exec` per ping overloads LXD at a few dozen at once);
    failed pairs again until `wait` seconds pass. Returns those that still fail."""
    nodes = {n.name: n for n in plan.nodes}
    deadline = time.monotonic() + wait

    def once(pair: list[str]) -> bool:
        node = nodes[pair[0]]
        argv = engine.net_argv(node, ["ping", "-c1", "-q", "-W", f"{max(1, round(timeout))}", pair[1]])
        return subprocess.run(argv, capture_output=True, timeout=timeout + 10).returncode == 0

    pending = [list(p) for p in pairs]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
        while pending:
            ok = list(pool.map(once, pending))
            pending = [p for p, good in zip(pending, ok, strict=True) if not good]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return pending
