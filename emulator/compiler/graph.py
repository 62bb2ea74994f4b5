"""The topology as arrays: what placement and link realization work on.

networkx stays the interchange format; a million-node region as networkx (or as
our Node/Link objects) costs seconds and a gigabyte, as index arrays it costs
tens of megabytes. A generated topology goes straight from its Bulk to here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.model import NODE_KINDS, SWITCHING_KINDS, Node, Topology, TopologyError, Where

KIND_NAMES: tuple[str, ...] = tuple(NODE_KINDS)
KIND_CODE = {k: i for i, k in enumerate(KIND_NAMES)}
#: Generated compute nodes are hosts to the graph (placement, addresses, links); the compiler gives them agents.
KIND_CODE["compute"] = KIND_CODE["host"]
KIND_CODE["hollow"] = KIND_CODE["host"]  # a generated hollow compute node (emulator.alcor.hollow)
#: What a compute node costs a machine when the topology does not say (MiB; measured, see the README's
#: alcor_scale and hollow_scale figures), and the share of a placement slot (max_nodes) a hollow one takes.
FULL_COMPUTE_MIB = 34.0
HOLLOW_MIB = 0.05
HOLLOW_SLOT = 0.01
#: An unshaped link is weighted (and counted as crossing bandwidth) as if it ran at 1 Gbit/s.
UNSHAPED_BW = 1000.0


@dataclass
class Graph:
    names: list[str]
    kind: np.ndarray  # uint8 code into KIND_NAMES, per node
    src: np.ndarray  # int32 node index, per link
    dst: np.ndarray
    bw: np.ndarray  # float64 Mbit/s per link; 0 where unshaped
    cpu: np.ndarray  # float64 cores asked for, per node (0: none)
    memory: np.ndarray  # float64 MiB asked for, per node
    pin: np.ndarray  # int32 machine index, -1 where free
    where: list[Where]  # per node for object topologies; one shared entry for a bulk
    slots: np.ndarray | None = None  # float64 share of a machine's max_nodes per node (None: 1 each)
    hollow: np.ndarray | None = None  # bool per node: a hollow compute node (None: none)

    @property
    def n_nodes(self) -> int:
        return len(self.names)

    @property
    def n_links(self) -> int:
        return len(self.src)

    def where_of(self, node: int) -> Where:
        return self.where[node] if len(self.where) > 1 else self.where[0]

    def is_kind(self, *kinds: str) -> np.ndarray:
        return np.isin(self.kind, [KIND_CODE[k] for k in kinds])

    def switching(self) -> np.ndarray:
        return self.is_kind(*SWITCHING_KINDS)

    def link_weights(self) -> np.ndarray:
        return np.where(self.bw > 0, self.bw, UNSHAPED_BW)

    def csr(self, edge_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xadj, adjncy, eweights) as METIS wants them: both directions, parallel links merged."""
        n = self.n_nodes
        w = self.link_weights() if edge_weights is None else edge_weights
        lo = np.minimum(self.src, self.dst).astype(np.int64)
        hi = np.maximum(self.src, self.dst).astype(np.int64)
        key, inverse = np.unique(lo * n + hi, return_inverse=True)
        merged = np.bincount(inverse, weights=w, minlength=len(key))
        a, b = key // n, key % n
        u = np.concatenate([a, b])
        v = np.concatenate([b, a])
        ew = np.concatenate([merged, merged])
        order = np.argsort(u, kind="stable")
        xadj = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n), out=xadj[1:])
        eweights = np.maximum(1, np.rint(ew[order])).astype(np.int64)
        return xadj, v[order].astype(np.int64), eweights


def graph_of(topo: Topology, machines: dict[str, int] | None = None) -> Graph:
    """The arrays for `topo`; `machines` maps machine names to indices for pinned nodes (None: ignore pins)."""
    if topo.only_bulk():
        return _from_bulk(topo)
    return _from_objects(topo, machines)


def _from_bulk(topo: Topology) -> Graph:
    names: list[str] = []
    kinds: list[np.ndarray] = []
    srcs, dsts = [], []
    for bulk in topo.bulk:
        offset = len(names)
        names += bulk.names
        kinds.append(np.fromiter((KIND_CODE[k] for k in bulk.kinds), np.uint8, len(bulk.kinds)))
        srcs.append(np.asarray(bulk.src, dtype=np.int32) + offset)
        dsts.append(np.asarray(bulk.dst, dtype=np.int32) + offset)
    n = len(names)
    if len(set(names)) != n:
        topo.nodes  # noqa: B018 - making the objects finds and reports the duplicate with its line
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    bw = np.full(len(src), topo.link_defaults.bw or 0.0)
    labels = np.concatenate([np.asarray(b.kinds) for b in topo.bulk])
    hollow, full = labels == "hollow", labels == "compute"
    memory = np.where(hollow, HOLLOW_MIB, np.where(full, FULL_COMPUTE_MIB, 0.0))
    return Graph(names, np.concatenate(kinds), src, dst, bw, np.zeros(n), memory, np.full(n, -1, np.int32),
                 [topo.bulk[0].where], np.where(hollow, HOLLOW_SLOT, 1.0), hollow)


def _from_objects(topo: Topology, machines: dict[str, int] | None) -> Graph:
    nodes = list(topo.nodes.values())
    index = {n.name: i for i, n in enumerate(nodes)}
    links = topo.links
    src = np.fromiter((index[lk.a.node] for lk in links), np.int32, len(links))
    dst = np.fromiter((index[lk.b.node] for lk in links), np.int32, len(links))
    bw = np.fromiter((lk.params.merged_over(topo.link_defaults).bw or 0.0 for lk in links), np.float64, len(links))
    return Graph(
        names=[n.name for n in nodes],
        kind=np.fromiter((KIND_CODE[n.kind] for n in nodes), np.uint8, len(nodes)),
        src=src, dst=dst, bw=bw,
        cpu=np.fromiter((n.options.get("cpu", 0) for n in nodes), np.float64, len(nodes)),
        memory=np.fromiter((n.options.get("memory", _default_memory(n)) for n in nodes), np.float64, len(nodes)),
        pin=np.fromiter((_pin(n, machines) for n in nodes), np.int32, len(nodes)),
        where=[n.where for n in nodes],
        slots=np.fromiter((HOLLOW_SLOT if _hollow(n) else 1.0 for n in nodes), np.float64, len(nodes)),
        hollow=np.fromiter((_hollow(n) for n in nodes), bool, len(nodes)),
    )


def _hollow(node: Node) -> bool:
    return node.role == "compute" and node.options.get("agent") == "hollow"


def _default_memory(node: Node) -> float:
    if node.role != "compute":
        return 0.0
    return HOLLOW_MIB if _hollow(node) else FULL_COMPUTE_MIB


def _pin(node: Node, machines: dict[str, int] | None) -> int:
    wanted = node.options.get("machine")
    if wanted is None or machines is None:
        return -1
    if wanted not in machines:
        known = ", ".join(machines) or "none"
        raise TopologyError(f"node {node.name} is pinned to unknown machine {wanted!r}; the cluster has: {known}",
                            where=node.where, field=f"nodes.{node.name}.machine")
    return machines[wanted]
