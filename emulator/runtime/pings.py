"""Pinging pairs of nodes on this machine: the same for `pingall` here and for a cluster machine's worker."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emulator.compiler.plan import Plan
from emulator.runtime import icmp
from provisioners.base import Provisioner
from provisioners.nsconfig import NETNS_RUN


def failing_pairs(plan: Plan, engine: Provisioner, pairs: list[list[str]], *, timeout: float,
                  wait: float, workers: int = 32) -> list[list[str]]:
    """[source node, destination address] pairs, each pinged once in parallel through the node's network
    namespace: from this process for sources in a named namespace (one echo each, all at once), else with the
    machine's own `ping` (one `lxc exec` per ping overloads LXD at a few dozen at once); at most as many at once as
    the network's floods allow (icmp.in_flight_for); failed pairs again until `wait` seconds pass. Returns those
    that still fail."""
    nodes = {n.name: n for n in plan.nodes}
    in_flight = icmp.in_flight_for(sum(n.kind == "host" for n in plan.nodes))
    workers = min(workers, in_flight)
    deadline = time.monotonic() + wait
    netns = {}  # a source reached by `ip netns exec`: pinged from this process (icmp.ping_many), all at once
    for name in {p[0] for p in pairs}:
        argv = engine.net_argv(nodes[name], [])
        if argv[:3] == ["ip", "netns", "exec"] and Path(NETNS_RUN, argv[3]).exists():
            netns[name] = str(Path(NETNS_RUN, argv[3]))

    def once(pair: list[str]) -> bool:
        node = nodes[pair[0]]
        argv = engine.net_argv(node, ["ping", "-c1", "-q", "-W", f"{max(1, round(timeout))}", pair[1]])
        return subprocess.run(argv, capture_output=True, timeout=timeout + 10).returncode == 0

    def all_of(batch: list[list[str]], pool: ThreadPoolExecutor) -> list[bool]:
        fast = [i for i, p in enumerate(batch) if p[0] in netns]
        slow = [i for i, p in enumerate(batch) if p[0] not in netns]
        ok = [False] * len(batch)
        for i, good in zip(slow, pool.map(once, [batch[i] for i in slow]), strict=True):
            ok[i] = good
        for i, good in zip(fast, icmp.ping_many([(netns[batch[i][0]], batch[i][1]) for i in fast],
                                                timeout=max(1.0, timeout), in_flight=in_flight), strict=True):
            ok[i] = good
        return ok

    pending = [list(p) for p in pairs]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
        while pending:
            ok = all_of(pending, pool)
            pending = [p for p, good in zip(pending, ok, strict=True) if not good]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    return pending
