import ipaddress
import json
from pathlib import Path

import pytest

from emulator import from_networkx
from emulator.compiler.compile import compile_topology
from emulator.compiler.plan import Plan
from emulator.model import IFNAMSIZ, TopologyError
from emulator.topology.loader import load_file, load_text

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "plans"
HOST_ROUTES = [(ipaddress.ip_network("192.0.2.0/24"), "dev eth0"), (ipaddress.ip_network("172.17.0.0/16"), "docker")]


@pytest.mark.parametrize("name", ["smoke", "bridged", "alcor-small"])
def test_golden_plan(name):
    """The same input gives the same plan, byte for byte (regenerate with UPDATE_GOLDEN=1)."""
    import os

    plan = compile_topology(load_file(ROOT / "topologies" / f"{name}.yaml"), tag="abc", reserved=HOST_ROUTES)
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(plan.to_json() + "\n")
    assert plan.to_json() + "\n" == golden.read_text()
    assert Plan.from_json(golden.read_text()).to_json() == plan.to_json()


@pytest.mark.parametrize("source", [
    "topology: {generator: fattree, k: 4}",
    "topology: {generator: leafspine, spines: 4, leaves: 8, hosts_per_leaf: 4}",
    "topology: {generator: torus, rows: 3, cols: 3, hosts_per_switch: 2}",
])
def test_plan_properties(source):
    topo = load_text("version: 1\nname: prop\n" + source)
    plan = compile_topology(topo, tag="abc")
    # every link realized exactly once, each with two distinct ends
    assert len(plan.links) == len(topo.links)
    assert sorted(lk.id for lk in plan.links) == list(range(len(topo.links)))
    # device names fit the kernel and are unique where they live
    seen = set()
    for lk in plan.links:
        for end in (lk.a, lk.b):
            assert len(end.dev) <= IFNAMSIZ
            assert (end.netns, end.dev) not in seen
            seen.add((end.netns, end.dev))
    # addresses and MACs unique
    ips = [n.ip for n in plan.hosts()]
    assert len(set(ips)) == len(ips) == len(topo.hosts())
    macs = [e.mac for lk in plan.links for e in (lk.a, lk.b) if e.mac]
    assert len(set(macs)) == len(macs)
    # loops get spanning tree, and every switch has a distinct datapath id
    switches = [n for n in plan.nodes if n.kind == "switch"]
    assert all(s.options["stp"] for s in switches)
    assert len({s.options["dpid"] for s in switches}) == len(switches)


def test_tree_needs_no_stp_and_is_deterministic():
    text = "version: 1\nname: t\ntopology: {generator: tree, depth: 2, fanout: 2}\n"
    a = compile_topology(load_text(text), tag="abc")
    b = compile_topology(load_text(text), tag="abc")
    assert a.to_json() == b.to_json()
    assert not any(n.options.get("stp") for n in a.nodes if n.kind == "switch")


def test_auto_addresses_skip_explicit_ones():
    topo = load_text("version: 1\nname: a\ndefaults: {subnet: 10.9.0.0/24}\n"
                     "nodes: {h1: {}, h2: {ip: 10.9.0.1/24}, h3: {}}\n")
    plan = compile_topology(topo, tag="abc")
    assert {n.name: n.ip for n in plan.hosts()} == {"h1": "10.9.0.2/24", "h2": "10.9.0.1/24", "h3": "10.9.0.3/24"}


def test_explicit_interface_names_and_reuse_error():
    topo = load_text("version: 1\nname: i\nnodes: {s1: {kind: switch}, h1: {}, h2: {}}\n"
                     "links: [{endpoints: ['h1:data0', 's1:p1']}, {endpoints: [h2, 's1']}]\n")
    plan = compile_topology(topo, tag="abc")
    assert (plan.links[0].a.dev, plan.links[0].b.dev) == ("data0", "abc-s1-p1")
    assert plan.links[1].b.dev == "abc-s1-eth1"
    bad = load_text("version: 1\nname: i\nnodes: {s1: {kind: switch}, h1: {}, h2: {}}\n"
                    "links: [{endpoints: ['h1', 's1:p1']}, {endpoints: [h2, 's1:p1']}]\n", "f.yaml")
    with pytest.raises(TopologyError, match="used by two links") as info:
        compile_topology(bad, tag="abc")
    assert info.value.where.line == 4


def test_link_defaults_merge():
    topo = load_text("version: 1\nname: d\ndefaults: {link: {bw: 100, mtu: 1400}}\n"
                     "nodes: {s1: {kind: switch}, h1: {}, h2: {}}\n"
                     "links: [{endpoints: [h1, s1], bw: 5}, {endpoints: [h2, s1]}]\n")
    plan = compile_topology(topo, tag="abc")
    assert [lk.params for lk in plan.links] == [{"bw": 5, "mtu": 1400}, {"bw": 100, "mtu": 1400}]


def test_networkx_roundtrip():
    topo = load_file(ROOT / "topologies" / "smoke.yaml")
    again = from_networkx(topo.to_networkx(), "smoke")
    assert sorted(again.nodes) == sorted(topo.nodes)
    assert json.dumps(sorted(map(sorted, (lk.nodes for lk in again.links)))) == \
        json.dumps(sorted(map(sorted, (lk.nodes for lk in topo.links))))
