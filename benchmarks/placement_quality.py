"""Placement quality: links cut, bandwidth crossing machines and imbalance, per algorithm, side by side.

Data-centre fabrics (fat-tree, leaf-spine, the Alcor-style region) and WAN-like
graphs (networkx's Waxman and Barabasi-Albert models stand in for Topology Zoo
files, which are not shipped; pass your own GraphML/GML with --graph).

    .venv/bin/python benchmarks/placement_quality.py
    .venv/bin/python benchmarks/placement_quality.py --machines 4 8 --graph Abilene.graphml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import networkx as nx  # noqa: E402

from emulator.compiler.compile import compile_cluster  # noqa: E402
from emulator.compiler.placement import ALGORITHMS  # noqa: E402
from emulator.model import Cluster, Topology  # noqa: E402
from emulator.topology.imports import load_graph_file, topology_from_networkx  # noqa: E402
from emulator.topology.loader import load_text  # noqa: E402


def generated(name: str, spec: str) -> Topology:
    return load_text(f"version: 1\nname: {name}\ntopology: {spec}\n")


def wan(name: str, graph: nx.Graph) -> Topology:
    """A switch per graph node with one host each, as a Topology Zoo file gets when imported."""
    g = nx.Graph(name=name)
    for n in graph.nodes:
        g.add_node(f"s{n}", kind="switch")
        g.add_node(f"h{n}", kind="host")
        g.add_edge(f"h{n}", f"s{n}")
    g.add_edges_from((f"s{a}", f"s{b}") for a, b in graph.edges)
    return topology_from_networkx(g, name)


def topologies(extra: list[str]) -> list[Topology]:
    out = [
        generated("fattree8", "{generator: fattree, k: 8}"),
        generated("leafspine", "{generator: leafspine, spines: 8, leaves: 32, hosts_per_leaf: 16}"),
        generated("region", "{generator: region, racks: 100, hosts_per_rack: 20, spines: 16, uplinks: 4}"),
        wan("waxman200", nx.waxman_graph(200, beta=0.12, alpha=0.3, seed=7)),
        wan("barabasi500", nx.barabasi_albert_graph(500, 2, seed=7)),
    ]
    out += [load_graph_file(p) for p in extra]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--graph", action="append", default=[], help="a GraphML/GML/node-link JSON file to add")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for topo in topologies(args.graph):
        size = topo.summary()
        for k in args.machines:
            for algorithm in ALGORITHMS:
                m = compile_cluster(topo, Cluster.local(k), placement=algorithm).metrics
                rows.append({"topology": topo.name, "nodes": size["nodes"], "links": size["links"], **m})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'topology':<12} {'nodes':>6} {'links':>6} {'machines':>8} {'algorithm':<12} {'cut':>6} {'cut %':>6} "
          f"{'crossing Mbit/s':>15} {'max/mean':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['topology']:<12} {r['nodes']:>6} {r['links']:>6} {r['machines']:>8} {r['algorithm']:<12} "
              f"{r['links_cut']:>6} {100 * r['links_cut'] / r['links']:>5.1f}% {r['crossing_bw']:>15,.0f} "
              f"{r['max_load_ratio']:>8.3f} {r['compile_seconds']:>8.3f}")


if __name__ == "__main__":
    main()
