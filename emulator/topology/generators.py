"""Parametric topologies. Names stay short so that device names fit in 15 characters.

Each generator takes keyword parameters and returns (nodes, links): nodes as
(name, kind), links as (a, b). The loader turns them into a Topology.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emulator.model import Bulk

NodeSpec = tuple[str, str]
LinkSpec = tuple[str, str]
Generated = tuple[list[NodeSpec], list[LinkSpec]]


#: What one generated topology may hold: a 1M-host region (about 1.03M nodes) with room to spare. The size
#: is worked out from the parameters before anything is built, so `linear, switches: 200000000` is refused
#: in microseconds instead of ending in a MemoryError.
MAX_NODES = 2_000_000
MAX_LINKS = 4_000_000
PARAM_MAX = 10_000_000


@dataclass(frozen=True)
class Param:
    name: str
    default: int | None  # None with required=False: the generator computes it
    minimum: int
    help: str
    required: bool = False
    maximum: int = PARAM_MAX
    words: tuple[str, ...] = ()  # names a file may give instead of the numbers 0, 1, ...


@dataclass(frozen=True)
class Generator:
    name: str
    params: tuple[Param, ...]
    build: Callable[..., Generated | Bulk]
    help: str
    #: (nodes, links) it would make, from the parameters alone: required, so no generator goes unbounded.
    size: Callable[..., tuple[int, int]]

    def make(self, **kwargs: int | None) -> Generated | Bulk:
        """`build`, once the parameters are in range and the result is known to fit (ValueError otherwise)."""
        for p in self.params:
            value = kwargs.get(p.name, p.default)
            if value is not None and not p.minimum <= value <= p.maximum:
                raise ValueError(f"{p.name} must be from {p.minimum:,} to {p.maximum:,}, got {value:,}")
        nodes, links = self.size(**kwargs)
        if nodes > MAX_NODES or links > MAX_LINKS:
            raise ValueError(f"{self.name} with these parameters makes {nodes:,} nodes and {links:,} links; one "
                             f"topology holds at most {MAX_NODES:,} nodes and {MAX_LINKS:,} links")
        return self.build(**kwargs)


def _tree_size(depth: int, fanout: int = 2) -> tuple[int, int]:
    switches = sum(fanout ** i for i in range(depth))
    hosts = fanout ** depth
    return switches + hosts, switches + hosts - 1


def _fattree_size(k: int, hosts_per_edge: int | None = None) -> tuple[int, int]:
    half = k // 2
    hosts = k * half * (half if hosts_per_edge is None else hosts_per_edge)
    return half * half + k * k + hosts, 2 * k * half * half + hosts


def linear(switches: int, hosts_per_switch: int) -> Generated:
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    h = 0
    for i in range(1, switches + 1):
        nodes.append((f"s{i}", "switch"))
        if i > 1:
            links.append((f"s{i - 1}", f"s{i}"))
        for _ in range(hosts_per_switch):
            h += 1
            nodes.append((f"h{h}", "host"))
            links.append((f"h{h}", f"s{i}"))
    return nodes, links


def tree(depth: int, fanout: int) -> Generated:
    """Mininet's TreeTopo: switches s1.. in depth-first order, hosts h1.. at the leaves."""
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    counters = {"s": 0, "h": 0}

    def add(level: int) -> str:
        if level == 0:
            counters["h"] += 1
            name = f"h{counters['h']}"
            nodes.append((name, "host"))
            return name
        counters["s"] += 1
        name = f"s{counters['s']}"
        nodes.append((name, "switch"))
        for _ in range(fanout):
            links.append((name, add(level - 1)))
        return name

    add(depth)
    return nodes, links


def fattree(k: int, hosts_per_edge: int | None) -> Generated:
    """The k-ary fat-tree of Al-Fares et al.: (k/2)^2 cores, k pods of k/2 aggregation and k/2 edge."""
    if k % 2:
        raise ValueError("k must be even")
    half = k // 2
    per_edge = half if hosts_per_edge is None else hosts_per_edge
    nodes: list[NodeSpec] = [(f"c{i}", "switch") for i in range(1, half * half + 1)]
    links: list[LinkSpec] = []
    h = 0
    for pod in range(k):
        aggs = [f"a{pod * half + i + 1}" for i in range(half)]
        edges = [f"e{pod * half + i + 1}" for i in range(half)]
        nodes += [(a, "switch") for a in aggs] + [(e, "switch") for e in edges]
        for i, agg in enumerate(aggs):
            for j in range(half):
                links.append((agg, f"c{i * half + j + 1}"))
            for edge in edges:
                links.append((edge, agg))
        for edge in edges:
            for _ in range(per_edge):
                h += 1
                nodes.append((f"h{h}", "host"))
                links.append((f"h{h}", edge))
    return nodes, links


def leafspine(spines: int, leaves: int, hosts_per_leaf: int) -> Generated:
    nodes: list[NodeSpec] = [(f"sp{i}", "switch") for i in range(1, spines + 1)]
    links: list[LinkSpec] = []
    h = 0
    for leaf in range(1, leaves + 1):
        nodes.append((f"lf{leaf}", "switch"))
        links += [(f"lf{leaf}", f"sp{s}") for s in range(1, spines + 1)]
        for _ in range(hosts_per_leaf):
            h += 1
            nodes.append((f"h{h}", "host"))
            links.append((f"h{h}", f"lf{leaf}"))
    return nodes, links


def torus(rows: int, cols: int, hosts_per_switch: int) -> Generated:
    """A 2-D torus of switches (Mininet's TorusTopo); rows and cols of at least 3 avoid double links."""
    nodes: list[NodeSpec] = []
    links: list[LinkSpec] = []
    h = 0

    def sw(r: int, c: int) -> str:
        return f"s{r + 1}x{c + 1}"

    for r in range(rows):
        for c in range(cols):
            nodes.append((sw(r, c), "switch"))
            for _ in range(hosts_per_switch):
                h += 1
                nodes.append((f"h{h}", "host"))
                links.append((f"h{h}", sw(r, c)))
    for r in range(rows):
        for c in range(cols):
            links.append((sw(r, c), sw(r, (c + 1) % cols)))
            links.append((sw(r, c), sw((r + 1) % rows, c)))
    return nodes, links


HOLLOW = 2  # region's compute: hollow


def region(racks: int, hosts_per_rack: int, spines: int, uplinks: int, compute: int = 0, full_racks: int = 0) -> Bulk:
    """An Alcor-style region: racks of hosts under a top-of-rack switch, each ToR wired to `uplinks` spines.

    compute: 0 plain hosts, 1 compute nodes, 2 (hollow) hollow compute nodes, of which the first host of
    `full_racks` racks, spread evenly over the region, is a full compute node.

    Built as index arrays (no per-link tuples): a 1M-host region takes well under a second.
    """
    import numpy as np

    if uplinks > spines:
        raise ValueError(f"uplinks ({uplinks}) cannot exceed spines ({spines})")
    block = 1 + hosts_per_rack  # a ToR and its hosts, contiguous
    names = [f"sp{i}" for i in range(1, spines + 1)]
    kinds = ["switch"] * spines
    if full_racks > racks:
        raise ValueError(f"full_racks ({full_racks}) cannot exceed racks ({racks})")
    host_kinds = ["hollow" if compute == HOLLOW else "compute" if compute else "host"] * hosts_per_rack
    full = set(np.linspace(1, racks, full_racks).round().astype(int).tolist()) if compute == HOLLOW else set()
    prefix = "cn" if compute else "h"
    h = 0
    for r in range(1, racks + 1):
        names.append(f"t{r}")
        names += [f"{prefix}{i}" for i in range(h + 1, h + hosts_per_rack + 1)]
        h += hosts_per_rack
        kinds.append("switch")
        kinds += ["compute", *host_kinds[1:]] if r in full and hosts_per_rack else host_kinds
    tor = spines + np.arange(racks, dtype=np.int64) * block  # index of each ToR
    # ToR r takes spines r, r+1, ... (mod spines): every spine gets the same share and the fabric is connected.
    up_spine = (np.arange(racks, dtype=np.int64)[:, None] + np.arange(uplinks)) % spines
    hosts = tor[:, None] + 1 + np.arange(hosts_per_rack)
    per_rack = uplinks + hosts_per_rack
    src = np.empty((racks, per_rack), dtype=np.int32)
    dst = np.empty((racks, per_rack), dtype=np.int32)
    src[:, :uplinks], dst[:, :uplinks] = tor[:, None], up_spine
    src[:, uplinks:], dst[:, uplinks:] = hosts, tor[:, None]
    return Bulk(names, kinds, src.ravel(), dst.ravel())


def as_bulk(generated: Generated | Bulk) -> Bulk:
    """Generator output as names and index arrays, the form the Topology keeps."""
    if isinstance(generated, Bulk):
        return generated
    nodes, links = generated
    index = {name: i for i, (name, _) in enumerate(nodes)}
    return Bulk([n for n, _ in nodes], [k for _, k in nodes], [index[a] for a, _ in links], [index[b] for _, b in links])


GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator("linear", (Param("switches", None, 1, "switches in a chain", required=True),
                             Param("hosts_per_switch", 1, 0, "hosts on each switch")), linear,
                  "a chain of switches, each with its hosts",
                  lambda switches, hosts_per_switch=1: (switches * (1 + hosts_per_switch),
                                                        switches - 1 + switches * hosts_per_switch)),
        Generator("tree", (Param("depth", None, 1, "levels of switches", required=True, maximum=64),
                           Param("fanout", 2, 1, "children of every switch")), tree,
                  "a tree of switches with hosts at the leaves (Mininet's tree,D,F)", _tree_size),
        Generator("fattree", (Param("k", None, 2, "port count; even", required=True),
                              Param("hosts_per_edge", None, 0, "hosts per edge switch (default k/2)")), fattree,
                  "the k-ary fat-tree: (k/2)^2 core, k pods, k^3/4 hosts", _fattree_size),
        Generator("leafspine", (Param("spines", None, 1, "spine switches", required=True),
                                Param("leaves", None, 1, "leaf switches", required=True),
                                Param("hosts_per_leaf", 1, 0, "hosts on each leaf")), leafspine,
                  "every leaf connected to every spine",
                  lambda spines, leaves, hosts_per_leaf=1: (spines + leaves * (1 + hosts_per_leaf),
                                                            leaves * (spines + hosts_per_leaf))),
        Generator("torus", (Param("rows", None, 3, "rows of switches", required=True),
                            Param("cols", None, 3, "columns of switches", required=True),
                            Param("hosts_per_switch", 1, 0, "hosts on each switch")), torus,
                  "a 2-D torus of switches",
                  lambda rows, cols, hosts_per_switch=1: (rows * cols * (1 + hosts_per_switch),
                                                          rows * cols * (2 + hosts_per_switch))),
        Generator("region", (Param("racks", None, 1, "racks (one top-of-rack switch each)", required=True),
                             Param("hosts_per_rack", 40, 0, "hosts under each top-of-rack switch"),
                             Param("spines", 16, 1, "spine switches"),
                             Param("uplinks", 4, 1, "spines each top-of-rack switch connects to"),
                             Param("compute", 0, 0, "full (or 1): the hosts are compute nodes cn1.. (own OVS and agent); "
                                   "hollow (or 2): hollow compute nodes, thousands to a process", maximum=2,
                                   words=("none", "full", "hollow")),
                             Param("full_racks", 0, 0, "with compute: hollow, the first host of this many racks "
                                   "(spread evenly) is a full compute node")),
                  region, "an Alcor-style cloud region: racks of hosts, top-of-rack switches, a spine layer",
                  lambda racks, hosts_per_rack=40, spines=16, uplinks=4, compute=0, full_racks=0: (
                      racks * (1 + hosts_per_rack) + spines, racks * (uplinks + hosts_per_rack))),
    )
}
