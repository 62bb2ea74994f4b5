"""Hollow compute nodes beside a full one on the same switch: each serves gRPC on its own address (over
the emulated network, and from the machine over its pack's socket), answers as the full agent does, and
models the flows the full agent installs; nothing is left after down."""

import json
import subprocess
import sys
from pathlib import Path

from emulator.alcor import calibrate, controller, goalstates, hollow
from emulator.alcor.schema import common_pb2 as common
from emulator.api import Emulation
from emulator.runtime import ovsinstance
from emulator.topology.loader import load_text
from provisioners.kinds import hollow as hollow_kind
from tests import fidelity
from tests.conftest import NEEDS_ROOT_OVS, cli, leftovers

pytestmark = NEEDS_ROOT_OVS

TOPOLOGY = """version: 1
name: {name}
defaults: {{subnet: 10.94.0.0/24}}
{vpcs}
nodes:
  s1: {{kind: switch}}
  cn1: {{kind: compute}}
  cn2: {{kind: compute, agent: hollow}}
  cn3: {{kind: compute, agent: hollow}}
  cn4: {{kind: compute, agent: hollow}}
  h1: {{}}
{vms}
links:
  - endpoints: [cn1, s1]
  - endpoints: [cn2, s1]
  - endpoints: [cn3, s1]
  - endpoints: [cn4, s1]
  - endpoints: [h1, s1]
"""

#: Run inside h1: one goal state to a hollow node's address over TCP, as a controller on the fabric would.
CLIENT = """
import sys
sys.path.insert(0, {root!r})
from emulator.alcor import calibrate, controller, goalstates, hollow
vpc = goalstates.Vpc("v", 3001, "10.210.0.0/24")
port = goalstates.Port("tcp1", vpc, {ip!r}, "10.210.0.5", "fa:16:3e:30:00:05")
(pushed,) = controller.stream({ip!r} + ":50001", [goalstates.per_host([port])[{ip!r}]])
print(len(pushed.reply.operation_statuses), pushed.failed)
"""


def hollow_kind_base() -> tuple[str, ...]:
    from emulator.alcor.hollow import BASE_FLOWS
    return BASE_FLOWS


def ips(emu: Emulation) -> dict[str, str]:
    (pack,) = [n for n in emu.plan.nodes if "hollow" in n.options]
    return {name: ip.split("/")[0] for name, ip in pack.options["hollow"]["nodes"]}


def test_hollow_nodes_serve_on_their_own_addresses_and_leave_nothing(state_dir):
    name = "hollow_serve"
    vms = "  b1: {kind: vm, on: cn1, vpc: blue}\n  b4: {kind: vm, on: cn4, vpc: blue}"
    emu = Emulation(load_text(TOPOLOGY.format(name=name, vpcs="vpcs: {blue: {vni: 1001, cidr: 10.1.0.0/24}}",
                                              vms=vms))).up()
    try:
        addresses = ips(emu)
        assert set(addresses) == {"cn2", "cn3", "cn4"}
        assert not [n for n in emu.plan.nodes if n.name in addresses]  # no namespace, no veth of their own
        root = str(Path(__file__).resolve().parents[2])
        proc = emu.node("h1").run([sys.executable, "-c", CLIENT.format(root=root, ip=addresses["cn3"])], timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split()[0] == "1" and proc.stdout.strip().endswith("[]")  # the port's SUCCESS, as ACA's
        (pack,) = [n for n in emu.plan.nodes if "hollow" in n.options]
        state = hollow_kind.ask(pack, {"op": "state", "node": "cn3"})
        assert list(state["ports"]) == [goalstates.Port("tcp1", goalstates.Vpc("v", 3001, "10.210.0.0/24"),
                                                        addresses["cn3"], "10.210.0.5", "fa:16:3e:30:00:05").id]
        assert hollow_kind.ask(pack, {"op": "state", "node": "cn2"})["ports"] == {}
        shown = json.loads(cli("alcor", "state", name, "cn3", "-o", "json").stdout)
        assert shown["ports"] == state["ports"] and len(shown["flows"]) > len(hollow_kind_base())
        assert cli("alcor", "state", name, "h1", check=False).returncode == 2  # not a hollow node: said, exit 2
        (row,) = [s for s in emu.status() if s.node == pack.name]
        assert row.state == "running" and row.kind == "hollow" and "3 hollow compute nodes: 2 messages, 2 ports" in row.detail
        states = {s.node: s.state for s in emu.status()}
        assert states["b1"] == "running" and states["b4"] == "modelled"  # up programmed both through their agents
        b4 = hollow_kind.ask(pack, {"op": "state", "node": "cn4"})
        assert len(b4["ports"]) == 1 and b4["neighbours"] == 1  # b1, on the full node, is its neighbour
        load = cli("alcor", "load", name, "--vpcs", "2", "--ports-per-vpc", "8", "-o", "json", check=False)
        assert load.returncode == 0, load.stdout + load.stderr  # no VM pinged on a hollow node: it has none
        summary = json.loads(load.stdout)
        assert summary["errors"] == 0 and summary["ports"] == 16
        assert hollow_kind.ask(pack, {"op": "summary"})["ports"] >= 2 + 12  # 3 of the 4 agents are hollow
        # the full node measured, its model given to the hollow ones: they now answer (and report) as it would
        model_file = state_dir.parent / "model.json"
        model = json.loads(cli("alcor", "calibrate", name, "--repeats", "1", "--out", str(model_file), "-o",
                               "json").stdout)
        assert model["node"] == "cn1" and model["per_port_ms"] > 0 and model["applied_to"] == [pack.name]
        assert len(model["samples"]) == len(calibrate.SHAPES) and json.loads(model_file.read_text())["node"] == "cn1"
        port = goalstates.Port("timed", goalstates.Vpc("t", 3002, "10.211.0.0/24"), addresses["cn2"], "10.211.0.5",
                               "fa:16:3e:30:00:06")
        targets = controller.agent_targets(emu.plan)
        (pushed,) = controller.stream(targets[port.host_ip], [goalstates.per_host([port])[port.host_ip]],
                                      host=port.host_ip)
        assert pushed.failed == [] and pushed.agent_us == int(hollow.DelayModel.from_dict(model).seconds(1, 0) * 1e6)
        assert json.loads(cli("alcor", "delays", name, "off", "-o", "json").stdout)["applied_to"] == [pack.name]
        assert hollow_kind.ask(pack, {"op": "summary"})["delays"] is None
        assert cli("alcor", "delays", name, str(state_dir / "none.json"), check=False).returncode == 2
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
    assert not Path(f"/run/cloudemu/{name}").exists()


def normalized(dump: str) -> list[str]:
    """dump-flows without what differs between two switches holding the same table: counters, ages, cookies."""
    out = []
    for line in dump.splitlines():
        fields = [f for f in line.strip().replace(", ", ",").split(",")
                  if f and not f.startswith(("cookie=", "duration=", "n_packets=", "n_bytes=", "idle_age=", "hard_age="))]
        if fields and not line.startswith("NXST_FLOW"):
            out.append(",".join(fields))
    return sorted(out)


def test_a_hollow_node_answers_and_models_flows_as_the_full_node_does(state_dir):
    """The same 240 goal states to a full and a hollow node: the same status per resource, and the hollow
    node's modelled br-tun equals the full node's (both read back through OVS, counters and cookies aside)."""
    name = "hollow_fidelity"
    emu = Emulation(load_text(TOPOLOGY.format(name=name, vpcs="", vms=""))).up()
    try:
        addresses = ips(emu)
        full_ip = emu.node("cn1").ip.split("/")[0]
        targets = controller.agent_targets(emu.plan)
        messages = fidelity.sequence([addresses["cn3"], addresses["cn4"]])
        full = controller.stream(targets[full_ip], messages, host=full_ip)
        hollow = controller.stream(targets[addresses["cn2"]], messages, host=addresses["cn2"])
        assert len(full) == len(hollow) == 240
        differ = [(i, fidelity.statuses(f.reply), fidelity.statuses(h.reply))
                  for i, (f, h) in enumerate(zip(full, hollow, strict=True))
                  if fidelity.statuses(f.reply) != fidelity.statuses(h.reply)]
        assert differ == []
        outcomes = {s.operation_status for p in full for s in p.reply.operation_statuses}
        assert {common.SUCCESS, common.INVALID_ARG} <= outcomes
        (pack,) = [n for n in emu.plan.nodes if "hollow" in n.options]
        modelled = hollow_kind.ask(pack, {"op": "state", "node": "cn2"})["flows"]
        ovs = ovsinstance.env(Path(emu.node("cn1").plan_node.options["compute"]["dir"]) / "ovs")
        env = {**__import__("os").environ, **ovs}

        def ofctl(*argv, text=None):
            return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *argv], input=text, capture_output=True, text=True,
                                  env=env, check=True).stdout
        subprocess.run(["ovs-vsctl", "add-br", "br-model", "--", "set", "Bridge", "br-model", "datapath_type=netdev",
                        "fail_mode=secure"], env=env, check=True)
        ofctl("add-flows", "br-model", "-", text="\n".join(modelled) + "\n")
        full_flows, model_flows = normalized(ofctl("dump-flows", "br-tun")), normalized(ofctl("dump-flows", "br-model"))
        assert len(full_flows) > 20
        assert model_flows == full_flows
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_a_killed_up_of_hollow_nodes_is_swept_by_down(state_dir, tmp_path):
    """up killed with -9 once the packs serve: down (journal or markers) removes their namespaces and processes."""
    name = "hollow_kill"
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY.format(name=name, vpcs="", vms=""))
    up = subprocess.Popen([sys.executable, "-m", "emulator", "up", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    sock = Path(f"/run/cloudemu/{name}/hollow-0.0/control.sock")
    import time
    deadline = time.monotonic() + 120
    while not sock.exists() and time.monotonic() < deadline and up.poll() is None:
        time.sleep(0.05)
    up.kill()
    up.wait()
    down = subprocess.run([sys.executable, "-m", "emulator", "down", name, "-o", "json"], capture_output=True, text=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert json.loads(down.stdout)[0]["left"] == []
    assert leftovers(name) == {} and not Path(f"/run/cloudemu/{name}").exists()
    pids = subprocess.run(["pgrep", "-f", f"emulator.alcor.hollow --dir /run/cloudemu/{name}/"], capture_output=True,
                          text=True).stdout.split()
    assert pids == []
