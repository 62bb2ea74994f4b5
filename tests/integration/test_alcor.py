"""Compute nodes with their own OVS and agent, VMs made from goal states, VPCs kept apart; nothing left after down."""

import json
import socket
import subprocess
import threading
import time

import grpc
import pytest

from emulator.alcor import controller, goalstates, neighbours
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.api import Emulation
from emulator.topology.loader import load_file, load_text
from provisioners import nsconfig
from tests.conftest import NEEDS_ROOT_OVS, ROOT, cli, http_text_when_up, leftovers

pytestmark = NEEDS_ROOT_OVS

TWO_VPCS = """version: 1
name: {name}
defaults: {{subnet: 10.201.0.0/24}}
vpcs:
  blue: {{vni: 2001, cidr: 10.1.0.0/24}}
  red: {{vni: 2002, cidr: 10.1.0.0/24}}
nodes:
  tor: {{kind: switch}}
  cn1: {{kind: compute, provisioner: {engine}}}
  cn2: {{kind: compute, provisioner: {engine}}}
  b1: {{kind: vm, on: cn1, vpc: blue, ip: 10.1.0.11/24}}
  b2: {{kind: vm, on: cn2, vpc: blue, ip: 10.1.0.12/24}}
  r1: {{kind: vm, on: cn1, vpc: red, ip: 10.1.0.21/24}}
  r2: {{kind: vm, on: cn2, vpc: red, ip: 10.1.0.22/24}}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
"""


def pings(emu: Emulation, src: str, ip: str, tries: int = 3) -> bool:
    """True when `src` reaches `ip` (OVS's userspace tunnel learns the next hop on the first packets)."""
    for _ in range(tries):
        if emu.node(src).run(["ping", "-c", "1", "-W", "1", ip]).returncode == 0:
            return True
    return False


def meets_as_neighbour(emu: Emulation, target: str, vm: str, port: goalstates.Port) -> None:
    """`vm`'s agent learns `port` as a neighbour, then `vm` reaches it."""
    message = goalstate_pb2.GoalStateV2()
    message.neighbor_states[port.id].CopyFrom(goalstates.neighbor_state(port))
    (pushed,) = controller.stream(target, [message])
    assert pushed.failed == []
    deadline = time.monotonic() + 10
    while not pings(emu, vm, port.ip, tries=1) and time.monotonic() < deadline:
        pass
    assert pings(emu, vm, port.ip)


@pytest.mark.parametrize("engine", ["netns", "docker", "lxd"])
def test_vms_of_one_vpc_meet_across_compute_nodes_and_vpcs_stay_apart(state_dir, engine):
    """On Docker and LXD the agent, its OVS and the VMs live inside each compute node's container."""
    name = f"alcor_two_{engine}"
    emu = Emulation(load_text(TWO_VPCS.format(name=name, engine=engine))).up()
    try:
        states = {s.node: (s.kind, s.state) for s in emu.status()}
        assert states["cn1"] == ("compute", "running") and states["b2"] == ("vm", "running")
        # same VPC, other compute node, and the very first packet arrives (tunnel endpoints are resolved by up)
        assert pings(emu, "b1", "10.1.0.12", tries=1) and pings(emu, "r2", "10.1.0.21", tries=1)
        assert not pings(emu, "b1", "10.1.0.22", tries=1)  # red VM on the other node
        assert not pings(emu, "b1", "10.1.0.21", tries=1)  # red VM on the same node: its own VLAN on br-int
        assert not pings(emu, "r2", "10.1.0.12", tries=1)
        neighbours = emu.node("b1").cmd(["ip", "neigh", "show", "10.1.0.12"])
        b2 = next(v for v in emu.plan.vms if v["name"] == "b2")
        assert b2["mac"] in neighbours  # answered by br-tun's ARP responder with the neighbour's MAC
        mtu = emu.node("b1").cmd(["cat", "/sys/class/net/eth0/mtu"])
        assert int(mtu) == 1450  # room for VXLAN on a 1500-byte underlay
        # the other compute node is a static neighbour on the underlay, with the MAC its br-phy really has
        cn2_ip = emu.plan.node("cn2").ip.split("/")[0]
        static = json.loads(emu.node("cn1").cmd(["ip", "-j", "neigh", "show", "dev", "br-phy", cn2_ip]))
        cn2_mac = json.loads(emu.node("cn2").cmd(["ip", "-j", "link", "show", "br-phy"]))[0]["address"]
        assert [(n["lladdr"], n["state"]) for n in static] == [(cn2_mac, ["PERMANENT"])]
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_goal_states_delete_ports_and_v1_creates_them(state_dir):
    """The running agents take more goal states: DELETE removes a VM, a V1 unary call makes a new one."""
    name = "alcor_live"
    emu = Emulation(load_text(TWO_VPCS.format(name=name, engine="netns"))).up()
    try:
        targets = controller.agent_targets(emu.plan)
        ports = {p.name: p for p in controller.plan_ports(emu.plan)}
        deleted = goalstates.per_host([ports["b2"]], op=common.DELETE)
        host2 = ports["b2"].host_ip
        (pushed,) = controller.stream(targets[host2], [deleted[host2]])
        assert pushed.failed == [] and pushed.agent_us > 0
        assert "running" != {s.node: s.state for s in emu.status()}["b2"]
        assert not pings(emu, "b1", "10.1.0.12", tries=1)

        blue = ports["b1"].vpc
        b3 = goalstates.Port("b3", blue, host2, "10.1.0.13", "fa:16:3e:00:01:03")
        v2 = goalstates.per_host([b3])[host2]
        v1 = goalstate_pb2.GoalState(vpc_states=v2.vpc_states.values(), subnet_states=v2.subnet_states.values(),
                                     port_states=v2.port_states.values())
        with grpc.insecure_channel(targets[host2]) as channel:
            reply = rpc.GoalStateProvisionerStub(channel).PushNetworkResourceStates(v1, timeout=60)
        assert [s.operation_status for s in reply.operation_statuses] == [common.SUCCESS] * 3
        meets_as_neighbour(emu, targets[ports["b1"].host_ip], "b1", b3)
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}  # b3 too: the agent named it under the experiment's prefix


def test_alcor_small_runs_green_from_the_command_line(state_dir, tmp_path):
    junit = tmp_path / "junit.xml"
    proc = cli("run", "topologies/alcor-small.yaml", "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'failures="0"' in junit.read_text()
    assert leftovers(load_file(ROOT / "topologies" / "alcor-small.yaml").name) == {}


def test_load_programs_ports_checks_isolation_and_plots(state_dir, tmp_path):
    """`cloudemu alcor load`: 3 VPCs x 8 ports in batches at a set rate; reachability sampled; nothing left."""
    import json

    name = "alcor_small"
    cli("up", "topologies/alcor-small.yaml")
    try:
        png = tmp_path / "latency.png"
        proc = cli("alcor", "load", name, "--vpcs", "3", "--ports-per-vpc", "8", "--batch", "6", "--rate", "60",
                   "--samples", "4", "--plot", str(png), "-o", "json", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert report["ports"] == 24 and report["errors"] == 0 and report["messages"] >= 4
        assert report["reachability"]["same_vpc_failed"] == [] and report["reachability"]["other_vpc_reached"] == []
        assert report["reachability"]["same_vpc_sampled"] == [4] and report["reachability"]["other_vpc_sampled"] == [4]
        assert report["port_latency_ms"]["p99"] >= report["port_latency_ms"]["p50"] > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        states = json.loads(cli("status", name, "-o", "json").stdout)
        assert [s["state"] for s in states if s["kind"] == "vm"] == ["running"] * 4  # the topology's own VMs
        again = json.loads(cli("alcor", "load", name, "--vpcs", "1", "--ports-per-vpc", "4", "-o", "json").stdout)
        assert again["errors"] == 0 and again["reachability"]["same_vpc_failed"] == []  # a second run does not collide
    finally:
        cli("down", name)
    assert leftovers(name) == {}


def test_generated_region_of_compute_nodes_takes_a_load(state_dir):
    """A region from the generator (compute: 1): every node's agent programs its share of 4 VPCs."""
    from emulator.alcor import load as loadtest

    name = "alcor_gen"
    topo = load_text(f"version: 1\nname: {name}\ndefaults: {{subnet: 10.202.0.0/24}}\n"
                     "topology: {generator: region, racks: 2, hosts_per_rack: 2, spines: 1, uplinks: 1, compute: 1}\n")
    emu = Emulation(topo).up()
    try:
        targets = controller.agent_targets(emu.plan)
        assert len(targets) == 4
        spec = loadtest.LoadSpec(4, 6, batch=8)
        result = loadtest.run(spec, targets)
        assert result.errors == [] and result.ports == 24
        ports = loadtest.generate_ports(spec, sorted(targets))
        reach = loadtest.sample_reachability(ports, loadtest.vm_pinger(emu.plan, emu.target.run), 4)
        assert reach["same_vpc_failed"] == [] and reach["other_vpc_reached"] == []
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_external_agent_image_is_only_wired(state_dir):
    """agent: external: the user's image runs its own command once linked; cloudemu starts no agent of its own."""
    name = "alcor_ext"
    body = (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.205.0.0/24}}\nnodes:\n  s1: {{kind: switch}}\n"
            "  h1: {}\n"
            "  aca: {kind: compute, agent: external, provisioner: docker, image: 'cloudemu/node:1',\n"
            "        command: 'exec python3 -m http.server 50001', ports: ['15001:50001']}\n"
            "links:\n  - endpoints: [aca, s1]\n  - endpoints: [h1, s1]\n")
    emu = Emulation(load_text(body)).up()
    try:
        assert controller.agent_targets(emu.plan) == {}  # nothing of ours to drive
        states = {s.node: s for s in emu.status()}
        assert (states["aca"].kind, states["aca"].state) == ("compute", "running")
        assert emu.pingall(wait=10).failed == []  # wired into the topology like any node
        # the stand-in "agent" answers on its published port
        assert "Directory listing" in http_text_when_up("http://127.0.0.1:15001/")
        assert emu.node("aca").run(["pgrep", "-f", "emulator.alcor.node"]).returncode != 0
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_load_drives_an_agent_by_address(state_dir):
    """`alcor load --target HOST:PORT`, as against a real ACA: here our agent in an "external" container."""
    import json
    import sys
    from pathlib import Path

    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "grpc").is_dir())
    name = "alcor_target"
    body = (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.206.0.0/24}}\nnodes:\n  s1: {{kind: switch}}\n"
            "  aca: {kind: compute, agent: external, provisioner: docker, image: 'cloudemu/node:1',\n"
            f"        volumes: ['{ROOT}:/opt/code:ro', '{site}:/opt/site:ro'], ports: ['15002:50001'],\n"
            "        command: 'export PYTHONPATH=/opt/code:/opt/site; exec python3 -m emulator.alcor.node "
            "--dir /tmp/node --vm-prefix ext. > /tmp/agent.log 2>&1'}\n"
            "links:\n  - endpoints: [aca, s1]\n")
    emu = Emulation(load_text(body)).up()
    try:
        proc = cli("alcor", "load", "--target", "127.0.0.1:15002", "--vpcs", "2", "--ports-per-vpc", "4", "-o", "json",
                   check=False)
        report = json.loads(proc.stdout)
        assert proc.returncode == 0 and report["errors"] == 0, proc.stdout + proc.stderr
        assert report["ports"] == 4  # half the ports are on the agent, half on a remote host it learns as neighbours
        made = emu.node("aca").cmd(["ip", "netns", "list"])
        assert made.count("ext.") == 4
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_the_agent_learns_a_neighbours_mac_from_the_kernels_own_arp_and_gives_up_on_a_silent_one():
    """A real ARP exchange between two namespaces: a static entry is read from the table without a packet,
    the answered address is yielded with its MAC, the silent one only costs the timeout (that is how the
    agent primes tunnel endpoints)."""
    a, b = "ce-test-nbr-a", "ce-test-nbr-b"
    subprocess.run(["ip", "-batch", "-"], check=True, text=True, input=(
        f"netns add {a}\nnetns add {b}\n"
        f"link add nbr0 netns {a} type veth peer name nbr1 netns {b} address 02:00:00:aa:bb:cc\n"))
    try:
        nsconfig.configure([nsconfig.NamespaceConfig(a, [nsconfig.IfaceConfig("nbr0", "10.250.0.1/24")], ipv6=False),
                            nsconfig.NamespaceConfig(b, [nsconfig.IfaceConfig("nbr1", "10.250.0.2/24")], ipv6=False)])
        subprocess.run(["ip", "-n", a, "neigh", "replace", "10.250.0.4", "lladdr", "02:00:00:00:00:04", "dev", "nbr0",
                        "nud", "permanent"], check=True)  # a static peer, as cloudemu gives compute nodes
        got: list[tuple[str, str]] = []
        asked: list[list[str]] = []
        errors: list[BaseException] = []

        def in_a() -> None:  # setns acts on this thread only
            try:
                nsconfig.enter(a)

                def knock(missing: set[str]) -> None:
                    asked.append(sorted(missing))
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        for ip in missing:
                            s.sendto(b"", (ip, 9))
                started = time.monotonic()
                for found in neighbours.resolved("nbr0", {"10.250.0.2", "10.250.0.3", "10.250.0.4"}, 1.5, knock):
                    got.extend(found)
                got.append(("waited", round(time.monotonic() - started, 1)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        t = threading.Thread(target=in_a)
        t.start()
        t.join()
        assert not errors, errors
        assert got[:-1] == [("10.250.0.4", "02:00:00:00:00:04"), ("10.250.0.2", "02:00:00:aa:bb:cc")]
        assert asked == [["10.250.0.2", "10.250.0.3"]]  # the static one is read from the table, never asked for
        assert got[-1][1] >= 1.4  # the silent address held it until the timeout
    finally:
        subprocess.run(["ip", "-batch", "-"], text=True, input=f"netns del {a}\nnetns del {b}\n")


def test_a_real_agent_refuses_hostile_goal_states_and_keeps_its_node(state_dir):
    """A fuzz of hostile messages over gRPC to a live compute node: each refused, the node's links as they
    were (a port id "a\\nl d eth0" once deleted its uplink), and a legitimate port still made and reached."""
    import random

    from tests.unit.test_hostile_goal_states import hostile_neighbour, hostile_port

    name = "alcor_hostile"
    emu = Emulation(load_text(TWO_VPCS.format(name=name, engine="netns"))).up()
    try:
        targets = controller.agent_targets(emu.plan)
        ports = {p.name: p for p in controller.plan_ports(emu.plan)}
        host2 = ports["b2"].host_ip
        links_before = sorted(emu.node("cn2").cmd(["ip", "-o", "link", "show"]).split("\n"))
        names_before = {ln.split(":")[1].strip() for ln in links_before if ln}
        rng = random.Random(7)
        messages = [(hostile_port if i % 3 else hostile_neighbour)(rng, i)[0] for i in range(150)]
        pushed = controller.stream(targets[host2], messages)
        assert len(pushed) == len(messages)
        refused = [i for i, p in enumerate(pushed) if p.failed]
        assert refused == [i for i in range(150) if i % 3]  # each hostile port refused in the reply; a refused
        assert all(len(pushed[i].reply.operation_statuses) == 0 for i in range(0, 150, 3))  # neighbour has none (ACA)
        names_after = {ln.split(":")[1].strip() for ln in emu.node("cn2").cmd(["ip", "-o", "link", "show"]).split("\n") if ln}
        assert names_after == names_before
        blue = ports["b1"].vpc
        b3 = goalstates.Port("b3", blue, host2, "10.1.0.13", "fa:16:3e:00:01:03")
        (ok,) = controller.stream(targets[host2], [goalstates.per_host([b3])[host2]])
        assert ok.failed == []
        meets_as_neighbour(emu, targets[ports["b1"].host_ip], "b1", b3)
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
