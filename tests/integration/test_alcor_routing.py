"""Routing between the subnets of a VPC (ACA's DVR), with traffic: ping and TCP both ways, on one compute node and
across two, the gateways answering ping; a router DELETE stops it."""

from __future__ import annotations

import time

import pytest

from emulator.alcor import controller, goalstates
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from emulator.api import Emulation
from emulator.topology.loader import load_text
from tests.conftest import NEEDS_ROOT_OVS, leftovers
from tests.traffic import pings, serve_tcp, tcp_answer

pytestmark = NEEDS_ROOT_OVS

ROUTED = """version: 1
name: {name}
defaults: {{subnet: 10.202.0.0/24}}
vpcs:
  web: {{vni: 2101, subnets: {{front: 10.3.1.0/24, back: 10.3.2.0/24}}, router: true}}
  lone: {{vni: 2102, subnets: {{front: 10.4.1.0/24, back: 10.4.2.0/24}}}}
nodes:
  tor: {{kind: switch}}
  cn1: {{kind: compute, provisioner: {engine}}}
  cn2: {{kind: compute, provisioner: {engine}}}
  f1: {{kind: vm, on: cn1, vpc: web, ip: 10.3.1.11/24}}
  b1: {{kind: vm, on: cn1, vpc: web, ip: 10.3.2.11/24}}
  b2: {{kind: vm, on: cn2, vpc: web, ip: 10.3.2.12/24}}
  lf1: {{kind: vm, on: cn1, vpc: lone, ip: 10.4.1.11/24}}
  lb2: {{kind: vm, on: cn2, vpc: lone, ip: 10.4.2.12/24}}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
"""

@pytest.mark.parametrize("engine", ["netns", "docker"])
def test_subnets_of_a_vpc_are_routed_on_one_node_and_across_nodes_until_the_router_goes(state_dir, engine):
    name = f"alcor_l3_{engine}"
    emu = Emulation(load_text(ROUTED.format(name=name, engine=engine))).up()
    servers = []
    try:
        servers = [serve_tcp(emu, vm, 8080) for vm in ("f1", "b2", "b1")]
        # across compute nodes, both ways: ping and TCP, each side seeing the other's own address (no NAT)
        assert pings(emu, "f1", "10.3.2.12") and pings(emu, "b2", "10.3.1.11")
        assert tcp_answer(emu, "f1", "10.3.2.12", 8080) == "hello 10.3.1.11"
        assert tcp_answer(emu, "b2", "10.3.1.11", 8080) == "hello 10.3.2.12"
        # on one compute node
        assert pings(emu, "f1", "10.3.2.11") and tcp_answer(emu, "b1", "10.3.1.11", 8080) == "hello 10.3.2.11"
        # the gateways answer ping and ARP, with the gateway MAC the subnet state gave
        assert pings(emu, "f1", "10.3.1.1") and pings(emu, "b2", "10.3.2.1")
        front = next(p.vpc for p in controller.plan_ports(emu.plan) if p.name == "f1")
        assert front.gateway_mac in emu.node("f1").cmd(["ip", "neigh", "show", "10.3.1.1"])
        # a VPC whose subnets have no router: nothing crosses between them
        assert not pings(emu, "lf1", "10.4.2.12", tries=1) and not pings(emu, "lf1", "10.4.1.1", tries=1)

        ports = controller.plan_ports(emu.plan)
        subnets = list({p.vpc.subnet_id: p.vpc for p in ports if p.vpc.router}.values())
        targets = controller.agent_targets(emu.plan)
        for host in sorted({p.host_ip for p in ports}):
            gone = goalstate_pb2.GoalStateV2()
            gone.router_states[subnets[0].router_id].CopyFrom(goalstates.router_state(subnets, host, common.DELETE))
            (pushed,) = controller.stream(targets[host], [gone])
            assert pushed.failed == [], pushed.failed
        deadline = time.monotonic() + 5  # the flows go with the bundle; a cached datapath flow may live a moment
        while pings(emu, "f1", "10.3.2.12", tries=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pings(emu, "f1", "10.3.2.12", tries=1) and not pings(emu, "f1", "10.3.2.11", tries=1)
        assert not pings(emu, "f1", "10.3.1.1", tries=1)
        assert tcp_answer(emu, "f1", "10.3.2.12", 8080).startswith("failed")
        assert pings(emu, "b1", "10.3.2.12")  # the same subnet is switched as before
    finally:
        for server in servers:
            server.kill()
        result = emu.down()
    assert result.clean and leftovers(name) == {}
