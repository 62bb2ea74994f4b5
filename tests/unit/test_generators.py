import networkx as nx
import pytest

from emulator.topology.generators import GENERATORS
from emulator.topology.loader import load_text


def build(name, **kw):
    nodes, links = GENERATORS[name].build(**kw)
    g = nx.MultiGraph()
    g.add_nodes_from(n for n, _ in nodes)
    g.add_edges_from(links)
    kinds = dict(nodes)
    return nodes, links, g, kinds


@pytest.mark.parametrize("k", [2, 4, 6])
def test_fattree_counts_and_degrees(k):
    nodes, links, g, kinds = build("fattree", k=k, hosts_per_edge=None)
    hosts = [n for n, kind in kinds.items() if kind == "host"]
    switches = [n for n, kind in kinds.items() if kind == "switch"]
    assert len(hosts) == k**3 // 4
    assert len(switches) == 5 * k * k // 4
    assert all(g.degree(s) == k for s in switches)  # every switch uses all k ports
    assert nx.is_connected(g)


def test_leafspine_full_bipartite():
    _, links, g, kinds = build("leafspine", spines=3, leaves=5, hosts_per_leaf=2)
    for leaf in (n for n in kinds if n.startswith("lf")):
        assert sorted(x for x in g.neighbors(leaf) if x.startswith("sp")) == ["sp1", "sp2", "sp3"]
    assert sum(1 for k in kinds.values() if k == "host") == 10


def test_tree_matches_mininet():
    _, _, g, kinds = build("tree", depth=2, fanout=3)
    assert sum(1 for k in kinds.values() if k == "switch") == 4
    assert sum(1 for k in kinds.values() if k == "host") == 9
    assert nx.is_tree(nx.Graph(g))


def test_linear_and_torus():
    _, links, _, kinds = build("linear", switches=4, hosts_per_switch=2)
    assert len(kinds) == 12 and len(links) == 3 + 8
    _, links, g, kinds = build("torus", rows=3, cols=4, hosts_per_switch=1)
    switches = [n for n, k in kinds.items() if k == "switch"]
    assert len(switches) == 12 and all(g.degree(s) == 5 for s in switches)


def test_generator_in_file_with_extra_nodes():
    topo = load_text("version: 1\ntopology: {generator: linear, switches: 2}\nnodes: {h9: {}}\n"
                     "links: [{endpoints: [h9, s2], bw: 10}]\n")
    assert "h9" in topo.nodes and len(topo.links) == 4
    assert topo.links[-1].params.bw == 10
