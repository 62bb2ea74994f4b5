"""DHCP from the compute node, as ACA's responder: a VM with `ip: dhcp` runs a real client (udhcpc) and gets its
address, mask, gateway and DNS from its node's DHCP entry, then reaches a static VM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.api import Emulation
from emulator.topology.loader import load_text
from provisioners import computenodes
from tests.conftest import NEEDS_ROOT_OVS, leftovers

pytestmark = NEEDS_ROOT_OVS

BOOTING = """version: 1
name: {name}
defaults: {{subnet: 10.204.0.0/24}}
vpcs:
  app: {{vni: 2301, subnets: {{front: 10.7.1.0/24, back: 10.7.2.0/24}}, router: true, dns: [10.7.1.53]}}
nodes:
  tor: {{kind: switch}}
  cn1: {{kind: compute, provisioner: {engine}}}
  cn2: {{kind: compute, provisioner: {engine}}}
  d1: {{kind: vm, on: cn1, vpc: app, subnet: front, ip: dhcp}}
  d2: {{kind: vm, on: cn2, vpc: app, subnet: front, ip: dhcp}}
  s2: {{kind: vm, on: cn2, vpc: app, ip: 10.7.2.12/24}}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
"""


@pytest.mark.parametrize("engine", ["netns", "docker"])
def test_a_dhcp_vm_gets_its_lease_from_its_compute_node_and_reaches_a_static_vm(state_dir, engine):
    name = f"alcor_dhcp_{engine}"
    emu = Emulation(load_text(BOOTING.format(name=name, engine=engine))).up()
    try:
        planned = {v["name"]: v for v in emu.plan.vms}
        for vm in ("d1", "d2"):
            addresses = json.loads(emu.node(vm).cmd(["ip", "-j", "-4", "addr", "show", "dev", "eth0"]))
            (info,) = addresses[0]["addr_info"]
            assert f"{info['local']}/{info['prefixlen']}" == planned[vm]["ip"]  # the address the plan gave it
            routes = json.loads(emu.node(vm).cmd(["ip", "-j", "-4", "route", "show", "default"]))
            assert [r["gateway"] for r in routes] == ["10.7.1.1"]
            spec = emu.plan.node(planned[vm]["on"]).options["compute"]
            base = computenodes.IN_CONTAINER["dir"] if spec.get("in_container") else spec["dir"]
            lease = emu.node(planned[vm]["on"]).cmd(["cat", str(Path(base) / "ovs" / "run" / "leases" / planned[vm]["netns"])])
            assert "dns=10.7.1.53" in lease and f"hostname={vm}" in lease, lease
        assert emu.node("d1").run(["ping", "-c", "2", "-W", "2", "10.7.2.12"]).returncode == 0  # routed, to a static VM
        assert emu.node("s2").run(["ping", "-c", "2", "-W", "2", planned["d1"]["ip"].split("/")[0]]).returncode == 0
        assert emu.node("d1").run(["ping", "-c", "2", "-W", "2", planned["d2"]["ip"].split("/")[0]]).returncode == 0
    finally:
        result = emu.down()
    assert result.clean and leftovers(name) == {}
