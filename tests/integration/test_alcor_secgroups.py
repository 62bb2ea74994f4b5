"""Security groups enforced on the compute nodes (beyond ACA, which only logs them), with traffic both ways."""

from __future__ import annotations

import pytest

from emulator.alcor import controller, goalstates
from emulator.alcor.schema import goalstate_pb2
from emulator.api import Emulation
from emulator.topology.loader import load_text
from tests.conftest import NEEDS_ROOT_OVS, leftovers
from tests.traffic import pings, serve_tcp, tcp_answer

pytestmark = NEEDS_ROOT_OVS

GUARDED = """version: 1
name: {name}
defaults: {{subnet: 10.203.0.0/24}}
vpcs:
  app: {{vni: 2201, subnets: {{front: 10.5.1.0/24, back: 10.5.2.0/24}}, router: true}}
security_groups:
  web:
    - {{direction: ingress, protocol: tcp, ports: 80, remote: 10.5.1.0/24}}
    - {{direction: ingress, protocol: icmp, remote: 10.5.1.0/24}}
nodes:
  tor: {{kind: switch}}
  cn1: {{kind: compute, provisioner: {engine}}}
  cn2: {{kind: compute, provisioner: {engine}}}
  f1: {{kind: vm, on: cn1, vpc: app, ip: 10.5.1.11/24}}
  b1: {{kind: vm, on: cn1, vpc: app, ip: 10.5.2.11/24, security_groups: [web]}}
  b2: {{kind: vm, on: cn2, vpc: app, ip: 10.5.2.12/24, security_groups: [web]}}
  bx: {{kind: vm, on: cn2, vpc: app, ip: 10.5.2.13/24}}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
"""

def reaches(emu: Emulation, src: str, ip: str, port: int | None = None, tries: int = 2) -> bool:
    """ICMP (no port) or a TCP connection answered."""
    if port is None:
        return pings(emu, src, ip, tries=tries)
    return any(tcp_answer(emu, src, ip, port).startswith("hello") for _ in range(tries))


@pytest.mark.parametrize("engine", ["netns", "docker"])
def test_a_security_group_lets_in_what_its_rules_allow_and_nothing_else(state_dir, engine):
    name = f"alcor_sg_{engine}"
    emu = Emulation(load_text(GUARDED.format(name=name, engine=engine))).up()
    servers = []
    try:
        servers = [serve_tcp(emu, vm, port) for vm in ("b1", "b2", "f1", "bx") for port in (80, 22)]
        # from the allowed subnet, across nodes and on one: ICMP and TCP 80 in, TCP 22 not
        for target, ip in (("b2", "10.5.2.12"), ("b1", "10.5.2.11")):
            assert reaches(emu, "f1", ip), target
            assert reaches(emu, "f1", ip, 80), target
            assert not reaches(emu, "f1", ip, 22, tries=1), target
        # from elsewhere (its own subnet, unfiltered bx, on b2's node): nothing in
        assert not reaches(emu, "bx", "10.5.2.12", tries=1) and not reaches(emu, "bx", "10.5.2.12", 80, tries=1)
        # the other way: a guarded VM reaches out (a group without egress rules lets egress through) and its answers
        # come back as established, to a VM with no group and to one with the same group
        assert reaches(emu, "b2", "10.5.1.11") and reaches(emu, "b2", "10.5.1.11", 22)
        assert reaches(emu, "b2", "10.5.2.13", 22)
        assert not reaches(emu, "b2", "10.5.2.11", 80, tries=1)  # b1 lets in the front subnet only
        # an UPDATE without the ICMP rule: ping stops, TCP 80 stays
        ports = {p.name: p for p in controller.plan_ports(emu.plan)}
        (web,) = ports["b2"].groups
        narrowed = goalstates.SecurityGroup(web.name, tuple(r for r in web.rules if r["protocol"] != "icmp"))
        gs = goalstate_pb2.GoalStateV2()
        gs.security_group_states[web.id].CopyFrom(goalstates.security_group_state(narrowed, ports["b2"].vpc))
        (pushed,) = controller.stream(controller.agent_targets(emu.plan)[ports["b2"].host_ip], [gs])
        assert pushed.failed == []
        assert not reaches(emu, "f1", "10.5.2.12", tries=1) and reaches(emu, "f1", "10.5.2.12", 80)
        assert reaches(emu, "f1", "10.5.2.11")  # b1's node did not get the update
    finally:
        for server in servers:
            server.kill()
        result = emu.down()
    assert result.clean and leftovers(name) == {}
