"""Pure decisions of the netns engine: which OVS holds the switches, where their ports live, and the
netlink requests nsconfig packs by hand (checked against pyroute2's own encoder)."""

import socket

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from emulator.compiler.compile import compile_topology
from emulator.topology.loader import load_text
from provisioners import batches, fabric, nsconfig, switchd

SMOKE = ("version: 1\nname: t\nnodes: {s1: {kind: switch}, h1: {}, h2: {}}\n"
         "links: [{endpoints: [h1, s1]}, {endpoints: [h2, s1]}]\n")


def _engine(monkeypatch, kernel: bool, choice: str | None) -> fabric.Fabric:
    if choice is None:
        monkeypatch.delenv("CLOUDEMU_OVS", raising=False)
    else:
        monkeypatch.setenv("CLOUDEMU_OVS", choice)
    engine = fabric.Fabric()
    monkeypatch.setattr(engine, "kernel_datapath", lambda: kernel)
    return engine


@pytest.mark.parametrize("kernel, choice, controller, private", [
    (False, None, False, True),  # userspace datapath: the experiment's own OVS
    (True, None, False, False),  # kernel module: the machine's
    (False, None, True, False),  # a controller may listen on the machine's loopback
    (False, "system", False, False),
    (True, "private", True, True),
])
def test_which_ovs_holds_the_switches(monkeypatch, kernel, choice, controller, private):
    text = SMOKE.replace("{kind: switch}", "{kind: switch, controller: 'tcp:127.0.0.1:6653'}") if controller else SMOKE
    plan = compile_topology(load_text(text))
    where = _engine(monkeypatch, kernel, choice).switch_instances(plan)
    assert where == ({"s1": switchd.base_for("t", "local")} if private else {})


def test_bad_choice_is_named(monkeypatch):
    monkeypatch.setenv("CLOUDEMU_OVS", "both")
    with pytest.raises(ValueError, match="CLOUDEMU_OVS='both'"):
        switchd.choice()


def test_switch_ends_move_to_the_switches_namespace(monkeypatch):
    engine = _engine(monkeypatch, kernel=False, choice=None)
    plan = engine.placed(compile_topology(load_text(SMOKE)))
    ns = switchd.namespace_for("t", "local")
    assert switchd.namespace_of(switchd.base_for("t", "local")) == ns
    for link in plan.links:
        for end in (link.a, link.b):
            assert (end.netns == ns) == (end.node == "s1")
    configs = {c.netns: c for c in batches.namespace_configs(plan, tx_csum_off=True)}
    assert [i.tx_csum_off for i in configs[ns].ifaces] == [False, False]  # only hosts need it
    assert all(c.ifaces[0].tx_csum_off for name, c in configs.items() if name != ns)
    resources = engine.resources(plan)
    assert resources[0].kind == "netns" and resources[0].name == ns and resources[1].kind == "ovs-instance"


def _encoded(msg, kind: int, flags: int) -> bytes:
    msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"] = kind, flags, 1
    msg.encode()
    return bytes(msg.data[nsconfig.NLMSG_HEADER.size:])


def test_hand_packed_requests_match_pyroute2():
    kind, flags, body, _ = nsconfig._address(7, "10.1.2.3/24")
    ref = ifaddrmsg()
    ref["family"], ref["prefixlen"], ref["index"] = socket.AF_INET, 24, 7
    ref["attrs"] = [("IFA_LOCAL", "10.1.2.3"), ("IFA_ADDRESS", "10.1.2.3")]
    assert body == _encoded(ref, kind, NLM_F_REQUEST | NLM_F_ACK | flags)
    kind, flags, body, _ = nsconfig._default_route("10.1.2.1")
    ref = rtmsg()
    ref["family"], ref["table"], ref["proto"], ref["type"] = socket.AF_INET, 254, 3, 1
    ref["attrs"] = [("RTA_GATEWAY", "10.1.2.1")]
    assert body == _encoded(ref, kind, NLM_F_REQUEST | NLM_F_ACK | flags)
    kind, flags, body, _ = nsconfig._no_ipv6_addresses(7)
    ref = ifinfmsg()
    ref["family"], ref["index"] = socket.AF_UNSPEC, 7
    ref["attrs"] = [("IFLA_AF_SPEC", {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]})]
    assert kind == RTM_NEWLINK and body == _encoded(ref, kind, NLM_F_REQUEST | NLM_F_ACK | flags)


def test_ip_batches_never_name_more_namespaces_than_the_open_files_limit_allows():
    from emulator.runtime.executor import FD_MARGIN, within_open_files

    lines = [f"netns add ce.x.h{i}" for i in range(500)]
    lines += [f"link add eth0 netns ce.x.h{i} type veth peer name p{i} netns ce.x.sw" for i in range(500)]
    parts = within_open_files(lines, limit=FD_MARGIN + 100)
    assert [ln for part in parts for ln in part] == lines  # nothing lost, nothing reordered
    assert all(sum(ln.count(" netns ") for ln in part if not ln.startswith("netns ")) <= 100 for part in parts)
    assert len(parts) == 10 and parts[0][:500] == lines[:500]  # namespace creation names none: one batch
    assert within_open_files(lines, limit=1 << 20) == [lines]


def test_switches_are_spread_over_instances_of_bounded_ports(monkeypatch):
    """A userspace ovs-vswitchd's cost grows with the square of its ports: whole switches, in plan order, go to
    instances of at most CLOUDEMU_OVS_PORTS ports each; link ends move to their own switch's namespace."""
    assert switchd.shards({"a": 3, "b": 3, "c": 5, "d": 1}, 6) == [["a", "b"], ["c", "d"]]
    assert switchd.shards({"big": 9, "a": 1}, 4) == [["big"], ["a"]]  # a switch above the budget has one of its own
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "12")
    engine = _engine(monkeypatch, kernel=False, choice=None)
    plan = compile_topology(load_text("version: 1\nname: t\ntopology: {generator: linear, switches: 4, "
                                      "hosts_per_switch: 5}\n"))
    where = engine.switch_instances(plan)
    assert len(set(where.values())) == 4 and where["s1"] == switchd.base_for("t", "local")
    assert where["s2"] == switchd.base_for("t", "local", 1)
    placed = engine.placed(plan)
    for link in placed.links:
        for end in (link.a, link.b):
            if end.node in where:
                assert end.netns == switchd.namespace_of(where[end.node])
    kinds = {r.kind for r in engine.resources(plan)}
    assert sum(r.kind == "ovs-instance" for r in engine.resources(plan)) == 4 and "netns" in kinds
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "zero")
    with pytest.raises(ValueError, match="CLOUDEMU_OVS_PORTS"):
        switchd.ports_per_instance()


def test_links_between_switches_of_one_ovs_are_patch_ports(monkeypatch):
    """Within one OVS an unshaped switch-to-switch link is a patch-port pair (no device, no journal entry); across
    instances, or shaped, it stays a veth; CLOUDEMU_PATCH_LINKS=0 keeps veths everywhere."""
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "14")  # s1+s2 (6 + 7 ports) in one instance, s3+s4 in the next
    engine = _engine(monkeypatch, kernel=False, choice=None)
    text = ("version: 1\nname: t\ntopology: {generator: linear, switches: 4, hosts_per_switch: 5}\n")
    plan = compile_topology(load_text(text))
    where = engine.switch_instances(plan)
    placed = engine.placed(plan)
    kinds = {(link.a.node, link.b.node): link.kind for link in placed.links if link.a.node in where and link.b.node in where}
    assert kinds == {("s1", "s2"): "patch", ("s2", "s3"): "veth", ("s3", "s4"): "patch"}
    patched = [link for link in placed.links if link.kind == "patch"]
    veths = batches.veth_lines(placed.links, "m")
    assert not any(e.dev in line for link in patched for e in (link.a, link.b) for line in veths)
    journaled = {r.name for r in engine.resources(plan) if r.kind == "veth"}
    assert not journaled & {e.dev for link in patched for e in (link.a, link.b)}
    configured = {i.dev for c in batches.namespace_configs(placed, tx_csum_off=True) for i in c.ifaces}
    assert not configured & {e.dev for link in patched for e in (link.a, link.b)}  # no device to bring up
    link = patched[0]
    cmds = batches.ovs_patch_port("s1", link.a, link.b, "t")
    assert cmds[1] == ["set", "Interface", link.a.dev, "type=patch", f"options:peer={link.b.dev}"]

    chain = compile_topology(load_text("version: 1\nname: t\ntopology: {generator: linear, switches: 70}\n"))
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "1000")
    kinds = [link.kind for link in engine.placed(chain).links if link.a.node.startswith("s") and link.b.node.startswith("s")]
    assert kinds.count("veth") == 2 and kinds.index("veth") == batches.PATCH_GROUP_MAX - 1  # OVS follows 64 at most

    shaped = compile_topology(load_text("version: 1\nname: t\nnodes: {s1: {kind: switch}, s2: {kind: switch}}\n"
                                        "links: [{endpoints: [s1, s2], bw: 10}]\n"))
    assert [link.kind for link in engine.placed(shaped).links] == ["veth"]
    monkeypatch.setenv("CLOUDEMU_PATCH_LINKS", "0")
    assert all(link.kind == "veth" for link in engine.placed(plan).links)
    monkeypatch.setenv("CLOUDEMU_PATCH_LINKS", "yes")
    with pytest.raises(ValueError, match="CLOUDEMU_PATCH_LINKS"):
        engine.placed(plan)
