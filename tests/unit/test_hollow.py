"""Hollow compute nodes: the agent's core behind the pack's own HTTP/2 gRPC server, driven by grpcio clients
(as Alcor's controller would) over the pack's unix socket, each call naming its node."""

import asyncio
import threading

import grpc
import pytest

from emulator.alcor import goalstates, hollow
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import RecordingDataplane
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.alcor.server import CHANNEL_OPTIONS
from tests import fidelity

NODES = {"10.7.0.1": "cn1", "10.7.0.2": "cn2", "10.7.0.3": "cn3"}


@pytest.fixture
def pack(tmp_path):
    made = hollow.Pack("ce.x.")
    for ip, name in NODES.items():
        made.add(name, ip)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run():
        loop.run_until_complete(hollow.start(made, None, tmp_path))
        started.set()
        loop.run_forever()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield made, f"unix:{tmp_path}/agent.sock"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def stub(target: str, node_ip: str):
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS + [("grpc.default_authority", f"{node_ip}:50001")])
    return channel, rpc.GoalStateProvisionerStub(channel)


def test_each_call_reaches_the_node_it_names(pack):
    made, target = pack
    vpc = goalstates.Vpc("v", 1001, "10.200.0.0/24")
    ports = [goalstates.Port(f"p{i}", vpc, ip, f"10.200.0.{10 + i}", f"fa:16:3e:00:00:{i:02x}")
             for i, ip in enumerate(NODES)]
    for ip, gs in goalstates.per_host(ports).items():
        channel, s = stub(target, ip)
        with channel:
            (reply,) = list(s.PushGoalStatesStream(iter([gs]), timeout=30))
        assert {st.operation_status for st in reply.operation_statuses} == {common.SUCCESS}
    for ip, name in NODES.items():
        node = made.nodes[ip]
        assert node.name == name and list(node.agent.ports) == [p.id for p in ports if p.host_ip == ip]
        assert len(node.agent.neighbors) == 2 and node.messages == 1
    assert made.summary()["ports"] == 3
    state = made.nodes["10.7.0.2"].state()
    assert state["node"] == "cn2" and list(state["ports"]) == [ports[1].id]
    assert state["ports"][ports[1].id] == {"vni": 1001, "mac": "fa:16:3e:00:00:01", "ip": "10.200.0.11/24"}
    assert state["neighbours"] == 2 and len(state["flows"]) == len(hollow.BASE_FLOWS) + 5  # VNI, 2 x (encap, ARP)


def test_a_hollow_node_answers_as_the_agent_does_for_a_long_sequence(pack):
    """240 goal states (creates, repeats, deletes, neighbours, hostile ones) over one stream give the statuses
    and the flows of the agent's core over a recording data plane, message by message."""
    made, target = pack
    messages = fidelity.sequence(["10.7.0.9", "10.7.0.10"])
    reference = Agent(RecordingDataplane(), "10.7.0.2", "ce.x.")
    reference.dp.setup()
    channel, s = stub(target, "10.7.0.2")
    with channel:
        replies = list(s.PushGoalStatesStream(iter(messages), timeout=120))
    assert len(replies) == len(messages) == 240
    kinds = set()
    for gs, reply in zip(messages, replies, strict=True):
        expected = reference.push_v2(gs)
        assert fidelity.statuses(reply) == fidelity.statuses(expected)
        kinds |= {st.operation_status for st in reply.operation_statuses}
    assert {common.SUCCESS, common.INVALID_ARG} <= kinds  # the sequence did exercise both
    node = made.nodes["10.7.0.2"]
    assert sorted(node.agent.ports) == sorted(reference.ports) and sorted(node.agent.neighbors) == sorted(reference.neighbors)
    # the model's flows, written out, are what the recorded text bundles leave once deletes are applied
    replayed = hollow.ModelDataplane()
    replay = replayed.flow_sink()
    replay.add(reference.dp.flows[len(hollow.BASE_FLOWS):])
    replay.commit()
    assert len(replayed.table) > 20 and not replayed.encaps  # text in, text kept
    assert node.agent.dp.encaps and node.agent.dp.arps  # the hollow node kept its neighbours as entries
    assert sorted(node.agent.dp.flows()) == sorted(replayed.flows())  # a table has no order
    assert made.nodes["10.7.0.1"].messages == 0  # the other nodes saw nothing


def test_bad_calls_get_grpc_errors_and_the_pack_keeps_answering(pack):
    made, target = pack
    channel, s = stub(target, "10.7.0.99")  # no such node here
    with channel, pytest.raises(grpc.RpcError) as unknown:
        list(s.PushGoalStatesStream(iter([goalstate_pb2.GoalStateV2()]), timeout=10))
    assert unknown.value.code() == grpc.StatusCode.UNAVAILABLE
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "10.7.0.1:50001")])
    garbage = channel.stream_stream("/alcor.schema.GoalStateProvisioner/PushGoalStatesStream",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with channel, pytest.raises(grpc.RpcError) as bad:
        list(garbage(iter([b"\xff\xff\xff\xff not a protobuf"]), timeout=10))
    assert bad.value.code() == grpc.StatusCode.INTERNAL
    missing = grpc.insecure_channel(target, options=[("grpc.default_authority", "10.7.0.1:50001")])
    with missing, pytest.raises(grpc.RpcError) as none:
        missing.unary_unary("/alcor.schema.GoalStateProvisioner/Nothing")(b"", timeout=10)
    assert none.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel, s = stub(target, "10.7.0.1")
    with channel:
        reply = s.PushNetworkResourceStates(goalstate_pb2.GoalState(), timeout=10)  # v1, unary, empty: answered
    assert reply.format_version == 1 and made.nodes["10.7.0.1"].messages == 1


HOLLOW_FILE = """version: 1
name: packs
defaults: {subnet: 10.93.0.0/16}
nodes:
  s1: {kind: switch}
  s2: {kind: switch}
  cn1: {kind: compute}
  cn2: {kind: compute, agent: hollow}
  cn3: {kind: compute, agent: hollow}
  h1: {}
links:
  - endpoints: [cn1, s1]
  - endpoints: [cn2, s2]
  - endpoints: [cn3, s1]
  - endpoints: [h1, s2]
  - endpoints: [s1, s2]
"""


def test_the_compiler_packs_hollow_nodes_without_a_namespace_or_link_each():
    from emulator.compiler.compile import compile_topology
    from emulator.topology.loader import load_text

    plan = compile_topology(load_text(HOLLOW_FILE))
    names = {n.name: n for n in plan.nodes}
    assert "cn2" not in names and "cn3" not in names and "cn1" in names
    (pack,) = [n for n in plan.nodes if "hollow" in n.options]
    assert pack.options["hollow"]["nodes"] == [["cn2", "10.93.0.2/16"], ["cn3", "10.93.0.3/16"]]
    assert pack.ip == "10.93.0.2/16" and pack.netns == f"ce.{plan.experiment}.{pack.name}"
    assert not [lk for lk in plan.links if {"cn2", "cn3"} & {lk.a.node, lk.b.node}]
    (link,) = [lk for lk in plan.links if lk.a.node == pack.name]
    assert link.b.node == "s2" and link.a.ip == pack.ip  # its first node's switch
    assert len(link.b.dev) <= 15


def test_a_hollow_region_has_its_full_racks_spread_and_weighs_hollow_nodes_lightly():
    from emulator.compiler.graph import graph_of
    from emulator.compiler.placement import Capacity
    from emulator.model import Cluster, Machine
    from emulator.topology.loader import load_text

    text = ("version: 1\nname: reg\ndefaults: {subnet: 10.80.0.0/12}\n"
            "topology: {generator: region, racks: 10, hosts_per_rack: 5, spines: 2, uplinks: 2, compute: hollow, "
            "full_racks: 3}\n")
    topo = load_text(text)
    (bulk,) = topo.bulk
    kinds = dict(zip(bulk.names, bulk.kinds, strict=True))
    full = sorted((n for n, k in kinds.items() if k == "compute"), key=lambda n: int(n[2:]))
    assert full == ["cn1", "cn26", "cn46"]  # the first host of racks 1, 6 and 10
    assert sum(k == "hollow" for k in kinds.values()) == 47
    graph = graph_of(topo)
    cap = Capacity(graph, Cluster("c", [Machine("a")]))
    slots = dict(zip(graph.names, cap.demand[:, 0], strict=True))
    memory = dict(zip(graph.names, cap.demand[:, 2], strict=True))
    assert slots["cn2"] < 0.1 and slots["cn1"] == slots["t1"] == 1.0
    assert memory["cn2"] < 1 < memory["cn1"]
    with pytest.raises(Exception, match="full_racks"):
        load_text(text.replace("full_racks: 3", "full_racks: 11"))


def test_the_load_clients_own_http2_gets_the_same_replies_as_grpcio(pack):
    """controller.push_each (asyncio + h2, one connection per node, bounded) against the pack: every node's
    message answered in order, a large message (5,000 neighbours) through flow control, an unknown node an error."""
    from emulator.alcor import controller
    from emulator.alcor.errors import AgentError

    made, target = pack
    vpc = goalstates.Vpc("w", 1002, "10.201.0.0/16")
    ports = [goalstates.Port(f"q{i}", vpc, ip, f"10.201.0.{10 + i}", f"fa:16:3e:00:01:{i:02x}") for i, ip in enumerate(NODES)]
    far = [goalstates.Port(f"f{i}", vpc, "10.7.9.9", f"10.201.{1 + i // 250}.{1 + i % 250}",
                           f"fa:16:3e:02:{i // 256:02x}:{i % 256:02x}") for i in range(5000)]
    messages = {ip: [gs] for ip, gs in goalstates.per_host(ports).items()}
    big = goalstates.per_host([ports[0], *far])[ports[0].host_ip]  # 1 port + 5,002 neighbours
    messages[ports[0].host_ip] += [big] * 3  # one connection: its window opened for each large message in turn
    pushed = controller.push_each({ip: target for ip in NODES}, messages, connections=2)
    assert len(pushed) == 6 and all(p.failed == [] for p in pushed)
    assert max(p.reply.ByteSize() for p in pushed) < 1000  # as ACA's: a status for the port, none per neighbour
    assert made.nodes[ports[0].host_ip].messages == 4 and len(made.nodes[ports[0].host_ip].agent.neighbors) == 5002
    with pytest.raises(AgentError, match="10.7.0.77"):
        controller.push_each({"10.7.0.77": target}, {"10.7.0.77": [messages[ports[1].host_ip][0]]})


def test_a_packs_link_fits_through_the_tunnels_as_every_link_does():
    from emulator.compiler.compile import compile_cluster
    from emulator.model import Cluster, Machine
    from emulator.topology.loader import load_text

    pins = {"  s1: {kind: switch}": "  s1: {kind: switch, machine: a}",
            "  s2: {kind: switch}": "  s2: {kind: switch, machine: b}",
            "  cn2: {kind: compute, agent: hollow}": "  cn2: {kind: compute, agent: hollow, machine: b}",
            "  cn3: {kind: compute, agent: hollow}": "  cn3: {kind: compute, agent: hollow, machine: a}"}
    text = HOLLOW_FILE
    for old, new in pins.items():
        text = text.replace(old, new)
    compiled = compile_cluster(load_text(text), Cluster("c", [Machine("a", mtu=1500), Machine("b", mtu=1500)]))
    plans = [compiled.plan(m) for m in range(2)]
    assert any(p.tunnels for p in plans)  # s1-s2 crosses machines
    pack_links = [lk for p in plans for lk in p.links if lk.a.node.startswith("hollow-")]
    tunnelled = {t.params.get("mtu") for p in plans for t in p.tunnels}  # what every other link here got
    assert len(pack_links) == 2 and {lk.params.get("mtu") for lk in pack_links} == tunnelled == {1450}


def test_hostile_bytes_on_the_packs_socket_close_that_connection_only(pack):
    """What arrives on a pack's socket is untrusted: HTTP/1, random bytes, a valid HTTP/2 preface followed by
    garbage frames, a connection cut mid-frame. Each ends its own connection; the pack answers a real call after."""
    import os
    import random
    import socket

    made, target = pack
    rng = random.Random(18)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    payloads = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64, preface, preface + b"\x00\x00\x04\x04"]
    payloads += [rng.randbytes(rng.randint(1, 4096)) for _ in range(40)]
    payloads += [preface + rng.randbytes(rng.randint(9, 2048)) for _ in range(40)]
    for data in payloads:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(target.removeprefix("unix:"))
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):  # the pack answers what it must (settings, GOAWAY), then closes
                    pass
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed before reading it all: also an end
    assert os.path.exists(target.removeprefix("unix:"))
    vpc = goalstates.Vpc("h", 1003, "10.202.0.0/24")
    port = goalstates.Port("after", vpc, "10.7.0.3", "10.202.0.9", "fa:16:3e:00:03:09")
    channel, s = stub(target, "10.7.0.3")
    with channel:
        (reply,) = list(s.PushGoalStatesStream(iter([goalstates.per_host([port])["10.7.0.3"]]), timeout=30))
    assert {st.operation_status for st in reply.operation_statuses} == {common.SUCCESS}
    assert made.nodes["10.7.0.3"].messages == 1


def test_a_vpc_table_sent_to_every_node_of_a_pack_is_kept_once_and_draws_the_same_flows():
    """A VPC's neighbour table, the same bytes to each node (as a controller sends it): every node holds the
    same entry objects (read once by the pack), draws its flows from its own table, and draws what a node
    that keeps every flow as OVS would (exact) holds; a later change moves a node to exact, still equal."""
    from emulator.alcor.agent import read_neighbor

    made = hollow.Pack("ce.x.")
    hosts = [f"10.7.1.{i}" for i in range(1, 4)]
    nodes = [made.add(f"cn{i}", ip) for i, ip in enumerate(hosts)]
    reference = [made.add(f"ref{i}", ip) for i, ip in enumerate(hosts)]  # same addresses, kept exact
    for ref in reference:
        ref.agent.dp.exact = True
    vpc = goalstates.Vpc("t", 1500, "10.203.0.0/16")
    own = [goalstates.Port(f"own{i}", vpc, ip, f"10.203.0.{10 + i}", f"fa:16:3e:40:00:{i:02x}") for i, ip in enumerate(hosts)]
    far = [goalstates.Port(f"n{i}", vpc, f"10.7.2.{1 + i % 200}", f"10.203.{1 + i // 250}.{1 + i % 250}",
                           f"fa:16:3e:41:{i // 256:02x}:{i % 256:02x}") for i in range(2000)]
    push = hollow.methods()[hollow.SERVICE + "PushGoalStatesStream"]
    for i, ip in enumerate(hosts):
        gs = goalstates.message_for({}, ip)
        goalstates.add(gs, ip, own[i])
        for p in [*own, *far]:  # the whole table, this node's own port too (skipped as local)
            goalstates.add(gs, ip, p, neighbor=True)
        data = gs.SerializeToString()
        for node in (nodes[i], reference[i]):
            reply = node.push(node.agent.push_v2, push.parse(data))
            assert [s.operation_status for s in reply.operation_statuses] == [common.SUCCESS]
    first = nodes[0].agent.neighbors
    assert len(first) == 2002 and not any(n.agent.dp.exact for n in nodes)
    assert all(nodes[1].agent.neighbors[k] is v for k, v in first.items() if k in nodes[1].agent.neighbors)
    assert len({id(v) for n in nodes for v in n.agent.neighbors.values()}) == 2003  # 2,000 + 3 own ports, once
    for node, ref in zip(nodes, reference, strict=True):
        assert node.agent.dp.count() == ref.agent.dp.count()
        assert sorted(node.agent.dp.flows()) == sorted(ref.agent.dp.flows())
    moved = goalstates.Port("n7", vpc, "10.7.2.250", far[7].ip, far[7].mac)  # to another host
    gone = far[8]
    gs = goalstates.message_for({}, hosts[0])
    goalstates.add(gs, hosts[0], moved, neighbor=True)
    goalstates.add(gs, hosts[0], gone, neighbor=True, op=common.DELETE)
    for node in (nodes[0], reference[0]):
        node.push(node.agent.push_v2, push.parse(gs.SerializeToString()))
    assert nodes[0].agent.dp.exact and sorted(nodes[0].agent.dp.flows()) == sorted(reference[0].agent.dp.flows())
    assert nodes[0].agent.neighbors[moved.id].host_ip == "10.7.2.250" and gone.id not in nodes[0].agent.neighbors
    assert read_neighbor(goalstates.neighbor_state(far[9])).neighbor == nodes[1].agent.neighbors[far[9].id]


def test_a_vpc_table_encoded_once_composes_the_message_a_host_would_get_built_whole():
    vpc = goalstates.Vpc("c", 1600, "10.204.0.0/16")
    ports = [goalstates.Port(f"c{i}", vpc, f"10.7.3.{1 + i % 3}", f"10.204.0.{2 + i}", f"fa:16:3e:50:00:{i:02x}")
             for i in range(9)]
    host = "10.7.3.1"
    own = goalstates.message_for({}, host)
    for p in ports:
        if p.host_ip == host:
            goalstates.add(own, host, p)
    whole = goalstate_pb2.GoalStateV2()
    whole.CopyFrom(own)
    for p in ports:
        goalstates.add(whole, host, p, neighbor=True)
    composed = goalstate_pb2.GoalStateV2.FromString(goalstates.compose(own, host, [goalstates.table(ports)]))
    assert composed.neighbor_states == whole.neighbor_states and composed.port_states == whole.port_states
    assert sorted(map(str, composed.host_resources[host].resources)) == sorted(map(str, whole.host_resources[host].resources))
    assert list(composed.host_resources) == [host] and composed.vpc_states == whole.vpc_states


@pytest.mark.parametrize("mode", ["all", "none"])
def test_alcor_load_sends_whole_vpc_tables_or_none_and_each_node_learns_what_others_mode_teaches(pack, mode):
    from emulator.alcor import load as loadtest

    made, target = pack
    targets = {ip: target for ip in NODES}
    result = loadtest.run(loadtest.LoadSpec(2, 12, neighbours=mode, samples=0), targets)
    assert result.ports == 24 and result.messages == 3 and result.errors == []
    ports = loadtest.generate_ports(loadtest.LoadSpec(2, 12), sorted(targets))
    for ip in NODES:
        node = made.nodes[ip].agent
        assert sorted(node.ports) == sorted(p.id for p in ports if p.host_ip == ip)
        others = {p.id for p in ports if p.host_ip != ip}  # both VPCs span every node here
        assert set(node.neighbors) == (others if mode == "all" else set())


def test_under_a_delay_model_a_node_answers_no_sooner_than_the_model_one_message_at_a_time(pack):
    import time

    made, target = pack
    made.model = hollow.DelayModel.from_dict({"per_message_ms": 50, "per_port_ms": 10, "per_neighbour_us": 0})
    assert made.summary()["delays"] == {"per_message_ms": 50.0, "per_port_ms": 10.0, "per_neighbour_us": 0.0}
    vpc = goalstates.Vpc("d", 1700, "10.205.0.0/24")
    messages = [goalstates.per_host([goalstates.Port(f"d{i}", vpc, "10.7.0.1", f"10.205.0.{10 + i}",
                                                     f"fa:16:3e:60:00:{i:02x}")])["10.7.0.1"] for i in range(2)]
    channel, s = stub(target, "10.7.0.1")
    with channel:
        t0 = time.monotonic()
        replies = list(s.PushGoalStatesStream(iter(messages), timeout=30))
        took = time.monotonic() - t0
    assert [r.message_total_operation_time for r in replies] == [60_000, 60_000]  # 50 ms + 1 port x 10 ms, each
    assert took >= 0.12  # the second waited for the first: one message at a time, as the agent's lock has it
    for bad in ({"per_message_ms": -1, "per_port_ms": 0, "per_neighbour_us": 0}, {"per_message_ms": "1"}, [1]):
        with pytest.raises(ValueError):
            hollow.DelayModel.from_dict(bad)


def test_placement_keeps_each_hollow_node_with_its_switch_so_every_pack_has_a_link():
    from emulator.compiler.compile import compile_cluster
    from emulator.model import Cluster, Machine
    from emulator.topology.loader import load_text

    text = ("version: 1\nname: reg\ndefaults: {subnet: 10.80.0.0/12}\n"
            "topology: {generator: region, racks: 50, hosts_per_rack: 40, spines: 2, uplinks: 2, compute: hollow, "
            "full_racks: 2}\n")
    compiled = compile_cluster(load_text(text), Cluster("c", [Machine("a"), Machine("b"), Machine("c")]))
    g, part = compiled.graph, compiled.part
    switching = g.switching()
    for a, b in zip(g.src.tolist(), g.dst.tolist(), strict=True):
        if g.hollow[a] and switching[b] or g.hollow[b] and switching[a]:
            assert part[a] == part[b], (g.names[a], g.names[b])
    plans = [compiled.plan(m) for m in range(3)]
    packs = [n for p in plans for n in p.nodes if "hollow" in n.options]
    assert packs and all(any(lk.a.node == n.name for p in plans for lk in p.links) for n in packs)
    assert len({n.machine for n in packs}) == 3


def test_a_neighbour_entry_that_does_not_parse_fails_the_call_as_a_message_that_does_not_parse(pack):
    """A pack reads neighbour entries only when the agent takes them: garbage inside one must still end the call as
    the full agent's server ends it (the whole message does not parse), not as a fault of the node."""
    from google.protobuf.message import DecodeError

    from emulator.alcor import h2client
    from emulator.runtime import processes

    made, target = pack
    good = goalstates.per_host([goalstates.Port("g", goalstates.Vpc("g", 1800, "10.206.0.0/24"), "10.7.0.1",
                                                 "10.206.0.9", "fa:16:3e:70:00:09")])["10.7.0.1"].SerializeToString()
    bad = good + bytes([7 << 3 | 2, 2, 0xFF, 0xFF])  # a neighbor_states entry whose bytes are no message
    with pytest.raises(DecodeError):
        goalstate_pb2.GoalStateV2.FromString(bad)  # what the full agent's server meets first
    answers = processes.run_async(h2client.push_all({"10.7.0.1": target}, {"10.7.0.1": [bad]}))
    assert isinstance(answers["10.7.0.1"], h2client.CallError)
    assert "gRPC status 13: the request does not parse" in str(answers["10.7.0.1"])
    assert made.nodes["10.7.0.1"].agent.ports == {}  # nothing of it was taken
