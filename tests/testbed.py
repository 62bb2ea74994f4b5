"""The 3-machine testbed (scripts/testbed.py) for integration tests: bring it up for a module, and list what an
experiment left on any of its machines."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

MACHINES = ["m1", "m2", "m3"]


def _testbed_module():
    spec = importlib.util.spec_from_file_location("testbed", ROOT / "scripts" / "testbed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


testbed = _testbed_module()


@contextlib.contextmanager
def running_testbed(out: Path, engine: str = "netns") -> Iterator[Path]:
    """For a module fixture: the machines up (an LXD daemon each, formed into a cluster, with lxd-cluster), their
    inventory at `out`; afterwards nothing of the testbed is left on this host."""
    if testbed.alive(testbed.load_state()):  # a stale one (a killed run's) is cleared by `up`
        pytest.fail("a testbed is already up on this host: 'scripts/testbed down' first")
    try:
        subprocess.run([str(ROOT / "scripts" / "testbed"), "up", "3", "--engine", engine, "--out", str(out)],
                       check=True)
        yield out
    finally:
        subprocess.run([str(ROOT / "scripts" / "testbed"), "down"], check=True)
        assert not list(Path("/run/netns").glob("cetb-*"))
        assert not Path("/sys/class/net/cetb0").exists()
        assert "cloudemu-testbed" not in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True,
                                                        text=True).stdout
        assert not [p for p in Path("/proc").iterdir()
                    if p.name.isdigit() and testbed.ours(int(p.name), ("cloudemu-testbed/",))]


def machine_leftovers(experiment: str) -> dict[str, list[str]]:
    """On every testbed machine: our devices, OVS bridges, journals and the experiment's namespaces (each
    machine has its own /run/netns); and on this host's, any that escaped."""
    found: dict[str, list[str]] = {}
    for m in MACHINES:
        links = json.loads(subprocess.run(["ip", "-n", f"cetb-{m}", "-j", "link"], capture_output=True, text=True,
                                          check=True).stdout)
        env = testbed.machine_env(m)
        bridges = subprocess.run(["ovs-vsctl", f"--db=unix:{env['OVS_RUNDIR']}/db.sock", "list-br"],
                                 capture_output=True, text=True, check=True).stdout.split()
        journals = list(Path(env["CLOUDEMU_STATE_DIR"]).glob(f"experiments/{experiment}/journal.sqlite"))
        items = [lk["ifname"] for lk in links if lk.get("ifalias") == f"cloudemu-exp={experiment}"]
        items += bridges + [str(j) for j in journals]
        items += [n for n in testbed.machine_namespaces(m) if n.startswith(f"ce.{experiment}.")]
        if items:
            found[m] = items
    namespaces = [n for n in Path("/run/netns").iterdir() if n.name.startswith(f"ce.{experiment}.")]
    if namespaces:
        found["netns"] = [n.name for n in namespaces]
    return found
