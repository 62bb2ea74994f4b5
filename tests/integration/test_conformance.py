"""One suite, every engine: the same topologies and the same checks on netns, Docker and LXD.

Hosts run as the engine says (a namespace, a container); switches are OVS bridges
either way. Each case checks: all pairs ping, `exec` runs inside the node,
`status` is right, shaped bandwidth is within 10%, and `down` leaves nothing.
"""

import time

import pytest

from emulator import Emulation, load_text
from tests.conftest import NEEDS_ROOT_OVS, ROOT, http_text_when_up, leftovers, shaped_rate

pytestmark = NEEDS_ROOT_OVS
ENGINES = ["netns", "docker", "lxd"]

TOPOLOGIES = {
    "smoke": "nodes:\n  s1: {kind: switch}\n  h1: {}\n  h2: {}\n  h3: {}\n"
             "links:\n  - endpoints: [h1, s1]\n  - endpoints: [h2, s1]\n  - endpoints: [h3, s1]\n",
    "linear10": "topology: {generator: linear, switches: 10}\n",
    "fattree4": "topology: {generator: fattree, k: 4}\n",
}


def bring_up(name: str, body: str, engine: str, subnet: str = "10.77.0.0/24") -> Emulation:
    text = f"version: 1\nname: {name}\ndefaults: {{provisioner: {engine}, subnet: {subnet}}}\n{body}"
    return Emulation(load_text(text)).up()


def assert_runs_on(emu: Emulation, engine: str) -> None:
    for host in emu.hosts():
        hostname = host.cmd(["cat", "/proc/sys/kernel/hostname"]).strip()
        if engine == "docker":  # inside the container: its own UTS namespace
            assert hostname == host.name
        elif engine == "lxd":  # LXD names the instance's host after the instance (ce-<tag>-<node>)
            assert hostname.startswith("ce-") and hostname.endswith(f"-{host.name}".replace("_", "-"))
        assert host.ip.split("/")[0] in host.cmd(["ip", "-4", "-o", "addr", "show", "eth0"])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_topology_on_engine(state_dir, engine, topology):
    name = f"cf_{topology}_{engine}"
    emu = bring_up(name, TOPOLOGIES[topology], engine)
    try:
        states = {s.node: s.state for s in emu.status()}
        assert set(states) == {n.name for n in emu.plan.nodes} and set(states.values()) == {"running"}
        assert emu.pingall(wait=30).failed == []
        assert_runs_on(emu, engine)
    finally:
        result = emu.down()
    assert result.clean, result.left
    assert leftovers(name) == {}


@pytest.mark.parametrize("engine", ENGINES)
def test_bandwidth_on_engine(state_dir, engine):
    body = ("nodes:\n  s1: {kind: switch}\n  h1: {}\n  h2: {}\n"
            "links:\n  - {endpoints: [h1, s1], bw: 30}\n  - {endpoints: [h2, s1], bw: 30}\n")
    name = f"cf_bw_{engine}"
    emu = bring_up(name, body, engine, subnet="10.78.0.0/24")
    try:
        assert emu.pingall(wait=10).failed == []
        mbps = shaped_rate(emu, "h1", "h2", 30)
        assert 27 <= mbps <= 33, mbps
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_mixed_engines_and_command_after_links(state_dir):
    """A Docker node's command starts once its link is up: it can reach a netns neighbour right away."""
    body = ("nodes:\n  s1: {kind: switch}\n  ns1: {}\n"
            "  box: {provisioner: docker, command: 'ping -c1 -W5 10.79.0.1 > /tmp/first-ping 2>&1'}\n"
            "links:\n  - endpoints: [ns1, s1]\n  - endpoints: [box, s1]\n")
    name = "cf_mixed"
    emu = bring_up(name, body, "netns", subnet="10.79.0.0/24")
    try:
        assert emu.plan.provisioner == "docker"
        assert emu.node("ns1").ip == "10.79.0.1"
        out = ""
        for _ in range(50):
            out = emu.node("box").run(["cat", "/tmp/first-ping"]).stdout
            if "received" in out:
                break
            time.sleep(0.2)
        assert "1 received" in out, out
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_missing_image_creates_nothing(state_dir):
    body = "nodes:\n  h1: {provisioner: docker, image: 'nosuch/image:0'}\n"
    from provisioners import PreflightError

    with pytest.raises(PreflightError, match="image nosuch/image:0 is not in the Docker engine"):
        bring_up("cf_noimage", body, "netns")
    assert leftovers("cf_noimage") == {}


@pytest.mark.parametrize("engine", ENGINES)
def test_published_port_on_engine(state_dir, engine):
    """`ports` publishes a node's TCP port on the machine; `down` ends the forwarder."""
    from provisioners import portforward

    server = ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"]
    command = "" if engine == "netns" else f", command: '{' '.join(server)}'"
    body = f"nodes:\n  h1: {{ports: ['18080:8000']{command}}}\n"
    name = f"cf_port_{engine}"
    emu = bring_up(name, body, engine, subnet="10.80.0.0/24")
    background = emu.node("h1").popen(server) if engine == "netns" else None
    try:
        assert len(portforward.pids_of(name)) == 1
        assert "Directory listing" in http_text_when_up("http://127.0.0.1:18080/")
    finally:
        if background:
            background.kill()
            background.wait()
        result = emu.down()
    assert result.clean and leftovers(name) == {}
    assert portforward.pids_of(name) == []


def test_published_port_listens_on_this_machine_only_caps_connections_and_logs(state_dir):
    """By default a published port is on 127.0.0.1, not on the machine's network; a flood of connections is
    capped, and what the forwarder refuses is in its log."""
    import json as jsonlib
    import socket
    import subprocess
    import sys
    import time

    from provisioners import portforward

    name = "cf_port_safe"
    emu = bring_up(name, "nodes:\n  h1: {ports: ['18081:8000']}\n", "netns", subnet="10.81.0.0/24")
    server = emu.node("h1").popen(["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    capped = None
    try:
        assert "Directory listing" in http_text_when_up("http://127.0.0.1:18081/")
        listening = subprocess.run(["ss", "-Hltn", "sport = :18081"], capture_output=True, text=True).stdout
        assert "127.0.0.1:18081" in listening and "0.0.0.0:18081" not in listening, listening
        own = [a["local"] for link in jsonlib.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                                                     text=True).stdout)
               for a in link.get("addr_info", []) if not a["local"].startswith("127.")]
        for address in own:  # the machine's own addresses: the traffic stays on this machine
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((address, 18081)) != 0, address
        log = portforward.log_dir(name) / "18082.log"
        netns = emu.plan.node("h1").netns
        capped = subprocess.Popen([sys.executable, "-m", portforward.MODULE, f"--experiment={name}", f"--netns={netns}",
                                   "--listen=18082", "--connect=8000", "--max-connections=2", f"--log={log}"],
                                  cwd=ROOT)
        held = []
        for _ in range(100):  # listening (seen without connecting: a probe would hold one of the two)
            if ":18082" in subprocess.run(["ss", "-Hltn", "sport = :18082"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", 18082), timeout=5))
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", 18082), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once: two are open already
        extra.close()
        for sock in held:
            sock.close()
        assert "refused" in log.read_text()
    finally:
        if capped is not None:
            capped.kill()
            capped.wait()
        server.kill()
        server.wait()
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_docker_and_lxd_in_one_topology(state_dir):
    """Hosts of both container engines and a plain namespace on one switch: all pairs ping, down leaves nothing."""
    body = ("nodes:\n  s1: {kind: switch}\n  ns1: {}\n  dk: {provisioner: docker}\n  lx: {provisioner: lxd}\n"
            "links:\n  - endpoints: [ns1, s1]\n  - endpoints: [dk, s1]\n  - endpoints: [lx, s1]\n")
    name = "cf_docker_lxd"
    emu = bring_up(name, body, "netns", subnet="10.81.0.0/24")
    try:
        assert emu.plan.provisioner == "mixed"
        assert emu.pingall(wait=10).failed == []
        assert emu.node("dk").cmd(["cat", "/proc/sys/kernel/hostname"]).strip() == "dk"
        assert emu.node("lx").cmd(["cat", "/proc/sys/kernel/hostname"]).strip().endswith("-lx")
        assert {s.node: s.state for s in emu.status()} == {"s1": "running", "ns1": "running", "dk": "running",
                                                            "lx": "running"}
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
