"""Routers (DVR) as ACA's L3 programmer makes them, decided by the agent over a recording data plane."""

from __future__ import annotations

from emulator.alcor import flows, goalstates
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import RecordingDataplane
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2

FRONT = goalstates.Vpc("web", 1001, "10.1.1.0/24", router="r")
BACK = goalstates.Vpc("web", 1001, "10.1.2.0/24", router="r")
A, B = "10.9.0.1", "10.9.0.2"
F1 = goalstates.Port("f1", FRONT, A, "10.1.1.11", "fa:16:3e:00:01:01")
B1 = goalstates.Port("b1", BACK, A, "10.1.2.11", "fa:16:3e:00:02:01")
B2 = goalstates.Port("b2", BACK, B, "10.1.2.12", "fa:16:3e:00:02:02")
PORTS = [F1, B1, B2]


def agent_on(host: str) -> tuple[Agent, RecordingDataplane]:
    dp = RecordingDataplane()
    dp.setup()
    return Agent(dp, host, "ce.x.", all_statuses=True), dp


def statuses(reply) -> dict[tuple[str, int], int]:
    return {(s.resource_id, s.resource_type): s.operation_status for s in reply.operation_statuses}


def test_a_host_gets_the_router_its_subnets_and_l3_entries_for_every_routed_port():
    msgs = goalstates.per_host(PORTS)
    a = msgs[A]
    (router,) = a.router_states.values()
    assert router.configuration.host_dvr_mac_address == goalstates.dvr_mac(A) == "fe:16:11:09:00:01"
    assert {t.subnet_id for t in router.configuration.subnet_routing_tables} == {FRONT.subnet_id, BACK.subnet_id}
    assert {s.operation_type for s in a.subnet_states.values()} == {common.INFO} and len(a.subnet_states) == 2
    kinds = {rid: s.configuration.fixed_ips[0].neighbor_type for rid, s in a.neighbor_states.items()}
    assert kinds == {F1.id: common.L3, B1.id: common.L3, B2.id: common.L3}  # local ones too: routes to them
    b = msgs[B]  # B has only a back port, yet the router carries front traffic to it: it gets the router too
    assert len(b.router_states) == 1 and len(b.subnet_states) == 2 and set(b.neighbor_states) == {F1.id, B1.id, B2.id}
    assert FRONT.gateway_mac != BACK.gateway_mac and FRONT.gateway_mac.startswith("fa:16:3f:")


def test_the_router_answers_its_gateways_and_routes_to_every_port_of_its_other_subnets():
    agent, dp = agent_on(A)
    reply = agent.push_v2(goalstates.per_host(PORTS)[A])
    assert set(statuses(reply).values()) == {common.SUCCESS}
    vlan = agent.vlans[1001]
    text = "\n".join(dp.flows)
    for s in (FRONT, BACK):  # ARP and ping of each gateway, and routed frames given back the gateway's MAC
        assert f"table=51,priority=50,arp,dl_vlan={vlan},arp_tpa={s.gateway}," in text
        assert f"table=52,priority=50,icmp,icmp_type=8,dl_vlan={vlan},nw_dst={s.gateway},actions=" in text
        assert f"table=4,priority=2,tun_id=0x3e9,ip,nw_dst={s.cidr},dl_src={flows.DVR_MAC_MATCH}," \
               f"actions=mod_dl_src:{s.gateway_mac}" in text
    routes = [f for f in dp.flows if "table=0,priority=50" in f]
    assert len(routes) == 3  # to b2 and b1 from front, to f1 from back
    remote = next(f for f in routes if f"nw_dst={B2.ip}," in f)
    assert f"dl_dst={FRONT.gateway_mac}" in remote and f"mod_dl_src:{goalstates.dvr_mac(A)}" in remote
    assert remote.endswith(f"mod_dl_dst:{B2.mac},resubmit(,2)")
    local = next(f for f in routes if f"nw_dst={B1.ip}," in f)
    assert f"mod_dl_src:{BACK.gateway_mac},mod_dl_dst:{B1.mac},in_port" in local
    assert sum(f"table=20,priority=1,dl_vlan={vlan},dl_dst={B2.mac}," in f for f in dp.flows) == 1  # L2 to b2 too
    assert not any(f"dl_dst={B1.mac}" in f and "table=20" in f for f in dp.flows)  # b1 is local: no tunnel


def test_deleting_the_router_removes_its_gateways_and_routes():
    agent, dp = agent_on(A)
    agent.push_v2(goalstates.per_host(PORTS)[A])
    made = [f for f in dp.flows if "priority=50" in f or "table=4,priority=2" in f]
    gs = goalstate_pb2.GoalStateV2()
    gs.router_states[FRONT.router_id].CopyFrom(goalstates.router_state([FRONT, BACK], A, common.DELETE))
    dp.flows.clear()
    reply = agent.push_v2(gs)
    assert statuses(reply) == {(FRONT.router_id, common.ROUTER): common.SUCCESS}
    deleted = {f.removeprefix("delete_strict ") for f in dp.flows}
    assert deleted == {f.removeprefix(f"add cookie={flows.COOKIE},").split(",actions=")[0] for f in made}
    again = agent.push_v2(gs)  # nothing left to delete: ACA's ENOENT
    assert statuses(again) == {(FRONT.router_id, common.ROUTER): common.FAILURE}


def test_a_router_is_refused_as_aca_refuses_it():
    agent, _ = agent_on(A)
    full = goalstates.per_host(PORTS)[A]
    alone = goalstate_pb2.GoalStateV2()  # its subnets are not in the message
    alone.router_states[FRONT.router_id].CopyFrom(full.router_states[FRONT.router_id])
    assert set(statuses(agent.push_v2(alone)).values()) == {common.FAILURE}
    bad_mac = goalstate_pb2.GoalStateV2()
    bad_mac.CopyFrom(full)
    bad_mac.router_states[FRONT.router_id].configuration.host_dvr_mac_address = "fe:16:11:09:00:01\nadd"
    assert statuses(agent.push_v2(bad_mac))[(FRONT.router_id, common.ROUTER)] == common.INVALID_ARG
    no_gateway_mac = goalstate_pb2.GoalStateV2()
    no_gateway_mac.CopyFrom(full)
    no_gateway_mac.subnet_states[BACK.subnet_id].configuration.gateway.mac_address = ""
    assert statuses(agent.push_v2(no_gateway_mac))[(FRONT.router_id, common.ROUTER)] == common.INVALID_ARG
    assert agent.push_v2(full).operation_statuses  # made
    other = goalstate_pb2.GoalStateV2()
    other.CopyFrom(full)
    other.router_states[FRONT.router_id].configuration.host_dvr_mac_address = "fe:16:11:00:00:99"
    assert statuses(agent.push_v2(other))[(FRONT.router_id, common.ROUTER)] == common.INVALID_ARG  # one per host


def test_an_l3_neighbour_without_a_router_fails_and_is_routed_once_a_router_comes():
    agent, dp = agent_on(A)
    msg = goalstates.per_host(PORTS)[A]
    without = goalstate_pb2.GoalStateV2()
    without.CopyFrom(msg)
    del without.router_states[FRONT.router_id]
    reply = agent.push_v2(without)
    assert statuses(reply)[(B2.id, common.NEIGHBOR)] == common.FAILURE  # ACA: no local router has its subnet
    assert agent.failures == 3 and not any("table=0,priority=50" in f for f in dp.flows)
    assert B2.id in agent.neighbors  # its L2 flows are there, as ACA programs them first
    router_only = goalstate_pb2.GoalStateV2(subnet_states=msg.subnet_states, router_states=msg.router_states)
    agent.push_v2(router_only)
    assert sum("table=0,priority=50" in f for f in dp.flows) == 3


def test_a_bundle_that_fails_leaves_the_routers_as_they_were():
    agent, dp = agent_on(A)
    agent.push_v2(goalstates.per_host(PORTS)[A])
    before = (set(agent.routers.routers), {k: dict(r.routes) for k, r in agent.routers.routers.items()})

    def refuse():
        raise flows_error
    from emulator.alcor.dataplane import DataplaneError
    flows_error = DataplaneError("bundle refused")
    gs = goalstate_pb2.GoalStateV2()
    gs.router_states[FRONT.router_id].CopyFrom(goalstates.router_state([FRONT, BACK], A, common.DELETE))
    original = dp.flow_sink

    def failing_sink():
        sink = original()
        sink.commit = refuse
        return sink
    dp.flow_sink = failing_sink
    reply = agent.push_v2(gs)
    assert statuses(reply) == {(FRONT.router_id, common.ROUTER): common.FAILURE}
    assert (set(agent.routers.routers), {k: dict(r.routes) for k, r in agent.routers.routers.items()}) == before


def test_a_router_keyed_as_ncm_renames_it_is_still_the_router_its_configuration_names():
    """NCM keys router states `hostIp/routerId` in host_resources and renames the map key: the agent reads neither
    (as ACA, it takes the configuration's id), so the router is programmed all the same."""
    agent, dp = agent_on(A)
    gs = goalstates.per_host(PORTS)[A]
    state = gs.router_states[FRONT.router_id]
    renamed = goalstate_pb2.GoalStateV2()
    renamed.CopyFrom(gs)
    del renamed.router_states[FRONT.router_id]
    renamed.router_states[f"{A}/{FRONT.router_id}"].CopyFrom(state)
    renamed.host_resources[A].resources.add(type=common.ROUTER, id=f"{A}/{FRONT.router_id}")
    reply = agent.push_v2(renamed)
    assert statuses(reply)[(FRONT.router_id, common.ROUTER)] == common.SUCCESS
    assert sum("table=0,priority=50" in f for f in dp.flows) == 3
