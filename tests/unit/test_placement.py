"""The compiler for many machines: placement, tunnels, shards. Pure: no machine is touched."""

from __future__ import annotations

import filecmp
import os
import re
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from emulator.compiler.compile import VXLAN_OVERHEAD, compile_cluster
from emulator.compiler.graph import graph_of
from emulator.compiler.placement import ALGORITHMS
from emulator.compiler.shards import read_index, read_shard, write_plan
from emulator.model import IFNAMSIZ, Cluster, Machine, TopologyError
from emulator.topology.cluster import load_cluster, load_cluster_text
from emulator.topology.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def topo_of(body: str):
    return load_text("version: 1\nname: t\n" + body)


def cluster_of(*machines: Machine) -> Cluster:
    return Cluster("test", list(machines))


TOPOLOGIES = {
    "fattree4": "topology: {generator: fattree, k: 4}",
    "leafspine": "topology: {generator: leafspine, spines: 4, leaves: 12, hosts_per_leaf: 6}",
    "region": "topology: {generator: region, racks: 30, hosts_per_rack: 10, spines: 4, uplinks: 2}",
    "torus": "topology: {generator: torus, rows: 4, cols: 4, hosts_per_switch: 2}\ndefaults: {link: {bw: 100}}",
}


def all_shards(compiled):
    return [compiled.plan(m) for m in range(len(compiled.cluster.machines))]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
@pytest.mark.parametrize("machines", [2, 5])
def test_plan_properties(name, algorithm, machines):
    topo = topo_of(TOPOLOGIES[name])
    cap = len(topo.nodes) // machines + 8
    cluster = cluster_of(*[Machine(f"w{i}", tunnel_ip=f"10.9.0.{i}", max_nodes=cap, mtu=1500) for i in range(machines)])
    compiled = compile_cluster(topo, cluster, placement=algorithm)
    shards = all_shards(compiled)

    # each node on exactly one machine, none above capacity
    placed = Counter(n.name for s in shards for n in s.nodes)
    assert set(placed) == set(topo.nodes) and set(placed.values()) == {1}
    assert all(len(s.nodes) <= cap for s in shards)
    # every link realized exactly once: a veth in one shard, or a tunnel end in each of two shards
    veths = Counter(lk.id for s in shards for lk in s.links)
    ends = Counter(t.link for s in shards for t in s.tunnels)
    assert set(veths.values()) <= {1} and set(ends.values()) <= {2}
    assert sorted(list(veths) + list(ends)) == list(range(len(topo.links)))
    assert compiled.metrics["links_cut"] == len(ends)
    # a tunnel's two ends agree, and its VNI is the experiment's alone
    by_link: dict[int, list] = {}
    for s in shards:
        for t in s.tunnels:
            by_link.setdefault(t.link, []).append((s.machine, t))
    vnis = [pair[0][1].vni for pair in by_link.values()]
    assert len(set(vnis)) == len(vnis) and all(0 < v < 2 ** 24 for v in vnis)
    for (ma, ta), (mb, tb) in by_link.values():
        assert ta.vni == tb.vni and ta.peer_machine == mb and tb.peer_machine == ma != mb
        assert (ta.local_ip, ta.remote_ip) == (tb.remote_ip, tb.local_ip)
        assert ta.mtu == 1500 - VXLAN_OVERHEAD and ta.port == 4789
    # every device name fits the kernel, and no two devices share a name on one machine
    for s in shards:
        root = [lk.a.dev for lk in s.links if lk.a.netns is None] + [lk.b.dev for lk in s.links if lk.b.netns is None]
        root += [t.end.dev if t.end.netns is None else t.create_as for t in s.tunnels]
        root += [n.device for n in s.nodes if n.device]
        assert all(len(d) <= IFNAMSIZ for d in root)
        assert len(root) == len(set(root))
        if by_link:  # frames must fit through the tunnels: every link carries the tunnel MTU
            assert {lk.params.get("mtu") for lk in s.links} <= {1450}


def test_metis_cuts_fewer_links_than_round_robin():
    topo = topo_of(TOPOLOGIES["region"])
    cut = {a: compile_cluster(topo, Cluster.local(4), placement=a).metrics["links_cut"] for a in ALGORITHMS}
    assert cut["metis"] < cut["greedy"] < cut["round-robin"]


def test_metis_weights_bandwidth():
    """Two 10-host islands joined by a thin link: the cut goes through the thin link, not a fat one."""
    body = ["nodes:", "  s1: {kind: switch}", "  s2: {kind: switch}"]
    body += [f"  h{i}: {{}}" for i in range(20)]
    body += ["links:", "  - {endpoints: [s1, s2], bw: 1}"]
    body += [f"  - {{endpoints: [h{i}, {'s1' if i < 10 else 's2'}], bw: 1000}}" for i in range(20)]
    compiled = compile_cluster(topo_of("\n".join(body)), Cluster.local(2))
    assert compiled.metrics["links_cut"] == 1 and compiled.metrics["crossing_bw"] == 1


def test_pins_win_and_are_respected_by_every_algorithm():
    body = TOPOLOGIES["leafspine"].replace("topology", "topology") + "\nnodes:\n  x1: {machine: w2}\n  x2: {machine: w0}\n"
    body += "links:\n  - {endpoints: [x1, lf1]}\n  - {endpoints: [x2, lf1]}\n"
    cluster = cluster_of(*[Machine(f"w{i}", tunnel_ip=f"10.9.0.{i}") for i in range(3)])
    for algorithm in ALGORITHMS:
        compiled = compile_cluster(topo_of(body), cluster, placement=algorithm)
        where = {n.name: s.machine for s in all_shards(compiled) for n in s.nodes}
        assert where["x1"] == "w2" and where["x2"] == "w0"


def test_heterogeneous_capacity_is_respected():
    topo = topo_of(TOPOLOGIES["leafspine"])
    cluster = cluster_of(Machine("big", tunnel_ip="10.9.0.1", max_nodes=70), Machine("small", tunnel_ip="10.9.0.2",
                                                                                        max_nodes=20))
    for algorithm in ALGORITHMS:
        counts = {s.machine: len(s.nodes) for s in all_shards(compile_cluster(topo, cluster, placement=algorithm))}
        assert counts["big"] <= 70 and counts["small"] <= 20, (algorithm, counts)


@pytest.mark.parametrize(("body", "machines", "message"), [
    ("topology: {generator: linear, switches: 10}", [("w1", {"max_nodes": 5}), ("w2", {"max_nodes": 5})],
     "the topology needs 20 nodes but the cluster has 10; add machines or raise their max_nodes"),
    ("nodes:\n  h1: {machine: w9}", [("w1", {})], "node h1 is pinned to unknown machine 'w9'; the cluster has: w1"),
    ("nodes:\n  h1: {cpu: 16}", [("w1", {"cpu": 8}), ("w2", {"cpu": 8})],
     "node h1 asks for 16 cpu, more than any machine has (8)"),
    ("nodes:\n  h1: {cpu: 4}\n  h2: {cpu: 4}\n  h3: {cpu: 4}", [("w1", {"cpu": 4}), ("w2", {"cpu": 4})],
     "the topology needs 12 cpu but the cluster has 8"),
    ("nodes:\n  h1: {machine: w1}\n  h2: {machine: w1}", [("w1", {"max_nodes": 1}), ("w2", {})],
     "the nodes pinned to w1 need 2 max_nodes, it has 1"),
    ("nodes:\n  h1: {memory: 4096}\n  h2: {memory: 4096}\n  h3: {}", [("w1", {"memory": 6000}),
                                                                     ("w2", {"memory": 6000, "max_nodes": 1})],
     "node"),  # fits only as {h1, h3} + {h2}: placement must find it, not fail
])
def test_what_does_not_fit_is_refused_with_its_cause(body, machines, message):
    cluster = cluster_of(*[Machine(n, tunnel_ip=f"10.9.0.{i}", **kw) for i, (n, kw) in enumerate(machines, 1)])
    topo = topo_of(body)
    if message == "node":
        compiled = compile_cluster(topo, cluster)
        assert compiled.metrics["links_cut"] == 0
        return
    with pytest.raises(TopologyError) as info:
        compile_cluster(topo, cluster)
    assert message in str(info.value)


def test_pinned_unknown_machine_points_at_the_line():
    with pytest.raises(TopologyError) as info:
        compile_cluster(topo_of("nodes:\n  h1: {}\n  h2: {machine: nowhere}"), Cluster.local(2))
    assert info.value.where.line == 5 and info.value.field == "nodes.h2.machine"


def test_mtu_too_big_for_a_tunnel_is_refused():
    topo = topo_of("nodes:\n  h1: {machine: m1}\n  h2: {machine: m2}\nlinks:\n  - {endpoints: [h1, h2], mtu: 9000}")
    with pytest.raises(TopologyError, match="mtu 9000 does not fit through the VXLAN tunnel"):
        compile_cluster(topo, Cluster.local(2))


@pytest.mark.parametrize("path", sorted((GOLDEN / "cluster_errors").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_cluster_file_gives_its_error(path):
    m = re.match(r"# expect: (\d*): (.*)$", path.read_text().splitlines()[0])
    with pytest.raises(TopologyError) as info:
        load_cluster(path)
    assert info.value.where.file == str(path) and info.value.where.line == int(m.group(1)), str(info.value)
    assert m.group(2) in str(info.value)


def test_cluster_defaults_apply_and_machines_override():
    cluster = load_cluster_text("version: 1\ndefaults: {max_nodes: 10, user: emu}\nmachines:\n"
                                "  a: {address: 10.1.0.1}\n  b: {address: 10.1.0.2, max_nodes: 3, tunnel_ip: 10.2.0.2}\n")
    a, b = cluster.machines
    assert (a.max_nodes, a.user, a.tunnel_address) == (10, "emu", "10.1.0.1")
    assert (b.max_nodes, b.tunnel_address) == (3, "10.2.0.2")


def test_region_generator_shape():
    topo = load_text("version: 1\ntopology: {generator: region, racks: 12, hosts_per_rack: 5, spines: 6, uplinks: 3}")
    assert topo.only_bulk()  # kept as arrays until someone asks for objects
    summary = topo.summary()
    assert summary["kinds"] == {"switch": 18, "host": 60} and summary["links"] == 12 * (3 + 5)
    g = nx.Graph([(lk.a.node, lk.b.node) for lk in topo.links])
    assert nx.is_connected(g)
    assert all(sum(1 for n in g[f"t{r}"] if n.startswith("sp")) == 3 for r in range(1, 13))
    assert len({g.degree(f"sp{s}") for s in range(1, 7)}) == 1  # every spine carries the same number of racks


def test_long_generated_names_get_short_port_devices():
    """Rack 10000's ToR has ports eth1..eth44: <tag>-t10000-eth44 is 16 characters, so it becomes abc-t10000-44."""
    topo = load_text("version: 1\ntopology: {generator: region, racks: 10000, hosts_per_rack: 40}")
    compiled = compile_cluster(topo, None, tag="abc")
    devs = {compiled.end_row(e)["dev"] for e in range(2 * (topo.summary()["links"] - 44), 2 * topo.summary()["links"])}
    assert "abc-t10000-44" in devs and "abc-t10000-eth9" in devs
    assert max(map(len, devs)) <= IFNAMSIZ


def test_bulk_and_object_paths_give_the_same_plan():
    text = "version: 1\nname: same\ntopology: {generator: fattree, k: 4}\n"
    bulk, objects = load_text(text), load_text(text)
    objects.nodes  # noqa: B018 - makes the objects
    assert bulk.only_bulk() and not objects.only_bulk()
    a = compile_cluster(bulk, Cluster.local(3), tag="abc")
    b = compile_cluster(objects, Cluster.local(3), tag="abc")
    assert [a.shard(m) for m in range(3)] == [b.shard(m) for m in range(3)]


def test_graph_csr_merges_parallel_links():
    topo = topo_of("nodes:\n  s1: {kind: switch}\n  s2: {kind: switch}\nlinks:\n  - {endpoints: [s1, s2], bw: 10}\n"
                   "  - {endpoints: [s1, s2], bw: 5}")
    xadj, adjncy, ew = graph_of(topo).csr()
    assert xadj.tolist() == [0, 1, 2] and adjncy.tolist() == [1, 0] and ew.tolist() == [15, 15]


def test_golden_sharded_plan(tmp_path):
    """fattree k=4 on topologies/cluster2.yaml, byte for byte (regenerate with UPDATE_GOLDEN=1)."""
    topo = load_text("version: 1\nname: fattree\ntopology: {generator: fattree, k: 4}\ndefaults: {link: {bw: 100}}\n")
    compiled = compile_cluster(topo, load_cluster(ROOT / "topologies" / "cluster2.yaml"), tag="abc")
    golden = GOLDEN / "plans" / "fattree_on_cluster2"
    out = golden if os.environ.get("UPDATE_GOLDEN") else tmp_path / "plan"
    index = write_plan(compiled, out, workers=1)
    index["placement"]["compile_seconds"] = 0
    if os.environ.get("UPDATE_GOLDEN"):
        return
    cmp = filecmp.dircmp(golden / "shards", out / "shards")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    expected = read_index(golden)
    for key in ("machines", "experiment", "subnet"):
        assert index[key] == expected[key]
    assert {k: v for k, v in index["placement"].items() if k != "compile_seconds"} == \
        {k: v for k, v in expected["placement"].items() if k != "compile_seconds"}
    shard = read_shard(out / "shards" / "w1.json")
    assert shard.machine == "w1" and shard.tunnels


def test_parallel_and_serial_writers_agree(tmp_path):
    topo = load_text("version: 1\nname: r\ntopology: {generator: region, racks: 40, hosts_per_rack: 10}")
    compiled = compile_cluster(topo, Cluster.local(7))
    write_plan(compiled, tmp_path / "serial", workers=1)
    write_plan(compiled, tmp_path / "forked", workers=2)
    cmp = filecmp.dircmp(tmp_path / "serial" / "shards", tmp_path / "forked" / "shards")
    assert len(list((tmp_path / "serial" / "shards").iterdir())) == 7
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_out_dir_with_other_content_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    compiled = compile_cluster(topo_of(TOPOLOGIES["fattree4"]), Cluster.local(2))
    with pytest.raises(FileExistsError):
        write_plan(compiled, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_same_input_same_vnis_and_addresses():
    topo_a, topo_b = topo_of(TOPOLOGIES["torus"]), topo_of(TOPOLOGIES["torus"])
    a, b = compile_cluster(topo_a, Cluster.local(3)), compile_cluster(topo_b, Cluster.local(3))
    assert np.array_equal(a.part, b.part) and [a.shard(m) for m in range(3)] == [b.shard(m) for m in range(3)]


def test_default_mtu_too_big_for_tunnels_is_refused_for_generated_topologies():
    topo = load_text("version: 1\ndefaults: {link: {mtu: 9000}}\ntopology: {generator: fattree, k: 4}")
    with pytest.raises(TopologyError, match="defaults.link.mtu 9000 does not fit"):
        compile_cluster(topo, Cluster.local(2))
    assert compile_cluster(topo, None).plan().links[0].params["mtu"] == 9000  # one machine: no tunnel, no limit
