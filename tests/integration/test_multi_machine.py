"""Many machines, for real: a 3-machine testbed (namespaces with their own sshd and OVS) on this host.

A fat-tree placed by METIS across the three, all pairs ping through VXLAN tunnels,
iperf3 across a tunnel, a machine taken away mid-`up`, and `down` leaves nothing
on any machine.
"""

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from emulator import Emulation, load_text
from emulator.checks import iperf
from emulator.runtime import distributed
from emulator.runtime.journal import Journal
from emulator.topology.cluster import load_cluster, load_cluster_text
from tests.conftest import NEEDS_ROOT_OVS, ROOT, cli
from tests.testbed import MACHINES, machine_leftovers, running_testbed, testbed

pytestmark = NEEDS_ROOT_OVS
FATTREE = "version: 1\nname: {name}\ndefaults: {{subnet: 10.78.0.0/24}}\ntopology: {{generator: fattree, k: 4}}\n"


@pytest.fixture(scope="module")
def cluster_file(tmp_path_factory):
    with running_testbed(tmp_path_factory.mktemp("testbed") / "cluster.yaml") as out:
        yield out


def test_doctor_passes_on_every_machine(cluster_file):
    rows = distributed.doctor(load_cluster(cluster_file))
    assert [r["machine"] for r in rows] == MACHINES
    assert all(r["ok"] for r in rows), rows
    assert {r["datapath"] for r in rows} <= {"userspace", "kernel"}


def test_fattree_across_three_machines(state_dir, cluster_file):
    name = "mm_fattree"
    emu = Emulation(load_text(FATTREE.format(name=name)), cluster=load_cluster(cluster_file)).up()
    try:
        placed = {n.machine for n in emu.plan.nodes}
        assert placed == set(MACHINES)  # METIS spread the 36 nodes over all three
        assert emu.plan.tunnels and all(t.vni > 0 for t in emu.plan.tunnels)
        assert emu.pingall(wait=40).failed == []
        states = emu.status()
        assert len(states) == 36 and {s.state for s in states} == {"running"}
        # a host pair on different machines talks through a VXLAN tunnel
        hosts = emu.hosts()
        a = hosts[0]
        b = next(h for h in hosts if h.plan_node.machine != a.plan_node.machine)
        mbps = iperf(emu, a.name, b.name, seconds=2)
        assert mbps > 10, mbps
        # one round trip count per machine, not per node: connect, facts, preflight, up (+ first-time upload)
        assert max(emu.deployment.round_trips.values()) <= 8, emu.deployment.round_trips
        assert machine_leftovers(name)  # things exist before down
    finally:
        result = emu.down()
    assert result.clean, result.left
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()


def test_up_twice_is_refused(state_dir, cluster_file):
    name = "mm_twice"
    topo = load_text(FATTREE.format(name=name))
    emu = Emulation(topo, cluster=load_cluster(cluster_file)).up()
    try:
        with pytest.raises(Exception, match="already up"):
            Emulation(topo, cluster=load_cluster(cluster_file)).up()
    finally:
        assert emu.down().clean
    assert machine_leftovers(name) == {}


def test_unreachable_machine_creates_nothing_anywhere(state_dir, cluster_file):
    name = "mm_unreachable"
    testbed.stop_ssh("m2")
    try:
        with pytest.raises(distributed.ClusterError, match="m2") as info:
            Emulation(load_text(FATTREE.format(name=name)), cluster=load_cluster(cluster_file)).up()
        assert "nothing was created" in str(info.value)
    finally:
        testbed.start_ssh("m2")
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()


def test_machine_dropping_mid_up_then_down_cleans_everywhere(state_dir, cluster_file):
    name = "mm_drop"
    journal_on_m3 = Path(testbed.machine_env("m3")["CLOUDEMU_STATE_DIR"]) / "experiments" / name / "journal.sqlite"

    def drop_m3_once_it_starts() -> None:
        def watch() -> None:
            deadline = time.monotonic() + 30
            while not journal_on_m3.exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            testbed.stop_ssh("m3")
        threading.Thread(target=watch, daemon=True).start()

    topo = load_text(FATTREE.format(name=name))
    try:
        with pytest.raises(distributed.ClusterError) as info:
            distributed.deploy_cluster(topo, load_cluster(cluster_file), after_preflight=drop_m3_once_it_starts)
        assert "m3" in str(info.value)
        assert info.value.report["left_on"] == ["m3"]  # the others were cleaned at once
        assert set(machine_leftovers(name)) == {"m3"}
        assert journal_on_m3.exists()  # m3 had begun making its shard when it dropped
        import sqlite3

        with sqlite3.connect(journal_on_m3) as db:
            made_on_m3 = {row[0] for row in db.execute("SELECT name FROM resources WHERE kind = 'netns' AND state = 'created'")}
        # what m3 made is still there: the others cleaned up only their own (each machine has its own /run/netns)
        assert made_on_m3 <= set(testbed.machine_namespaces("m3")), made_on_m3 - set(testbed.machine_namespaces("m3"))
        meta = Journal(name).meta()
        assert meta["status"] == "partial"
        again = distributed.destroy_cluster(name)  # still away: down says so and remembers it
        assert [r.machine for r in again.left] == ["m3"] and Journal(name).exists()
    finally:
        testbed.start_ssh("m3")
    result = distributed.destroy_cluster(name)
    assert result.clean, result.left
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()


def test_unknown_host_key_is_refused(state_dir, cluster_file, tmp_path):
    text = Path(cluster_file).read_text()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cluster = load_cluster_text(text.replace(f"known_hosts: {testbed.ROOT / 'known_hosts'}", f"known_hosts: {empty}"))
    rows = distributed.doctor(cluster)
    assert not any(r["ok"] for r in rows)
    assert all("not in" in r["problems"][0] and "--accept-new-host-keys" in r["problems"][0] for r in rows)
    accepted = distributed.doctor(cluster, accept_new=True)
    assert all(r["ok"] for r in accepted)
    assert len(empty.read_text().splitlines()) == 3  # recorded on first use


def test_cli_run_across_machines_with_junit(state_dir, cluster_file, tmp_path):
    """The CI user's flow: one command, an exit code and a JUnit file."""
    topo = tmp_path / "lin.yaml"
    topo.write_text("version: 1\nname: mm_cli\ndefaults: {subnet: 10.79.0.0/24}\n"
                    "topology: {generator: linear, switches: 6, hosts_per_switch: 2}\n")
    junit = tmp_path / "report.xml"
    proc = subprocess.run([str(ROOT / ".venv/bin/cloudemu"), "run", str(topo), "--cluster", str(cluster_file),
                           "--junit", str(junit), "-o", "json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and [r["name"] for r in report["results"]] == ["up", "pingall", "down"]
    assert 'failures="0"' in junit.read_text()
    assert machine_leftovers("mm_cli") == {}
    doctor = subprocess.run([str(ROOT / ".venv/bin/cloudemu"), "doctor", "--cluster", str(cluster_file), "-o", "json"],
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 0 and len(json.loads(doctor.stdout)) == 3


@pytest.mark.parametrize("engine", ["netns", "docker"])
def test_compute_nodes_across_machines_take_goal_states_through_their_workers(cluster_file, engine):
    """3 compute nodes pinned to 2 machines, 2 VPCs: VMs meet across machines (VXLAN inside the tunnels), the two
    subnets of one are routed across machines (DVR), VPCs stay apart, goal states go out as one worker request per
    machine; down leaves nothing anywhere. On Docker the testbed machines share this host's Docker engine; each
    compute node is a container wired into its machine."""
    from tests.conftest import leftovers

    name = f"mm_alcor_{engine}"
    body = (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.204.0.0/24}}\n"
            "vpcs: {blue: {vni: 3001, subnets: {a: 10.1.0.0/24, b: 10.1.1.0/24}, router: true},\n"
            "       red: {vni: 3002, cidr: 10.1.0.0/24}}\n"
            "nodes:\n  tor1: {kind: switch, machine: m1}\n  tor2: {kind: switch, machine: m2}\n"
            f"  cn1: {{kind: compute, machine: m1, provisioner: {engine}}}\n"
            f"  cn2: {{kind: compute, machine: m1, provisioner: {engine}}}\n"
            f"  cn3: {{kind: compute, machine: m2, provisioner: {engine}}}\n"
            "  b1: {kind: vm, on: cn1, vpc: blue, ip: 10.1.0.11/24}\n  b3: {kind: vm, on: cn3, vpc: blue, ip: 10.1.0.13/24}\n"
            "  r2: {kind: vm, on: cn2, vpc: red, ip: 10.1.0.22/24}\n  r3: {kind: vm, on: cn3, vpc: red, ip: 10.1.0.23/24}\n"
            "  b4: {kind: vm, on: cn3, vpc: blue, ip: 10.1.1.14/24}\n"
            "links:\n  - endpoints: [tor1, tor2]\n  - endpoints: [cn1, tor1]\n  - endpoints: [cn2, tor1]\n"
            "  - endpoints: [cn3, tor2]\n")
    emu = Emulation(load_text(body), cluster=load_cluster(cluster_file))
    emu.up()
    try:
        assert {n.machine for n in emu.plan.nodes if "compute" in n.options} == {"m1", "m2"}
        assert emu.plan.tunnels, "tor1-tor2 crosses machines"

        def reaches(src: str, ip: str, tries: int = 3) -> bool:
            return any(emu.node(src).run(["ping", "-c", "1", "-W", "1", ip]).returncode == 0 for _ in range(tries))
        assert reaches("b1", "10.1.0.13") and reaches("r2", "10.1.0.23")  # across machines
        assert reaches("b1", "10.1.1.14") and reaches("b4", "10.1.0.11")  # routed between subnets, across machines
        assert not reaches("r2", "10.1.1.14", tries=1)
        assert not reaches("b1", "10.1.0.23", tries=1) and not reaches("r3", "10.1.0.11", tries=1)  # other VPC
        states = {s.node: s.state for s in emu.status()}
        assert [states[v] for v in ("b1", "b3", "r2", "r3", "b4")] == ["running"] * 5
    finally:
        result = emu.down()
    assert result.clean, result.left
    assert machine_leftovers(name) == {} and leftovers(name) == {}


def test_a_hollow_region_across_machines_has_packs_on_each_and_leaves_nothing(state_dir, cluster_file):
    """A region of 594 hollow and 6 full compute nodes placed over three machines: every machine serves its hollow
    nodes from packs, full nodes reach each other and a hollow node's address across the tunnels, down cleans all."""
    name = "mm_hollow"
    body = (f"version: 1\nname: {name}\ndefaults: {{subnet: 10.205.0.0/16}}\n"
            "topology: {generator: region, racks: 6, hosts_per_rack: 100, spines: 1, uplinks: 1, compute: hollow, "
            "full_racks: 6}\n")
    emu = Emulation(load_text(body), cluster=load_cluster(cluster_file)).up()
    try:
        packs = [n for n in emu.plan.nodes if "hollow" in n.options]
        assert {p.machine for p in packs} == set(MACHINES)  # each machine serves its share
        assert sum(len(p.options["hollow"]["nodes"]) for p in packs) == 594
        full = [n for n in emu.plan.nodes if "compute" in n.options]
        assert len(full) == 6 and len({n.machine for n in full}) > 1
        states = {s.node: s for s in emu.status()}
        assert all(states[p.name].state == "running" and states[p.name].kind == "hollow" for p in packs)
        a = full[0]
        b = next(n for n in full if n.machine != a.machine)
        far_pack = next(p for p in packs if p.machine != a.machine)
        hollow_ip = far_pack.options["hollow"]["nodes"][-1][1].split("/")[0]

        def reaches(ip: str) -> bool:
            return any(emu.node(a.name).run(["ping", "-c", "1", "-W", "1", ip]).returncode == 0 for _ in range(10))
        assert reaches(b.ip.split("/")[0])  # full to full, across machines
        assert reaches(hollow_ip)  # a hollow node's own address answers across the tunnels
        far_node = far_pack.options["hollow"]["nodes"][-1][0]  # asked through its machine's worker
        shown = json.loads(cli("alcor", "state", name, far_node, "-o", "json").stdout)
        assert shown["node"] == far_node and shown["host_ip"] == hollow_ip and shown["messages"] == 0
        off = json.loads(cli("alcor", "delays", name, "off", "-o", "json").stdout)
        assert sorted(off["applied_to"]) == sorted(p.name for p in packs) and off["not_reached"] == []
        # a load over the region: each machine's worker pushes to its own agents, full and hollow
        load = json.loads(cli("alcor", "load", name, "--vpcs", "6", "--ports-per-vpc", "100", "--neighbours", "all",
                              "-o", "json").stdout)
        assert load["errors"] == 0 and load["ports"] == 600 and load["messages"] == 600
        served = {p.machine for p in packs if json.loads(cli("alcor", "state", name, p.options["hollow"]["nodes"][0][0],
                                                              "-o", "json").stdout)["messages"] == 1}
        assert served == set(MACHINES)
    finally:
        result = emu.down()
    assert result.clean, result.left
    assert machine_leftovers(name) == {}
