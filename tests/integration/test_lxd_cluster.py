"""On an LXD cluster, for real: three LXD daemons, one per testbed machine (each in the machine's own network and
mount namespaces, with its own LXD_DIR), formed into one cluster. LXD hosts are created through the cluster's API on
the member the placement chose; the node image is imported once into the cluster; a member whose daemon stops
during `up` or before `down` leaves a run that says so and is finished once the member is back."""

from __future__ import annotations

import threading
import time
import warnings
from pathlib import Path

import pytest

from emulator import Emulation, load_text
from emulator.checks import run_all
from emulator.runtime import distributed, lxdcluster
from emulator.runtime.journal import Journal
from emulator.topology.cluster import load_cluster
from tests.conftest import NEEDS_ROOT_OVS, ROOT, cli
from tests.testbed import MACHINES, machine_leftovers, running_testbed, testbed

pytestmark = NEEDS_ROOT_OVS

FATTREE = """version: 1
name: {name}
defaults: {{subnet: 10.77.0.0/24, provisioner: lxd}}
topology: {{generator: fattree, k: 4}}
checks:
  - {{ping: {{from: h1, to: h16}}}}
"""
PINNED = """version: 1
name: {name}
defaults: {{subnet: 10.76.0.0/24, provisioner: lxd}}
nodes:
  s1: {{kind: switch, machine: m1}}
  s2: {{kind: switch, machine: m2}}
  s3: {{kind: switch, machine: m3}}
  h1: {{machine: m1}}
  h2: {{machine: m2}}
  h3: {{machine: m3}}
  h4: {{machine: m2}}
links:
  - endpoints: [h1, s1]
  - endpoints: [h2, s2]
  - endpoints: [h3, s3]
  - endpoints: [h4, s2]
  - endpoints: [s1, s2]
  - endpoints: [s2, s3]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_testbed(tmp_path_factory.mktemp("lxdcluster") / "cluster.yaml", engine="lxd-cluster") as out:
        cli("image", "build", "--engine", "lxd", "--cluster", str(out))  # once, into the cluster
        yield load_cluster(out)


@pytest.fixture
def healthy(cluster):
    """Every member online, as the cluster's API says, for two seconds running: a member brought back by an earlier
    test is marked by heartbeats, which can lag its daemon's return."""
    api, start, since, seen = lxdcluster.client(cluster.lxd), time.monotonic(), None, set()
    while time.monotonic() < start + 120:
        states = {name: m.status for name, m in lxdcluster.members(api).items()}
        if set(states.values()) == {"Online"}:
            since = since or time.monotonic()
            if time.monotonic() - since >= 2:
                if seen:  # shown in the run's warnings summary: how often the cluster lags, and by how much
                    warnings.warn(f"LXD members {sorted(seen)} were not online for {since - start:.1f} s", stacklevel=1)
                return cluster
        else:
            since = None
            seen |= {name for name, state in states.items() if state != "Online"}
        time.sleep(0.25)
    daemons = {m: testbed.lxd_running(m) for m in MACHINES}
    logs = {m: (testbed.ROOT / m / "lxd" / "lxd.log").read_text()[-600:] for m in MACHINES if states.get(m) != "Online"}
    pytest.fail(f"the LXD cluster's members did not all come online: {states}; daemons running: {daemons}; {logs}")


def instances(cluster, name: str, plan=None) -> dict[str, str]:
    """The experiment's instances anywhere in the cluster: name -> member."""
    names = {n.options["container"] for n in plan.nodes if "container" in n.options} if plan else set()
    return lxdcluster.instances_of(lxdcluster.client(cluster.lxd), name, names)


def test_doctor_checks_every_member(healthy):
    cluster = healthy
    rows = distributed.doctor(cluster)
    assert [r["machine"] for r in rows] == MACHINES
    assert all(r["ok"] for r in rows), rows
    assert {r["lxd"]["status"] for r in rows} == {"Online"} and all(r["lxd"]["version"] for r in rows)
    assert all(r["lxd"]["image"] for r in rows)  # imported once, into the cluster


def test_fattree_with_lxd_hosts_placed_by_metis_on_members(state_dir, healthy):
    cluster = healthy
    name = "lxc_fattree"
    topo = load_text(FATTREE.format(name=name))
    emu = Emulation(topo, cluster=cluster)
    landed: dict[str, str] = {}

    def up() -> None:
        emu.up()
        landed.update(instances(cluster, name))
    results = run_all(emu, topo.checks, wait=40, bring_up=up)
    assert [(r.name, r.passed) for r in results] == [("up", True), ("pingall", True), ("ping(from=h1, to=h16)", True),
                                                     ("down", True)], results
    planned = {n.options["container"]: n.machine for n in emu.plan.nodes if n.options.get("engine") == "lxd"}
    assert len(planned) == 16 and set(planned.values()) == set(MACHINES)  # METIS spread the hosts over all three
    assert landed == planned  # each instance on the member the plan says
    assert instances(cluster, name, emu.plan) == {}
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()


def test_compute_nodes_as_lxd_instances_on_two_members(state_dir, healthy):
    cluster = healthy
    """Alcor compute nodes (their own OVS and agent, VMs as namespaces inside) as privileged LXD instances on two
    members, the switch between them on a third: goal states pushed, VMs of a VPC reach each other, VPCs stay apart."""
    text = (ROOT / "topologies" / "alcor-small.yaml").read_text().replace("name: alcor_small", "name: lxc_alcor")
    text = text.replace("cn1: {kind: compute}", "cn1: {kind: compute, provisioner: lxd, machine: m1}")
    text = text.replace("cn2: {kind: compute}", "cn2: {kind: compute, provisioner: lxd, machine: m2}")
    text = text.replace("tor: {kind: switch}", "tor: {kind: switch, machine: m3}")
    topo = load_text(text)
    emu = Emulation(topo, cluster=cluster)
    landed: dict[str, str] = {}

    def up() -> None:
        emu.up()
        landed.update(instances(cluster, "lxc_alcor"))
    results = run_all(emu, topo.checks, wait=20, bring_up=up)
    assert all(r.passed for r in results), results
    assert sorted(landed.values()) == ["m1", "m2"]
    assert instances(cluster, "lxc_alcor", emu.plan) == {}
    assert machine_leftovers("lxc_alcor") == {}


def test_member_stopping_after_up_makes_down_partial_until_it_is_back(state_dir, healthy):
    cluster = healthy
    name = "lxc_after"
    emu = Emulation(load_text(PINNED.format(name=name)), cluster=cluster).up()
    try:
        assert sorted(instances(cluster, name).values()) == ["m1", "m2", "m2", "m3"]  # as pinned
        assert emu.pingall(wait=30).failed == []
        testbed.stop_lxd("m2")
        result = emu.down()
        assert not result.clean
        left = {r.name: r.machine for r in result.left if r.kind == "lxd-instance"}
        assert set(left.values()) == {"m2"} and len(left) == 2, result.left  # h2 and h4, on the stopped member
        assert Journal(name).meta()["status"] == "partial"
        assert set(instances(cluster, name, emu.plan).values()) == {"m2"}  # the others' went
    finally:
        testbed.restart_lxd("m2")
    again = distributed.destroy_cluster(name)
    assert again.clean, again.left
    assert instances(cluster, name, emu.plan) == {}
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()


def test_member_stopping_during_up_stops_the_run_and_down_finishes_once_it_is_back(state_dir, healthy):
    cluster = healthy
    name = "lxc_during"
    journal_on_m2 = Path(testbed.machine_env("m2")["CLOUDEMU_STATE_DIR"]) / "experiments" / name / "journal.sqlite"

    stopped = threading.Event()
    watcher = threading.Thread(target=lambda: None)

    def stop_m2_once_it_starts() -> None:
        def watch() -> None:
            deadline = time.monotonic() + 60
            while not journal_on_m2.exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            if journal_on_m2.exists():
                testbed.stop_lxd("m2")
                stopped.set()
        nonlocal watcher
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

    topo = load_text(PINNED.format(name=name))
    try:
        with pytest.raises(distributed.ClusterError) as info:
            distributed.deploy_cluster(topo, cluster, after_preflight=stop_m2_once_it_starts)
        watcher.join(timeout=90)
        assert stopped.is_set() and "m2" in str(info.value), info.value  # m2 began its shard, then its LXD stopped
        assert set(instances(cluster, name).values()) <= {"m2"}  # what was made elsewhere was removed at once
    finally:
        testbed.restart_lxd("m2")
    if Journal(name).exists():
        result = distributed.destroy_cluster(name)
        assert result.clean, result.left
    assert instances(cluster, name) == {}  # m2 is back: its instances show their marker again
    assert machine_leftovers(name) == {}
    assert not Journal(name).exists()

