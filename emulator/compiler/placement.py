"""Which machine each node runs on: METIS min-cut, round-robin, greedy BFS; pins always win.

Capacity model: every node takes one slot (`max_nodes`), and the cores and MiB
it asks for (`cpu`, `memory`) where the machine states a limit. A machine's
share of the work is its mean share of the cluster's stated capacities.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emulator.compiler.graph import Graph
from emulator.model import Cluster, TopologyError, Where

ALGORITHMS = ("metis", "round-robin", "greedy")
RESOURCES = ("max_nodes", "cpu", "memory")


@dataclass
class Placement:
    algorithm: str
    part: np.ndarray  # machine index per node
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


class Capacity:
    """Demands per node and limits per machine, as (nodes x resources) and (machines x resources) arrays."""

    def __init__(self, graph: Graph, cluster: Cluster):
        self.cluster = cluster
        n = graph.n_nodes
        slots = graph.slots if graph.slots is not None else np.ones(n)
        self.demand = np.stack([slots, graph.cpu, graph.memory], axis=1)
        limits = [[getattr(m, r) if getattr(m, r) is not None else np.inf for r in RESOURCES] for m in cluster.machines]
        self.limit = np.array(limits, dtype=np.float64)
        stated = np.isfinite(self.limit).all(axis=0)
        if stated.any():
            shares = self.limit[:, stated] / self.limit[:, stated].sum(axis=0)
            self.share = shares.mean(axis=1)
        else:
            self.share = np.full(len(cluster.machines), 1 / len(cluster.machines))

    def load(self, part: np.ndarray) -> np.ndarray:
        """Use of each resource on each machine."""
        out = np.zeros_like(self.limit)
        for r in range(len(RESOURCES)):
            out[:, r] = np.bincount(part, weights=self.demand[:, r], minlength=len(self.limit))
        return out

    def over(self, part: np.ndarray) -> np.ndarray:
        return (self.load(part) > self.limit + 1e-9).any(axis=1)

    def weights(self) -> np.ndarray:
        """METIS vertex weights: each node's largest share of a stated cluster-wide capacity."""
        totals = np.where(np.isfinite(self.limit).all(axis=0), self.limit.sum(axis=0), np.inf)
        totals[0] = min(totals[0], float(len(self.demand)))  # slots: without a limit, every node counts the same
        dominant = (self.demand / totals).max(axis=1)
        return np.maximum(1, np.rint(dominant / dominant.min() * 10)).astype(np.int64) if dominant.min() > 0 else \
            np.ones(len(self.demand), np.int64)


def check_fits(graph: Graph, cap: Capacity) -> None:
    """Refuse, before any placement, what no placement could satisfy."""
    total = cap.demand.sum(axis=0)
    for r, name in enumerate(RESOURCES):
        limit = cap.limit[:, r]
        if np.isfinite(limit).all() and total[r] > limit.sum() + 1e-9:
            what = "nodes" if name == "max_nodes" else name
            raise TopologyError(f"the topology needs {total[r]:g} {what} but the cluster has {limit.sum():g}; "
                                f"add machines or raise their {name}", where=Where(cap.cluster.source), field=name)
        biggest = limit.max()
        too_big = np.flatnonzero(cap.demand[:, r] > biggest + 1e-9)
        if too_big.size:
            i = int(too_big[0])
            raise TopologyError(f"node {graph.names[i]} asks for {cap.demand[i, r]:g} {name}, more than any machine "
                                f"has ({biggest:g})", where=graph.where_of(i), field=f"nodes.{graph.names[i]}.{name}")
    pinned = graph.pin >= 0
    if pinned.any():
        pinned_load = np.zeros_like(cap.limit)
        for r in range(len(RESOURCES)):
            pinned_load[:, r] = np.bincount(graph.pin[pinned], weights=cap.demand[pinned, r], minlength=len(cap.limit))
        for m, r in np.argwhere(pinned_load > cap.limit + 1e-9):
            machine = cap.cluster.machines[m]
            raise TopologyError(f"the nodes pinned to {machine.name} need {pinned_load[m, r]:g} {RESOURCES[r]}, "
                                f"it has {cap.limit[m, r]:g}", where=machine.where, field=RESOURCES[r])


def place(graph: Graph, cluster: Cluster, algorithm: str = "metis") -> Placement:
    if algorithm not in ALGORITHMS:
        raise TopologyError(f"unknown placement {algorithm!r}; expected one of: {', '.join(ALGORITHMS)}",
                            field="placement")
    started = time.perf_counter()
    cap = Capacity(graph, cluster)
    check_fits(graph, cap)
    k = len(cluster.machines)
    if k == 1:
        part = np.zeros(graph.n_nodes, dtype=np.int32)
    elif algorithm == "metis":
        part = _metis(graph, cap, k)
    elif algorithm == "round-robin":
        part = (np.arange(graph.n_nodes) % k).astype(np.int32)
    else:
        part = _greedy(graph, cap)
    _with_their_switch(graph, part)
    pinned = graph.pin >= 0
    part[pinned] = graph.pin[pinned]
    _repair(graph, cap, part)
    return Placement(algorithm, part, time.perf_counter() - started)


def _with_their_switch(graph: Graph, part: np.ndarray) -> None:
    """A hollow compute node goes where a switch it links to is: its address lives on its machine's pack, which
    links to its nodes' switch there (a pack whose nodes' switches are all elsewhere would have no link). METIS
    weighs a hollow node at 1% of a slot and may cut its one link to even out a machine."""
    if graph.hollow is None or not graph.hollow.any() or graph.n_links == 0:
        return
    switching = graph.switching()
    follow = np.full(graph.n_nodes, -1, dtype=np.int64)
    for a, b in ((graph.dst, graph.src), (graph.src, graph.dst)):
        mask = graph.hollow[a] & switching[b]
        nodes, first = np.unique(a[mask], return_index=True)  # each node's first such link
        follow[nodes] = b[mask][first]
    moved = follow >= 0
    part[moved] = part[follow[moved]]


def _metis(graph: Graph, cap: Capacity, k: int) -> np.ndarray:
    import pymetis

    if graph.n_links == 0:
        return (np.arange(graph.n_nodes) % k).astype(np.int32)
    xadj, adjncy, eweights = graph.csr()
    result = pymetis.part_graph(k, adjacency=pymetis.CSRAdjacency(xadj, adjncy), vweights=cap.weights(),
                                eweights=eweights, tpwgts=(cap.share / cap.share.sum()).tolist())
    return np.asarray(result[1], dtype=np.int32)


def _greedy(graph: Graph, cap: Capacity) -> np.ndarray:
    """Breadth-first from the first node, filling machine after machine to its share."""
    xadj, adjncy, _ = graph.csr()
    starts, neighbours = xadj.tolist(), adjncy.tolist()
    n = graph.n_nodes
    seen = bytearray(n)
    order: list[int] = []
    for root in range(n):
        if seen[root]:
            continue
        seen[root] = 1
        queue = deque([root])
        while queue:
            v = queue.popleft()
            order.append(v)
            for u in neighbours[starts[v]:starts[v + 1]]:
                if not seen[u]:
                    seen[u] = 1
                    queue.append(u)
    weight = cap.demand[:, 0][order]
    bounds = np.cumsum(cap.share) * weight.sum()
    machine_of_rank = np.searchsorted(bounds, np.cumsum(weight) - 0.5)
    part = np.empty(n, dtype=np.int32)
    part[order] = np.minimum(machine_of_rank, len(cap.share) - 1)
    return part


def _repair(graph: Graph, cap: Capacity, part: np.ndarray) -> None:
    """Move free nodes off machines over a limit (METIS balances within a few percent, not exactly)."""
    over = np.flatnonzero(cap.over(part))
    if not over.size:
        return
    load = cap.load(part)
    free = graph.pin < 0
    for m in over:
        movable = np.flatnonzero((part == m) & free)[::-1]
        for v in movable:
            if not (load[m] > cap.limit[m] + 1e-9).any():
                break
            room = cap.limit - load - cap.demand[v]
            fits = np.flatnonzero((room >= -1e-9).all(axis=1))
            if not fits.size:
                continue
            target = fits[np.argmax(room[fits, 0] if np.isfinite(room[fits, 0]).all() else -load[fits, 0])]
            load[m] -= cap.demand[v]
            load[target] += cap.demand[v]
            part[v] = target
        if (load[m] > cap.limit[m] + 1e-9).any():
            raise TopologyError(f"could not fit the nodes on {cap.cluster.machines[m].name} within its limits; "
                                "add machines or raise their limits", where=cap.cluster.machines[m].where)


def metrics(graph: Graph, cap: Capacity, placement: Placement) -> dict[str, Any]:
    part = placement.part
    cut = part[graph.src] != part[graph.dst]
    load = np.bincount(part, weights=cap.weights(), minlength=len(cap.share))
    expected = load.sum() * cap.share
    return {
        "algorithm": placement.algorithm,
        "machines": len(cap.share),
        "links_cut": int(cut.sum()),
        "crossing_bw": float(graph.link_weights()[cut].sum()),
        "max_load_ratio": round(float((load / expected).max()), 4) if load.sum() else 1.0,
        "compile_seconds": round(placement.seconds, 4),
    }
