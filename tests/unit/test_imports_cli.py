import json

import networkx as nx
import pytest
from click.testing import CliRunner

from emulator import from_networkx
from emulator.cli import cli
from emulator.model import TopologyError
from emulator.topology.imports import from_mininet, from_mn_spec, load_graph_file
from tests.conftest import ROOT


def test_mn_specs():
    assert len(from_mn_spec("linear,4").hosts()) == 4
    tree = from_mn_spec("tree,2,3")
    assert len(tree.hosts()) == 9 and len(tree.switches()) == 4
    assert len(from_mn_spec("single,5").hosts()) == 5
    with pytest.raises(TopologyError, match="unknown Mininet topology"):
        from_mn_spec("ring,4")


def test_mininet_topo_object_and_custom_file(tmp_path):
    from mininet.topo import Topo

    class Two(Topo):
        def build(self, n=2):
            s = self.addSwitch("s1")
            for i in range(1, n + 1):
                self.addLink(self.addHost(f"h{i}"), s, bw=10)

    topo = from_mininet(Two(n=3), "two")
    assert len(topo.hosts()) == 3 and all(lk.params.bw == 10 for lk in topo.links)
    custom = tmp_path / "custom.py"
    custom.write_text("from mininet.topo import Topo\n"
                      "class T(Topo):\n    def build(self, n=2):\n        s = self.addSwitch('s1')\n"
                      "        [self.addLink(self.addHost(f'h{i}'), s) for i in range(n)]\n"
                      "topos = {'mytopo': T}\n")
    assert len(from_mn_spec("mytopo,4", str(custom)).hosts()) == 4
    with pytest.raises(TopologyError, match="known: mytopo"):
        from_mn_spec("other", str(custom))


def test_graph_files(tmp_path):
    g = nx.Graph()
    g.add_node("s1", kind="switch")
    g.add_node("h1")
    g.add_node("h2")
    g.add_edge("h1", "s1", bw=20)
    g.add_edge("h2", "s1")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(nx.node_link_data(g, edges="links")))
    topo = load_graph_file(path)
    assert topo.nodes["s1"].kind == "switch" and topo.links[0].params.bw == 20
    nx.write_graphml(g, tmp_path / "g.graphml")
    assert len(load_graph_file(tmp_path / "g.graphml").links) == 2
    zoo = nx.cycle_graph(["New York", "Chicago", "Denver"])  # a Topology Zoo-like graph: no kinds
    nx.write_gml(zoo, tmp_path / "zoo.gml")
    topo = load_graph_file(tmp_path / "zoo.gml")
    assert len(topo.switches()) == 3 and len(topo.hosts()) == 3 and "New_York" in topo.nodes
    bad = nx.Graph()
    bad.add_edge("a", "b", bw=-1)
    with pytest.raises(TopologyError, match="greater than 0"):
        from_networkx(bad)


def test_cli_validate_plan_graph_exit_codes():
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", str(ROOT / "topologies/smoke.yaml"), "-o", "json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["valid"] is True
    bad = runner.invoke(cli, ["validate", str(ROOT / "tests/golden/errors/self_loop.yaml"), "-o", "json"])
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["line"] == 6
    plan = runner.invoke(cli, ["plan", "linear,3", "-o", "json"])
    assert plan.exit_code == 0 and json.loads(plan.stdout)["summary"]["nodes"] == 6
    dot = runner.invoke(cli, ["graph", str(ROOT / "topologies/smoke.yaml")])
    assert dot.exit_code == 0 and '"h1" -- "s1" [label="bw=50"]' in dot.output


def test_cli_plan_on_many_machines(tmp_path):
    runner = CliRunner()
    cluster = str(ROOT / "topologies/cluster2.yaml")
    res = runner.invoke(cli, ["plan", "tree,2,4", "--cluster", cluster, "--out", str(tmp_path / "p"), "-o", "json"])
    assert res.exit_code == 0, res.output
    index = json.loads(res.stdout)
    assert [m["machine"] for m in index["machines"]] == ["w1", "w2"]
    assert sum(m["nodes"] for m in index["machines"]) == 21
    assert {p.name for p in (tmp_path / "p" / "shards").iterdir()} == {"w1.json", "w2.json"}
    assert set(index["placement"]) >= {"links_cut", "crossing_bw", "max_load_ratio", "compile_seconds"}

    compare = runner.invoke(cli, ["plan", "tree,2,4", "--machines", "3", "--compare", "-o", "json"])
    assert compare.exit_code == 0, compare.output
    assert [r["algorithm"] for r in json.loads(compare.stdout)] == ["metis", "round-robin", "greedy"]

    bad = runner.invoke(cli, ["plan", "tree,2,4", "--cluster", str(ROOT / "tests/golden/cluster_errors/unknown_key.yaml"),
                              "-o", "json"])
    assert bad.exit_code == 2 and json.loads(bad.stdout)["field"] == "machines.w1.adress"
    too_small = runner.invoke(cli, ["plan", "linear,500", "--cluster", cluster, "--out", str(tmp_path / "q")])
    assert too_small.exit_code == 2 and "needs 1000 nodes but the cluster has 400" in too_small.output
    assert not (tmp_path / "q").exists()  # nothing written for a plan that cannot be made
