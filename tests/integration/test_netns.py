"""Real namespaces, veth and Open vSwitch: bring topologies up, use them, and check nothing is left."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator import Emulation, load_file, load_text
from tests.conftest import CLI, NEEDS_ROOT_OVS, ROOT, cli, leftovers, shaped_rate

pytestmark = NEEDS_ROOT_OVS


def test_smoke_up_use_down(state_dir):
    emu = Emulation(load_file(ROOT / "topologies" / "smoke.yaml")).up()
    try:
        assert {s.node: s.state for s in emu.status()} == {"s1": "running", "h1": "running", "h2": "running"}
        assert "1 received" in emu.node("h1").cmd("ping -c1 -W2 10.0.0.2")
        assert "10.0.0.2/24" in emu.node("h2").cmd(["ip", "-4", "addr", "show", "eth0"])
        assert emu.pingall(wait=10).failed == []
        assert leftovers("smoke")  # sanity: the marks we look for are there while it runs
    finally:
        res = emu.down()
    assert res.clean and leftovers("smoke") == {}
    assert not (state_dir / "experiments" / "smoke").exists()


def test_cli_run_passes_with_junit(state_dir, tmp_path):
    junit = tmp_path / "smoke.xml"
    proc = cli("run", "topologies/smoke.yaml", "--junit", str(junit), "-o", "json")
    result = json.loads(proc.stdout)
    assert result["passed"] is True
    assert [r["name"] for r in result["results"]][:2] == ["up", "pingall"]
    assert 'failures="0"' in junit.read_text()
    assert leftovers("smoke") == {}


def test_cli_run_fails_on_failing_check(state_dir, tmp_path):
    topo = tmp_path / "failing.yaml"
    topo.write_text("version: 1\nname: failing\nnodes: {s1: {kind: switch}, h1: {}, h2: {}}\n"
                    "links: [{endpoints: [h1, s1]}, {endpoints: [h2, s1]}]\n"
                    "checks:\n  - exec: {node: h1, cmd: 'false'}\n")
    junit = tmp_path / "f.xml"
    proc = cli("run", str(topo), "--junit", str(junit), check=False)
    assert proc.returncode == 1
    assert 'failures="1"' in junit.read_text()
    assert leftovers("failing") == {}


def test_loopy_topologies_converge_and_linux_bridge(state_dir):
    for text in ("version: 1\nname: ft\ntopology: {generator: fattree, k: 4}\n",
                 "version: 1\nname: lin\ntopology: {generator: linear, switches: 10}\n"):
        emu = Emulation(load_text(text)).up()
        try:
            res = emu.pingall(wait=30)
            assert res.failed == [], res.failed
            assert res.pairs == len(emu.hosts()) * (len(emu.hosts()) - 1)
        finally:
            assert emu.down().clean
    emu = Emulation(load_file(ROOT / "topologies" / "bridged.yaml")).up()
    try:
        assert emu.pingall(wait=10).failed == []
        end = emu.plan.links[2].a  # on its owner's side: a switch's ports live in the switches' namespace
        assert "mtu 1400" in emu.node(end.node).cmd(["ip", "link", "show", end.dev])
    finally:
        assert emu.down().clean
    assert leftovers("bridged") == {}


@pytest.mark.parametrize("bw", [20, 50])
def test_bandwidth_shaping_within_ten_percent(state_dir, bw):
    topo = load_text(f"version: 1\nname: bw{bw}\nnodes: {{s1: {{kind: switch}}, h1: {{}}, h2: {{}}}}\n"
                     f"links: [{{endpoints: [h1, s1], bw: {bw}}}, {{endpoints: [h2, s1], bw: {bw}}}]\n")
    with Emulation(topo) as emu:
        mbps = shaped_rate(emu, "h1", "h2", bw)
    assert abs(mbps - bw) / bw <= 0.10, f"measured {mbps:.1f} Mbit/s for bw={bw}"
    assert leftovers(f"bw{bw}") == {}


def test_two_experiments_do_not_collide(state_dir):
    a = Emulation(load_file(ROOT / "topologies" / "smoke.yaml"), name="alpha").up()
    b = Emulation(load_file(ROOT / "topologies" / "smoke.yaml"), name="alps").up()
    try:
        assert a.plan.tag != b.plan.tag
        assert a.pingall(wait=5).failed == [] and b.pingall(wait=5).failed == []
        assert a.down().clean
        assert leftovers("alpha") == {}
        assert all(s.state == "running" for s in b.status())  # alps untouched by alpha's down
    finally:
        b.down()
    assert leftovers("alps") == {}


def test_same_name_twice_is_refused(state_dir):
    emu = Emulation(load_file(ROOT / "topologies" / "smoke.yaml")).up()
    try:
        proc = cli("up", "topologies/smoke.yaml", check=False)
        assert proc.returncode == 2 and "already up" in proc.stderr
    finally:
        emu.down()


def test_bad_input_exit_2_creates_nothing(state_dir, tmp_path):
    before = set(os.listdir("/sys/class/net")), set(os.listdir("/run/netns") if Path("/run/netns").exists() else [])
    delay = tmp_path / "delay.yaml"
    delay.write_text("version: 1\nname: delayed\nnodes: {s1: {kind: switch}, h1: {}}\n"
                     "links: [{endpoints: [h1, s1], delay: 5ms}]\n")
    overlap = tmp_path / "overlap.yaml"
    overlap.write_text("version: 1\nname: overlap\nnodes: {h1: {ip: 192.0.2.7/24}}\n")
    for path, text in ((delay, "netem"), (overlap, "overlaps the machine's route"),
                       (ROOT / "tests/golden/errors/unknown_link_node.yaml", "unknown node 'h9'")):
        proc = cli("up", str(path), check=False)
        assert proc.returncode == 2, proc.stderr
        assert text in proc.stderr
    after = set(os.listdir("/sys/class/net")), set(os.listdir("/run/netns") if Path("/run/netns").exists() else [])
    assert after == before
    assert not list((state_dir / "experiments").glob("*")) if (state_dir / "experiments").exists() else True


def test_down_after_up_killed_half_way(state_dir, tmp_path):
    """SIGKILL `up` in the middle of creating 300 hosts; `down` must still remove everything."""
    topo = tmp_path / "big.yaml"
    topo.write_text("version: 1\nname: killed\ntopology: {generator: linear, switches: 30, hosts_per_switch: 10}\n")
    proc = subprocess.Popen([*CLI, "up", str(topo), "-o", "json"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not leftovers("killed").get("netns"):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    made = leftovers("killed")
    assert made, "the kill came too late or too early to test anything"
    assert cli("status", "-o", "json").stdout.count('"killed"') == 1
    cli("down", "killed")
    assert leftovers("killed") == {}
    assert cli("down", "killed").returncode == 0  # idempotent


def test_exec_and_status_cli(state_dir):
    cli("up", "topologies/smoke.yaml", "-o", "json")
    try:
        proc = cli("exec", "smoke", "h1", "--", "ping", "-c1", "-W2", "10.0.0.2")
        assert "1 received" in proc.stdout
        states = json.loads(cli("status", "smoke", "-o", "json").stdout)
        assert {s["node"]: s["state"] for s in states} == {"s1": "running", "h1": "running", "h2": "running"}
        ping = json.loads(cli("pingall", "smoke", "--wait", "5", "-o", "json").stdout)
        assert ping["loss_percent"] == 0 and ping["pairs"] == 2
    finally:
        cli("down", "--all")
    assert leftovers("smoke") == {}


@pytest.mark.parametrize("mode", ["private", "system"])
def test_switches_in_their_own_ovs_or_the_machines(state_dir, monkeypatch, mode):
    """Private (the default without the kernel module): the experiment's own daemons in a namespace
    of their own, reached through the switch node; system: the machine's OVS, as Mininet does."""
    monkeypatch.setenv("CLOUDEMU_OVS", mode)
    name = f"ovs{mode[:3]}"
    emu = Emulation(load_file(ROOT / "topologies" / "smoke.yaml"), name=name).up()
    try:
        bridge = emu.plan.node("s1").device
        machine_bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout.split()
        assert (bridge in machine_bridges) == (mode == "system")
        assert len(emu.node("s1").cmd(["ovs-vsctl", "list-ports", bridge]).split()) == 2
        assert "actions=NORMAL" in emu.node("s1").cmd(["ovs-ofctl", "dump-flows", bridge])
        ports_in_root = [e.dev for link in emu.plan.links for e in (link.a, link.b)
                         if e.node == "s1" and Path("/sys/class/net", e.dev).exists()]
        daemons = leftovers(name).get("processes", [])
        if mode == "private":
            assert ports_in_root == [] and len(daemons) == 2
        else:
            assert len(ports_in_root) == 2 and daemons == []
        assert emu.pingall(wait=10).failed == []
    finally:
        assert emu.down().clean
    assert leftovers(name) == {}


def test_a_namespace_without_ipv6_gets_no_address_while_its_peer_gets_a_link_local_one():
    """ipv6=False turns address generation off over netlink before the link comes up (no sysctl): the
    link sends no router solicitation or MLD report, and has no IPv6 address at all."""
    from provisioners import nsconfig

    quiet, chatty = "ce-test-v6-quiet", "ce-test-v6-chatty"
    subprocess.run(["ip", "-batch", "-"], check=True, text=True, input=(
        f"netns add {quiet}\nnetns add {chatty}\nlink add v6q netns {quiet} type veth peer name v6c netns {chatty}\n"))
    try:
        nsconfig.configure([nsconfig.NamespaceConfig(quiet, [nsconfig.IfaceConfig("v6q", "10.251.0.1/24")], ipv6=False),
                            nsconfig.NamespaceConfig(chatty, [nsconfig.IfaceConfig("v6c", "10.251.0.2/24")])])

        def inet6(ns: str, dev: str) -> list[str]:
            out = json.loads(subprocess.run(["ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev],
                                            capture_output=True, text=True, check=True).stdout)
            return [a["local"] for link in out for a in link.get("addr_info", [])]
        deadline = time.monotonic() + 5
        while not inet6(chatty, "v6c") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [a for a in inet6(chatty, "v6c") if a.startswith("fe80:")]  # the link is up, with carrier
        assert inet6(quiet, "v6q") == []
        ping = subprocess.run(["ip", "netns", "exec", quiet, "ping", "-c", "1", "-W", "2", "10.251.0.2"],
                              capture_output=True)
        assert ping.returncode == 0  # IPv4 unaffected
    finally:
        subprocess.run(["ip", "-batch", "-"], text=True, input=f"netns del {quiet}\nnetns del {chatty}\n")


def test_ip_batches_stay_within_the_open_files_limit():
    """Under an open-files limit of 300, one `ip -batch` naming 800 namespaces fails ("Invalid netns value");
    the executor's batches do not, and every veth is made."""
    import resource

    limit = 300
    script = f"""
import resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from emulator.runtime.executor import LocalExecutor
names = [f"ce.fdlimit.h{{i}}" for i in range(400)]
lines = [f"link add eth0 netns {{n}} type veth peer name p{{i}} netns ce.fdlimit.sw" for i, n in enumerate(names)]
ex = LocalExecutor()
ex.ip_batch([f"netns add {{n}}" for n in names + ["ce.fdlimit.sw"]])
plain = subprocess.run(["ip", "-batch", "-"], input="\\n".join(lines) + "\\n", capture_output=True, text=True)
print("plain", plain.returncode, plain.stderr.strip().splitlines()[-1:] if plain.stderr else "")
everything = names + ["ce.fdlimit.sw"]
ex.ip_batch([f"netns del {{n}}" for n in everything], force=True)  # what the plain batch made before failing
ex.ip_batch([f"netns add {{n}}" for n in everything])
ex.ip_batch(lines)
made = subprocess.run(["ip", "-n", "ce.fdlimit.sw", "-o", "link"], capture_output=True, text=True).stdout
print("made", len(made.splitlines()))
"""
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        plain, made = proc.stdout.splitlines()
        assert not plain.startswith("plain 0"), plain  # the limit bites a single batch
        assert made == "made 401", made  # 400 veth ends and lo
    finally:
        names = [n for n in os.listdir("/run/netns") if n.startswith("ce.fdlimit.")]
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), text=True)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > limit  # the test's own limit untouched


def test_a_looped_fabric_spread_over_several_ovs_instances_converges_and_each_switch_answers(state_dir, monkeypatch):
    """With at most 4 ports per ovs-vswitchd, a fat-tree k=4 (20 switches, 4 ports each) runs in 20 instances, its
    switch-to-switch links veths between their namespaces: STP still converges, pingall passes, every switch
    answers ovs-vsctl and ovs-ofctl through its own daemon, and down leaves nothing."""
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "4")
    name = "ftshard"
    emu = Emulation(load_text(f"version: 1\nname: {name}\ntopology: {{generator: fattree, k: 4}}\n")).up()
    try:
        daemons = leftovers(name).get("processes", [])
        assert len(daemons) == 2 * 20  # an ovsdb-server and an ovs-vswitchd per instance
        for switch in ("c1", "e8"):
            bridge = emu.plan.node(switch).device
            assert emu.node(switch).cmd(["ovs-vsctl", "list-br"]).split() == [bridge]  # its own daemon holds it alone
            assert "actions=NORMAL" in emu.node(switch).cmd(["ovs-ofctl", "dump-flows", bridge])
        assert emu.pingall(wait=60).failed == []
    finally:
        assert emu.down().clean
    assert leftovers(name) == {}


def test_pingall_past_a_hundred_hosts_samples_two_pairs_per_host_and_still_finds_a_dead_one(state_dir):
    """150 hosts: 300 pairs sampled from 22,350, pinged from this process in one go; every pair on request; a host
    whose link is down shows in both, as a sender and as a destination."""
    name = "pingmany"
    emu = Emulation(load_text(f"version: 1\nname: {name}\n"
                              "topology: {generator: linear, switches: 3, hosts_per_switch: 50}\n")).up()
    try:
        sampled = emu.pingall(wait=5)
        assert (sampled.pairs, sampled.of_pairs, sampled.failed) == (300, 150 * 149, [])
        every = emu.pingall(every_pair=True)
        assert (every.pairs, every.of_pairs, every.failed) == (150 * 149, 0, [])
        emu.node("h77").run(["ip", "link", "set", "eth0", "down"])
        dead = emu.pingall()
        assert all("h77" in p for p in dead.failed)
        assert sum(p[0] == "h77" for p in dead.failed) == 2 and sum(p[1] == "h77" for p in dead.failed) >= 1
    finally:
        assert emu.down().clean
    assert leftovers(name) == {}


def test_a_chain_of_switches_sharing_instances_links_them_with_patch_ports(state_dir, monkeypatch):
    """Two switches of 3 ports per ovs-vswitchd: each pair's link is a patch-port pair inside its instance, the
    links between instances veths; the chain passes pingall, the patch ports show in ovs-vsctl, and down leaves
    nothing (the patch ports went with their daemon)."""
    monkeypatch.setenv("CLOUDEMU_OVS_PORTS", "6")
    name = "patched"
    emu = Emulation(load_text(f"version: 1\nname: {name}\ntopology: {{generator: linear, switches: 6, "
                              "hosts_per_switch: 1}\n")).up()
    try:
        assert len(leftovers(name).get("processes", [])) == 2 * 3
        switches = {n.name for n in emu.plan.nodes if n.kind == "switch"}
        types = {(link.a.node, link.b.node): emu.node(link.a.node).cmd(
                     ["ovs-vsctl", "get", "Interface", link.a.dev, "type"]).strip()
                 for link in emu.plan.links if {link.a.node, link.b.node} <= switches}
        assert types == {("s1", "s2"): "patch", ("s2", "s3"): '""', ("s3", "s4"): "patch", ("s4", "s5"): '""',
                         ("s5", "s6"): "patch"}
        link = next(lk for lk in emu.plan.links if (lk.a.node, lk.b.node) == ("s1", "s2"))
        assert not Path("/sys/class/net", link.a.dev).exists()
        assert f"options: {{peer={link.b.dev}}}" in emu.node("s1").cmd(["ovs-vsctl", "show"])
        assert emu.pingall(wait=20).failed == []
    finally:
        assert emu.down().clean
    assert leftovers(name) == {}
