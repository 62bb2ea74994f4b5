"""The Alcor layer's pure parts: schema (wire facts), goal-state building, flows, the agent's decisions."""

import pytest

from emulator.alcor import flows, goalstates
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import OvsDataplane
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, goalstateprovisioner_pb2, resources_pb2
from emulator.compiler.compile import compile_topology
from emulator.runtime import tokens
from emulator.topology.loader import load_text


def fields(message) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_generated_modules_match_the_proto_files():
    pytest.importorskip("grpc_tools")
    from emulator.alcor.schema.generate import stale

    assert stale() == []


def test_wire_facts_match_alcor():
    """Package, service, streaming shape and field numbers are what Alcor's controller and ACA use."""
    service = goalstateprovisioner_pb2.DESCRIPTOR.services_by_name["GoalStateProvisioner"]
    assert service.full_name == "alcor.schema.GoalStateProvisioner"
    stream = service.methods_by_name["PushGoalStatesStream"]
    assert (stream.input_type.full_name, stream.output_type.full_name) == ("alcor.schema.GoalStateV2",
                                                                           "alcor.schema.GoalStateOperationReply")
    assert service.methods_by_name["PushNetworkResourceStates"].input_type.full_name == "alcor.schema.GoalState"
    assert fields(goalstate_pb2.GoalStateV2) == {
        "format_version": 1, "host_resources": 2, "vpc_states": 3, "subnet_states": 4, "port_states": 5,
        "dhcp_states": 6, "neighbor_states": 7, "security_group_states": 8, "router_states": 9, "gateway_states": 10}
    port = fields(resources_pb2.PortConfiguration)
    assert (port["id"], port["update_type"], port["mac_address"], port["host_info"], port["fixed_ips"]) == (3, 4, 9, 11, 12)
    neighbor = fields(resources_pb2.NeighborConfiguration)
    assert (neighbor["mac_address"], neighbor["host_ip_address"], neighbor["fixed_ips"]) == (7, 9, 10)
    assert fields(resources_pb2.SubnetConfiguration)["tunnel_id"] == 9
    assert resources_pb2.SubnetConfiguration.DESCRIPTOR.fields_by_name["tunnel_id"].type == 4  # uint64
    reply = goalstateprovisioner_pb2.GoalStateOperationReply.GoalStateOperationStatus
    assert fields(reply)["dataplane_programming_time"] == 5
    assert (common.NEIGHBOR, common.DELETE, common.INVALID_ARG, common.FULL) == (3, 4, 2, 1)


#: Alcor's schema/proto3 (ACA-BEHAVIOUR section 4): message -> field -> (number, type name or scalar kind).
ALCOR_FIELDS = {
    "SecurityGroupConfiguration": {"revision_number": 1, "request_id": 2, "id": 3, "update_type": 4, "vpc_id": 5,
                                   "name": 6, "security_group_rules": 7},
    "SecurityGroupConfiguration.SecurityGroupRule": {
        "operation_type": 1, "security_group_id": 2, "id": 3, "direction": 4, "ethertype": 5, "protocol": 6,
        "port_range_min": 7, "port_range_max": 8, "remote_ip_prefix": 9, "remote_group_id": 10},
    "DHCPConfiguration": {"revision_number": 1, "request_id": 2, "id": 3, "update_type": 4, "subnet_id": 5,
                          "mac_address": 6, "ipv4_address": 7, "ipv6_address": 8, "port_host_name": 9},
    "RouterConfiguration": {"revision_number": 1, "request_id": 2, "id": 3, "update_type": 4,
                            "host_dvr_mac_address": 5, "subnet_routing_tables": 6},
    "RouterConfiguration.RoutingRule": {"operation_type": 1, "id": 2, "name": 3, "destination": 4, "next_hop_ip": 5,
                                        "priority": 6, "routing_rule_extra_info": 7},
    "RouterConfiguration.RoutingRuleExtraInfo": {"destination_type": 1, "next_hop_mac": 2},
    "RouterConfiguration.SubnetRoutingTable": {"subnet_id": 1, "routing_rules": 2},
    "GatewayConfiguration": {"revision_number": 1, "request_id": 2, "id": 3, "gateway_type": 4, "destinations": 5,
                             "zeta_info": 6, "arion_info": 7},
    "GatewayConfiguration.arion": {"vpc_id": 1, "vni": 2, "subnet_id": 3, "port_inband_operation": 4},
    "HostRequest.ResourceStateRequest": {"request_type": 1, "request_id": 2, "tunnel_id": 3, "source_ip": 4,
                                         "source_port": 5, "destination_ip": 6, "destination_port": 7, "ethertype": 8,
                                         "protocol": 9},
    "HostRequestReply": {"format_version": 1, "operation_statuses": 2, "total_operation_time": 3},
    "NeighborRulesRequest": {"format_version": 1, "request_id": 2, "neigborstates": 3},
}
ALCOR_ENUMS = {"RequestType": {"ON_DEMAND": 0, "AGENT_RESTARTED": 1}, "EtherType": {"IPV4": 0, "IPV6": 1},
               "Protocol": {"TCP": 0, "UDP": 1, "ICMP": 2, "HTTP": 3, "ARP": 4},
               "GatewayType": {"DEFAULT": 0, "ZETA": 1, "TGW": 2, "IGW": 3, "NGW": 4, "ARION": 5},
               "DestinationType": {"INTERNET": 0, "VPC_GW": 1}}


def test_every_goal_state_kind_is_declared_with_alcors_field_numbers():
    """Security groups, DHCP, routers, gateways and the on-demand request, field by field as Alcor numbers them;
    and a message written by Alcor's numbering reads right here: a ZETA gateway is not a FULL update, a real ACA's
    source_port is not lost into a destination_ip."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for name, expected in ALCOR_FIELDS.items():
        message = pool.FindMessageTypeByName(f"alcor.schema.{name}")
        assert {f.name: f.number for f in message.fields} == expected, name
    for name, values in ALCOR_ENUMS.items():
        enum = pool.FindEnumTypeByName(f"alcor.schema.{name}")
        assert {v.name: v.number for v in enum.values} == values, name
    service = goalstateprovisioner_pb2.DESCRIPTOR.services_by_name["GoalStateProvisioner"]
    assert service.methods_by_name["PushGoalstates"].input_type.full_name == "alcor.schema.NeighborRulesRequest"
    # bytes as Alcor's writer lays them out, by hand: GatewayConfiguration field 4 = 1 (ZETA), field 6 = zeta {1: 7}
    gateway = resources_pb2.GatewayConfiguration.FromString(bytes([4 << 3, 1, 6 << 3 | 2, 2, 1 << 3, 7]))
    assert gateway.gateway_type == resources_pb2.ZETA and gateway.zeta_info.port_inband_operation == 7
    # ResourceStateRequest: source_port (5, varint 4789), destination_ip (6, "10.0.0.9")
    ip = b"10.0.0.9"
    raw = bytes([5 << 3, 0xB5, 0x25, 6 << 3 | 2, len(ip)]) + ip
    request = goalstateprovisioner_pb2.HostRequest.ResourceStateRequest.FromString(raw)
    assert (request.source_port, request.destination_ip) == (4789, "10.0.0.9")
    assert request.SerializeToString() == raw  # and written back the same way


BLUE = goalstates.Vpc("blue", 1001, "10.1.0.0/24")
RED = goalstates.Vpc("red", 1002, "10.2.0.0/24")
PORTS = [goalstates.Port("b1", BLUE, "10.9.0.1", "10.1.0.11", "fa:16:3e:00:00:01"),
         goalstates.Port("b2", BLUE, "10.9.0.2", "10.1.0.12", "fa:16:3e:00:00:02"),
         goalstates.Port("r1", RED, "10.9.0.1", "10.2.0.11", "fa:16:3e:00:00:03"),
         goalstates.Port("r3", RED, "10.9.0.3", "10.2.0.13", "fa:16:3e:00:00:04")]


def test_one_message_per_host_with_neighbours_of_its_vpcs_on_other_hosts():
    msgs = goalstates.per_host(PORTS)
    assert set(msgs) == {"10.9.0.1", "10.9.0.2", "10.9.0.3"}
    one = msgs["10.9.0.1"]
    assert {s.configuration.name for s in one.port_states.values()} == {"b1", "r1"}
    assert {s.configuration.name for s in one.neighbor_states.values()} == {"b2", "r3"}
    assert all(s.operation_type == common.INFO for s in one.vpc_states.values())
    assert all(s.configuration.update_type == common.FULL for s in one.port_states.values())
    listed = {(r.type, r.id) for r in one.host_resources["10.9.0.1"].resources}
    assert (common.PORT, PORTS[0].id) in listed and (common.NEIGHBOR, PORTS[1].id) in listed
    two = msgs["10.9.0.2"]
    assert {s.configuration.name for s in two.neighbor_states.values()} == {"b1"}  # no red port there: no red neighbours


def test_flows_encapsulate_to_the_neighbours_host_and_answer_arp():
    encap, arp = flows.neighbor_flows(1001, 3, "fa:16:3e:00:00:02", "10.1.0.12", "10.9.0.2")
    assert "table=20" in encap and "dl_vlan=3" in encap and "dl_dst=fa:16:3e:00:00:02" in encap
    assert "load:0x3e9->NXM_NX_TUN_ID[]" in encap and "set_field:10.9.0.2->tun_dst" in encap
    assert encap.endswith(f"output:{flows.VXLAN_OFPORT}")
    assert "arp_tpa=10.1.0.12" in arp and f"load:0xfa163e000002->{flows.MAC_FIELD}" in arp and arp.endswith("resubmit(,52)")
    reply = next(f for f in flows.base_flows() if "table=52,priority=1" in f)  # the reply, once for all neighbours
    assert f"{flows.MAC_FIELD}->NXM_NX_ARP_SHA[]" in reply and f"{flows.MAC_FIELD}->NXM_OF_ETH_SRC[]" in reply
    assert reply.index("NXM_OF_ARP_TPA[]->NXM_NX_REG4[]") < reply.index("NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[]")
    assert flows.tap_name("0123456789abcdef") == "tap0123456789a"


class RecordingDataplane(OvsDataplane):
    """The OVS data plane's commands recorded instead of run, after the same token checks the real one makes."""

    streams_flows = False  # one add_flows call per message, recorded

    def __init__(self):
        super().__init__(datapath_type="system", mtu=1450)  # no tunnel priming (it needs a br-phy)
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, text=None):
        self.calls.append((*tokens.argv_words(argv), text or ""))
        return ""

    def links_up(self, devices):
        self.calls.append(("links up", *tokens.argv_words(devices)))


@pytest.fixture
def agent(monkeypatch):
    monkeypatch.setattr("emulator.alcor.dataplane.nsconfig.configure", lambda configs: None)
    return Agent(RecordingDataplane(), "10.9.0.1", "ce.x.")


def test_agent_programs_a_message_in_one_batch_per_kind(agent):
    import gc

    reply = agent.push_v2(goalstates.per_host(PORTS)["10.9.0.1"])
    assert gc.isenabled()  # off only while the message is worked through
    assert [s.operation_status for s in reply.operation_statuses] == [common.SUCCESS] * len(reply.operation_statuses)
    tools = [c[0] for c in agent.dp.calls]
    # one flow bundle before the ports join (vswitchd polls every port between OpenFlow messages), namespaces+veths,
    # ports; the taps come up last, once the VMs are configured
    assert tools == ["ovs-ofctl", "ip", "ovs-vsctl", "links up"]
    assert set(agent.dp.calls[3][1:]) == {flows.tap_name(p.id) for p in PORTS if p.host_ip == "10.9.0.1"}
    ip_lines = agent.dp.calls[1][-1]
    assert "netns add ce.x.b1" in ip_lines and "address fa:16:3e:00:00:01 netns ce.x.b1" in ip_lines
    # the taps in one burst after every namespace, already promiscuous (each link event costs OVS a reconfiguration)
    lines = ip_lines.splitlines()
    assert [ln.split()[0] for ln in lines] == ["netns"] * (len(lines) // 2) + ["link"] * (len(lines) // 2)
    assert all(" promisc on " in ln for ln in lines if ln.startswith("link"))
    assert agent.vlans[1001] != agent.vlans[1002]
    vsctl = " ".join(agent.dp.calls[2])
    assert f"tag={agent.vlans[1001]}" in vsctl and f"external_ids:iface-id={PORTS[0].id}" in vsctl
    flow_text = agent.dp.calls[0][-1]
    assert "--bundle" in agent.dp.calls[0]
    assert flow_text.count("table=20") == 2 and flow_text.count("table=4,") == 2
    assert reply.message_total_operation_time > 0


def test_agent_refuses_what_aca_refuses(agent):
    agent.push_v2(goalstates.per_host(PORTS[:1])["10.9.0.1"])  # learns the blue VPC and subnet
    cases = {"delta": {"update_type": common.DELTA}, "revision": {"revision_number": 0},
             "mac": {"mac_address": "01:00:5e:00:00:01"}, "nomac": {"mac_address": "nonsense"},
             "down": {"admin_state_up": False}}
    gs = goalstate_pb2.GoalStateV2()
    for name, change in cases.items():
        state = goalstates.port_state(goalstates.Port(name, BLUE, "10.9.0.1", "10.1.0.50", "fa:16:3e:00:00:50"))
        for key, value in change.items():
            setattr(state.configuration, key, value)
        gs.port_states[state.configuration.id].CopyFrom(state)
    unknown = goalstates.port_state(goalstates.Port("nosubnet", RED, "10.9.0.1", "10.2.0.50", "fa:16:3e:00:00:51"))
    gs.port_states[unknown.configuration.id].CopyFrom(unknown)
    reply = agent.push_v2(gs)
    assert {s.operation_status for s in reply.operation_statuses} == {common.INVALID_ARG}
    assert len(reply.operation_statuses) == 6 and len(agent.ports) == 1


def test_port_operations_as_aca_reads_them(agent):
    """CREATE again with a new MAC re-makes the VM; UPDATE unbinding (no device) deletes, any other UPDATE is refused;
    INFO and GET of a port are FAILURE; an INFO neighbour is programmed."""
    host = "10.9.0.1"
    b1 = PORTS[0]
    agent.push_v2(goalstates.per_host([b1])[host])
    same = agent.push_v2(goalstates.per_host([b1])[host])
    assert [s.operation_status for s in same.operation_statuses] == [common.SUCCESS]
    moved = goalstates.Port(b1.name, BLUE, host, b1.ip, "fa:16:3e:00:00:99", id=b1.id)
    agent.dp.calls.clear()
    reply = agent.push_v2(goalstates.per_host([moved])[host])
    assert [s.operation_status for s in reply.operation_statuses] == [common.SUCCESS]
    assert agent.ports[b1.id].mac == "fa:16:3e:00:00:99"
    texts = [" ".join(c) for c in agent.dp.calls]
    gone = next(i for i, t in enumerate(texts) if "netns del ce.x.b1" in t)
    made = next(i for i, t in enumerate(texts) if "netns add ce.x.b1" in t and "fa:16:3e:00:00:99" in t)
    assert "del-port" in texts[0] and gone < made  # the old VM went before the new one was made
    for op, device, expected in ((common.UPDATE, "vm-1", common.INVALID_ARG), (common.INFO, "vm-1", common.FAILURE),
                                 (common.GET, "vm-1", common.FAILURE), (common.UPDATE, "", common.SUCCESS)):
        state = goalstates.port_state(moved, op)
        state.configuration.device_id = device
        state.configuration.device_owner = device
        gs = goalstate_pb2.GoalStateV2()
        gs.port_states[moved.id].CopyFrom(state)
        (status,) = agent.push_v2(gs).operation_statuses
        assert status.operation_status == expected, (op, device)
    assert b1.id not in agent.ports  # the unbinding UPDATE removed it
    info = goalstate_pb2.GoalStateV2()
    info.neighbor_states[PORTS[1].id].CopyFrom(goalstates.neighbor_state(PORTS[1], common.INFO))
    agent.push_v2(info)
    assert PORTS[1].id in agent.neighbors


def test_neighbours_on_this_host_are_skipped_and_deletes_remove_flows(agent):
    agent.push_v2(goalstates.per_host(PORTS)["10.9.0.1"])
    local = goalstates.neighbor_state(PORTS[0])  # b1 lives here
    remote_delete = goalstates.neighbor_state(PORTS[1], common.DELETE)
    gs = goalstate_pb2.GoalStateV2()
    gs.neighbor_states[PORTS[0].id].CopyFrom(local)  # maps are keyed by resource id
    gs.neighbor_states[PORTS[1].id].CopyFrom(remote_delete)
    agent.dp.calls.clear()
    reply = agent.push_v2(gs)
    assert all(s.operation_status == common.SUCCESS for s in reply.operation_statuses)
    (call,) = agent.dp.calls
    assert call[-1].startswith("delete_strict table=20") and "dl_dst=fa:16:3e:00:00:02" in call[-1]
    assert PORTS[1].id not in agent.neighbors


def test_v1_goal_state_is_served_too(agent):
    v2 = goalstates.per_host(PORTS)["10.9.0.1"]
    v1 = goalstate_pb2.GoalState(vpc_states=v2.vpc_states.values(), subnet_states=v2.subnet_states.values(),
                                 port_states=v2.port_states.values(), neighbor_states=v2.neighbor_states.values())
    reply = agent.push_v1(v1)
    assert len(reply.operation_statuses) == 8 and len(agent.ports) == 2 and len(agent.neighbors) == 2


def test_compiler_gives_vms_addresses_macs_and_vnis():
    topo = load_text("version: 1\nname: vms\nvpcs: {blue: {vni: 1000}}\nnodes:\n  s1: {kind: switch}\n"
                     "  cn1: {kind: compute}\n  cn2: {kind: compute}\n"
                     "  a: {kind: vm, on: cn1, vpc: blue}\n  b: {kind: vm, on: cn2, vpc: blue, ip: 10.100.0.2/24}\n"
                     "  c: {kind: vm, on: cn2, vpc: green}\n"
                     "links:\n  - endpoints: [cn1, s1]\n  - endpoints: [cn2, s1]\n")
    plan = compile_topology(topo)
    vms = {v["name"]: v for v in plan.vms}
    assert vms["a"]["vni"] == 1000 and vms["c"]["vni"] == 1001  # the next free VNI
    assert vms["a"]["cidr"] == "10.100.0.0/24" and vms["a"]["gateway"] == "10.100.0.1"
    assert vms["a"]["ip"] == "10.100.0.3/24"  # .1 is the gateway, .2 is b's
    assert vms["a"]["host_ip"] == plan.node("cn1").ip.split("/")[0]
    assert len({v["mac"] for v in vms.values()}) == 3
    assert plan.node("cn1").options["compute"]["port"] == 50001


def test_flow_batch_streams_every_line_once_and_reports_failure(tmp_path):
    """Lines reach the flow program in order, across chunks; a failing program fails the batch; abort ends it."""
    from emulator.alcor.dataplane import DataplaneError, FlowBatch

    out = tmp_path / "flows.txt"
    dp = OvsDataplane()
    dp.FLOWS_ARGV = ["sh", "-c", f"cat > {out}"]
    batch = FlowBatch(dp)
    batch.CHUNK = 3
    lines = [f"line{i}" for i in range(10)]
    for i in range(0, 10, 2):
        batch.add(lines[i:i + 2])
    batch.commit()
    assert out.read_text().splitlines() == lines

    dp.FLOWS_ARGV = ["sh", "-c", "cat > /dev/null; echo bad flow >&2; exit 1"]
    failing = FlowBatch(dp)
    failing.add(["x"])
    with pytest.raises(DataplaneError, match="bad flow"):
        failing.commit()

    dp.FLOWS_ARGV = ["sleep", "60"]
    hanging = FlowBatch(dp)
    hanging.CHUNK = 1
    hanging.add(["x"])
    hanging.abort()
    assert hanging.proc.returncode is not None


def test_region_generator_makes_compute_nodes_and_alcor_region_plans():
    from emulator.topology.loader import load_file
    from tests.conftest import ROOT

    topo = load_text("version: 1\nname: r\ntopology: {generator: region, racks: 2, hosts_per_rack: 3, spines: 1, "
                     "uplinks: 1, compute: 1}\n")
    assert topo.only_bulk()
    plan = compile_topology(topo)
    computes = [n for n in plan.nodes if "compute" in n.options]
    assert [n.name for n in computes] == [f"cn{i}" for i in range(1, 7)]
    assert computes[0].options["compute"]["dir"] == "/run/cloudemu/r/cn1"
    region = compile_topology(load_file(ROOT / "topologies" / "alcor-region.yaml"))
    services = {n.name: n.options["service"] for n in region.nodes if "service" in n.options}
    assert len(services) == 10 and all("ignite" in s["depends_on"] or n in ("ignite", "api_gateway")
                                       for n, s in services.items())
    assert sum("compute" in n.options for n in region.nodes) == 16 and region.provisioner == "docker"


def test_preflight_names_what_compute_nodes_miss(monkeypatch):
    from emulator.compiler.plan import PlanNode
    from provisioners import computenodes

    node = PlanNode("cn1", "host", options={"compute": {"agent": "builtin"}})
    assert computenodes.problems([]) == []
    real = computenodes.importlib.util.find_spec
    monkeypatch.setattr(computenodes.importlib.util, "find_spec", lambda m: None if m == "grpc" else real(m))
    monkeypatch.setattr(computenodes.shutil, "which", lambda tool: None)
    found = computenodes.problems([node])
    assert any("openvswitch-switch" in p for p in found) and any("grpc in" in p and "pip install" in p for p in found)


def test_agent_answers_failure_for_kinds_it_does_not_program_and_reports_only_acas_kinds_unless_asked(agent):
    """Gateways are not emulated: FAILURE under their kind, never SUCCESS (a router without id, revision or subnets and
    a DHCP entry without MAC are refused: INVALID_ARG; a security group of no rules is kept: SUCCESS). A V2 reply lists
    ports, routers and DHCP only, as ACA's; `all_statuses` lists every resource."""
    gs = goalstate_pb2.GoalStateV2()
    for table, rid in ((gs.security_group_states, "sg1"), (gs.gateway_states, "gw1"), (gs.dhcp_states, "dh1"),
                       (gs.router_states, "rt1"), (gs.vpc_states, "vpc1")):
        table[rid].operation_type = common.CREATE
    reply = agent.push_v2(gs)
    assert {s.resource_id: s.resource_type for s in reply.operation_statuses} == {"dh1": common.DHCP,
                                                                                 "rt1": common.ROUTER}
    everything = Agent(RecordingDataplane(), "10.9.0.1", "ce.x.", all_statuses=True)
    reply = everything.push_v2(gs)
    kinds = {s.resource_id: s.resource_type for s in reply.operation_statuses}
    assert kinds == {"sg1": common.SECURITYGROUP, "gw1": common.GATEWAY, "dh1": common.DHCP, "rt1": common.ROUTER,
                     "vpc1": common.VPC}
    outcome = {s.resource_id: s.operation_status for s in reply.operation_statuses}
    assert outcome == {"sg1": common.SUCCESS, "gw1": common.FAILURE, "dh1": common.INVALID_ARG, "rt1": common.INVALID_ARG,
                       "vpc1": common.SUCCESS}  # a VPC state only feeds lookups: recorded is done
    assert agent.failures == everything.failures == 3


def test_compute_nodes_get_every_peers_underlay_address_and_mac_and_keep_those_of_their_subnet(tmp_path):
    from emulator.alcor import node
    from provisioners import computenodes

    plan = compile_topology(load_text("""version: 1
name: peers
defaults: {subnet: 10.201.0.0/24}
nodes:
  tor: {kind: switch}
  cn1: {kind: compute}
  cn2: {kind: compute}
  h1: {kind: host}
links:
  - endpoints: [cn1, tor]
  - endpoints: [cn2, tor]
  - endpoints: [h1, tor]
"""))
    text = computenodes.underlay_peers(plan)
    ends = {e.node: e for link in plan.links for e in (link.a, link.b)}
    assert text == "".join(f"{ends[n].ip.split('/')[0]} {ends[n].mac}\n" for n in ("cn1", "cn2"))  # not h1
    peers = tmp_path / "peers"
    peers.write_text(text + "10.99.0.7 02:00:00:00:00:07\n")  # off the subnet: not on-link, skipped
    dp = RecordingDataplane()
    cn1 = ends["cn1"].ip.split("/")[0]
    assert node.static_peers(dp, "br-phy", (cn1, 24, 1500, ends["cn1"].mac), peers) == 1
    cn2 = ends["cn2"]
    assert dp.calls[0][-1] == f"neigh replace {cn2.ip.split('/')[0]} lladdr {cn2.mac} dev br-phy nud permanent\n"
    assert node.static_peers(dp, "br-phy", (cn1, 24, 1500, ""), tmp_path / "missing") == 0


def test_streams_keep_every_agent_open_and_at_most_concurrency_messages_in_flight(tmp_path):
    """Real gRPC over unix sockets to stand-in agents: paced streams (one message, a pause, another) to six
    agents with two messages in flight: every agent gets its first message before any gets its second."""
    import threading
    import time

    from emulator.alcor import controller, server

    holding, most, arrivals, lock = [0], [0], [], threading.Lock()

    class SlowAgent:
        def __init__(self, host: str):
            self.host = host

        def push_v2(self, gs):
            with lock:
                holding[0] += 1
                most[0] = max(most[0], holding[0])
                arrivals.append(self.host)
            time.sleep(0.05)
            with lock:
                holding[0] -= 1
            reply = goalstateprovisioner_pb2.GoalStateOperationReply(format_version=1, message_total_operation_time=7)
            reply.operation_statuses.add(resource_id="fine", operation_status=common.SUCCESS)
            reply.operation_statuses.add(resource_id=f"bad-{self.host}", operation_status=common.INVALID_ARG)
            return reply

    def paced():
        yield goalstate_pb2.GoalStateV2()
        time.sleep(1.0)
        yield goalstate_pb2.GoalStateV2()
    hosts = [f"10.9.0.{i}" for i in range(1, 7)]
    servers = [server.serve(SlowAgent(h), f"unix:{tmp_path}/{h}.sock", workers=2) for h in hosts]
    try:
        done: list[str] = []
        pushed = controller.streams({h: f"unix:{tmp_path}/{h}.sock" for h in hosts}, {h: paced() for h in hosts},
                                    concurrency=2, on_stream_done=lambda h, result: done.append(h))
    finally:
        for s in servers:
            s.stop(0)
    assert len(pushed) == 12 and all(p.agent_us == 7 for p in pushed) and sorted(done) == hosts
    assert all(p.failed == [f"bad-{p.host} (INVALID_ARG)"] for p in pushed)  # read from the reply kept whole
    assert most[0] == 2
    assert sorted(arrivals[:6]) == hosts  # no stream waited for another to end


def test_the_agent_runs_over_a_recording_data_plane_without_patching_anything():
    """The agent only decides; a data plane that records is enough to test it (and is what a hollow compute
    node will be): VMs on their VPC's VLAN, one flow bundle per message, deletes remove, flows per neighbour."""
    from emulator.alcor.dataplane import RecordingDataplane

    dp = RecordingDataplane()
    dp.setup()
    agent = Agent(dp, "10.9.0.1", "ce.x.")
    reply = agent.push_v2(goalstates.per_host(PORTS)["10.9.0.1"])
    assert {s.operation_status for s in reply.operation_statuses} == {common.SUCCESS}
    mine = {p.id: p for p in PORTS if p.host_ip == "10.9.0.1"}
    assert set(dp.vms) == set(mine)
    assert {dp.vms[pid].vlan for pid in mine} == {agent.vlans[1001], agent.vlans[1002]}
    assert dp.vms[PORTS[0].id].port.netns == "ce.x.b1" and dp.vms[PORTS[0].id].gateway == BLUE.gateway
    assert [c[0] for c in dp.calls] == ["make", "configure"]
    assert sum("table=20,priority=1" in f for f in dp.flows) == 2  # b2 and r3 live elsewhere: one encapsulation each
    gone = goalstates.per_host([PORTS[0]], op=common.DELETE)["10.9.0.1"]
    agent.push_v2(gone)
    assert PORTS[0].id not in dp.vms and dp.calls[-1] == ("remove", PORTS[0].id)


def test_the_controller_counts_pending_apart_from_failures():
    from emulator.alcor.controller import Pushed

    reply = goalstateprovisioner_pb2.GoalStateOperationReply()
    for rid, status in (("ok", common.SUCCESS), ("vif", common.PENDING), ("bad", common.INVALID_ARG)):
        reply.operation_statuses.add(resource_id=rid, operation_status=status)
    pushed = Pushed("10.0.0.1", 0.0, 0.1, 5, reply)
    assert pushed.failed == ["bad (INVALID_ARG)"] and pushed.pending == ["vif"]


def test_a_vnis_decapsulation_goes_with_its_last_port_and_its_vlan_is_taken_again():
    """As ACA: table 4's flow comes with the VNI's first port here and goes with its last; the VLAN, once nothing
    here uses it, is the next VNI's."""
    from emulator.alcor.dataplane import RecordingDataplane

    dp = RecordingDataplane()
    dp.setup()
    agent = Agent(dp, "10.9.0.1", "ce.x.")
    agent.push_v2(goalstates.per_host([PORTS[0], PORTS[2]])["10.9.0.1"])  # b1 (blue), r1 (red)
    assert sum(f.startswith(("add cookie=0xace,table=4,", "cookie=0xace,table=4,priority=1")) for f in dp.flows) == 2
    red_vlan = agent.vlans[1002]
    neighbour = goalstate_pb2.GoalStateV2()  # a blue neighbour keeps blue's VLAN in use once b1 goes
    neighbour.neighbor_states[PORTS[1].id].CopyFrom(goalstates.neighbor_state(PORTS[1]))
    agent.push_v2(neighbour)
    for gone in (PORTS[0], PORTS[2]):
        agent.push_v2(goalstates.per_host([gone], op=common.DELETE)["10.9.0.1"])
    assert f"delete_strict table=4,priority=1,tun_id={1001:#x}" in dp.flows
    assert f"delete_strict table=4,priority=1,tun_id={1002:#x}" in dp.flows
    assert 1001 in agent.vlans and 1002 not in agent.vlans and agent.decap == set()
    green = goalstates.Port("g1", goalstates.Vpc("green", 1003, "10.3.0.0/24"), "10.9.0.1", "10.3.0.11",
                            "fa:16:3e:00:00:09")
    agent.push_v2(goalstates.per_host([green])["10.9.0.1"])
    assert agent.vlans[1003] == red_vlan and dp.flows[-1] == f"add cookie=0xace,table=4,priority=1,tun_id={1003:#x}," \
                                                               f"actions=mod_vlan_vid:{red_vlan},output:1"


def test_a_neighbours_vni_is_its_subnets_in_the_same_message_as_aca_reads_it(agent):
    """ACA ignores the fixed IP's tunnel id when the message has the subnet; without the subnet in the message,
    cloudemu falls back to the fixed IP's (then to a subnet from an earlier message)."""
    gs = goalstates.per_host(PORTS)["10.9.0.1"]
    entry = gs.neighbor_states[PORTS[1].id]  # b2, of blue (1001)
    entry.configuration.fixed_ips[0].tunnel_id = 4242
    agent.push_v2(gs)
    assert agent.neighbors[PORTS[1].id].vni == 1001
    alone = goalstate_pb2.GoalStateV2()
    alone.neighbor_states[PORTS[1].id].CopyFrom(entry)
    agent.push_v2(alone)
    assert agent.neighbors[PORTS[1].id].vni == 4242


def test_every_ipv4_fixed_ip_of_a_neighbour_is_answered_as_aca_loops_over_them(agent):
    gs = goalstates.per_host(PORTS)["10.9.0.1"]
    entry = gs.neighbor_states[PORTS[1].id]
    entry.configuration.fixed_ips.add(subnet_id=BLUE.subnet_id, ip_address="10.1.0.99")
    entry.configuration.fixed_ips.add(subnet_id=BLUE.subnet_id, ip_address="fd00::9")  # IPv6: none of ours
    agent.dp.calls.clear()
    agent.push_v2(gs)
    text = agent.dp.calls[0][-1]
    assert "arp_tpa=10.1.0.12," in text and "arp_tpa=10.1.0.99," in text and "fd00" not in text
    gone = goalstate_pb2.GoalStateV2()
    gone.neighbor_states[PORTS[1].id].CopyFrom(goalstates.neighbor_state(PORTS[1], common.DELETE))
    agent.dp.calls.clear()
    agent.push_v2(gone)
    assert "arp_tpa=10.1.0.99" in agent.dp.calls[0][-1]  # removed with it
