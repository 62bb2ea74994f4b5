"""On-demand mode (ACA's on-demand engine): compute nodes get no neighbours at up; a VM's first packet to another
makes its agent ask cloudemu's NCM (a HostRequest over RequestGoalStates), which pushes the neighbour; the
lookups are counted."""

from __future__ import annotations

import json
import subprocess
import time

from emulator.api import Emulation
from emulator.topology.loader import load_text
from tests.conftest import NEEDS_ROOT_OVS, ROOT, leftovers
from tests.traffic import pings

pytestmark = NEEDS_ROOT_OVS

LAZY = """version: 1
name: {name}
defaults: {{subnet: 10.205.0.0/24}}
vpcs:
  app: {{vni: 2401, subnets: {{front: 10.8.1.0/24, back: 10.8.2.0/24}}, router: true}}
nodes:
  tor: {{kind: switch}}
  cn1: {{kind: compute, on_demand: true}}
  cn2: {{kind: compute, on_demand: true}}
  a1: {{kind: vm, on: cn1, vpc: app, ip: 10.8.1.11/24}}
  a2: {{kind: vm, on: cn2, vpc: app, ip: 10.8.1.12/24}}
  b2: {{kind: vm, on: cn2, vpc: app, ip: 10.8.2.12/24}}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
"""


def test_neighbours_are_learned_on_the_first_packet_through_the_ncm_and_counted(state_dir):
    name = "alcor_lazy"
    emu = Emulation(load_text(LAZY.format(name=name))).up()
    ncm = None
    try:
        assert not pings(emu, "a1", "10.8.2.12", tries=1)  # nothing pushed ahead, and no NCM to ask yet
        ncm = subprocess.Popen([str(ROOT / ".venv/bin/cloudemu"), "alcor", "ncm", name, "-o", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not all(s.exists() for s in __import__("emulator.alcor.ncm", fromlist=["x"]).sockets(emu.plan)):
            assert time.monotonic() < deadline and ncm.poll() is None, ncm.stderr.read() if ncm.poll() else "no socket"
            time.sleep(0.1)
        time.sleep(1.1)  # past the second in which a destination the NCM could not answer is not asked again
        # the first ping: its ARP resolved through the NCM, and a2's answer needs cn2 to ask in turn (on a busy
        # machine two lookups and their flows can take longer than ping's usual second)
        assert pings(emu, "a1", "10.8.1.12", tries=1, wait=5)
        assert pings(emu, "a2", "10.8.1.11", tries=1)  # the other way: both sides know each other now
        assert pings(emu, "a1", "10.8.2.12", tries=1, count=4)  # routed: a first packet each way asks, the next go through
        assert not pings(emu, "a1", "10.8.1.99", tries=1)  # nobody has it: the NCM says so
        ncm.send_signal(subprocess.signal.SIGTERM)
        out, errors = ncm.communicate(timeout=30)
        stats = json.loads(out)
        assert stats["answered"] >= 3 and stats["unknown"] >= 1, (stats, errors)
        assert stats["answered"] + stats["unknown"] + stats["failed"] == stats["requests"]
        assert 0 < stats["answer_ms"]["p50"] <= stats["answer_ms"]["max"]
    finally:
        if ncm is not None and ncm.poll() is None:
            ncm.kill()
        result = emu.down()
    assert result.clean and leftovers(name) == {}


def test_a_load_on_on_demand_nodes_counts_the_lookups_its_pings_needed(state_dir):
    """`alcor load` on on-demand nodes sends ports only, serves its own NCM for its pings, and reports the lookups:
    same-VPC pairs are answered, other-VPC addresses are unknown (and stay unreachable)."""
    from tests.conftest import cli

    name = "alcor_lazy_load"
    emu = Emulation(load_text(LAZY.format(name=name))).up()
    try:
        proc = cli("alcor", "load", name, "--vpcs", "2", "--ports-per-vpc", "6", "--samples", "3", "-o", "json",
                   check=False)
        summary = json.loads(proc.stdout)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lookups = summary["on_demand"]
        assert lookups["answered"] >= 3 and lookups["unknown"] >= 1, lookups
        assert summary["reachability"]["same_vpc_failed"] == [] and summary["reachability"]["other_vpc_reached"] == []
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
