"""Goal states are untrusted (they arrive over the emulated network): a fuzz of hostile ids, names, MACs,
addresses, CIDRs and VNIs is refused, reaches no command, and the agent still programs a legitimate port."""

import random

import pytest

from emulator.alcor import goalstates
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import DataplaneError
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from emulator.runtime import tokens
from tests.unit.test_alcor import RecordingDataplane

BLUE = goalstates.Vpc("blue", 1001, "10.1.0.0/24")
HOST = "10.9.0.1"
#: Words that would split or end a command if they reached batch text or a shell.
PAYLOADS = ["a\nl d eth0", "x\n", "\nnetns del ce", "a b", "a;touch /tmp/pwned", "$(reboot)", "`id`", "a'b", 'a"b',
            "a#b", "a\\nb", "../../etc", "/", "a\x00b", "a\rb", "a\tb", "é", "-", ".", "..", "x" * 300,
            "a,b=c", "--", "-rf"]


@pytest.fixture
def agent(monkeypatch):
    monkeypatch.setattr("emulator.alcor.dataplane.nsconfig.configure", lambda configs: None)
    made = Agent(RecordingDataplane(), HOST, "ce.x.")
    made.push_v2(goalstates.per_host([goalstates.Port("seed", BLUE, HOST, "10.1.0.2", "fa:16:3e:00:00:02")])[HOST])
    made.dp.calls.clear()
    return made


def legit(i: int) -> goalstates.Port:
    return goalstates.Port(f"p{i}", BLUE, HOST, f"10.1.0.{10 + i % 200}", f"fa:16:3e:00:01:{i % 256:02x}")


def hostile_port(rng: random.Random, i: int) -> tuple[goalstate_pb2.GoalStateV2, str]:
    """A message whose one port (or its subnet) carries one hostile field; returns it and the payload."""
    payload = rng.choice(PAYLOADS)
    field = rng.choice(["id", "mac", "ip", "cidr", "gateway", "vni", "subnet_id"])
    port = legit(i)
    gs = goalstates.per_host([port])[HOST]
    (state,) = gs.port_states.values()
    cfg = state.configuration
    subnet = next(iter(gs.subnet_states.values())).configuration
    if field == "id":
        del gs.port_states[cfg.id]
        cfg.id = payload
        cfg.name = payload  # no plain name: the tap and namespace would come from the id
        gs.port_states[payload].CopyFrom(state)
        gs.port_states[payload].configuration.id = payload
    elif field == "mac":
        cfg.mac_address = rng.choice(["fa:16:3e:00:00:09\n", "fa:16:3e:00:00:09" + payload, payload])
    elif field == "ip":
        cfg.fixed_ips[0].ip_address = rng.choice(["10.1.0.9\nl d eth0", "10.1.0.999", payload])
    elif field == "cidr":
        subnet.cidr = rng.choice(["10.1.0.0/33", "garbage", "fd00::/64", payload])
        payload = subnet.cidr
    elif field == "gateway":
        subnet.gateway.ip_address = rng.choice(["10.1.0.1\nl d eth0", "not-an-ip", payload])
        payload = subnet.gateway.ip_address
    elif field == "vni":
        subnet.tunnel_id = rng.choice([1 << 24, (1 << 64) - 1, 1 << 40])
        payload = str(subnet.tunnel_id)
    else:
        cfg.fixed_ips[0].subnet_id = payload
    # the subnet of a hostile message is a new one: no port may lean on the legitimate subnet learnt before
    new_subnet = f"sn-{i}"
    gs.subnet_states[new_subnet].CopyFrom(gs.subnet_states[subnet.id])
    gs.subnet_states[new_subnet].configuration.id = new_subnet
    del gs.subnet_states[subnet.id]
    if field != "subnet_id":
        gs.port_states[next(iter(gs.port_states))].configuration.fixed_ips[0].subnet_id = new_subnet
    del gs.host_resources[HOST]  # it lists the ids before renaming: without it, the agent takes all
    return gs, payload


def hostile_neighbour(rng: random.Random, i: int) -> tuple[goalstate_pb2.GoalStateV2, str]:
    payload = rng.choice(PAYLOADS)
    field = rng.choice(["mac", "ip", "host", "vni"])
    remote = goalstates.Port(f"n{i}", BLUE, "10.9.0.7", f"10.1.1.{i % 250}", "fa:16:3e:00:02:01")
    state = goalstates.neighbor_state(remote)
    cfg = state.configuration
    if field == "mac":
        cfg.mac_address = "fa:16:3e:00:02:01\n" if rng.random() < 0.5 else payload
    elif field == "ip":
        cfg.fixed_ips[0].ip_address = "10.1.1.1\n" + payload
    elif field == "host":
        cfg.host_ip_address = "10.9.0.7\n" + payload
    else:
        cfg.fixed_ips[0].tunnel_id = rng.choice([1 << 24, (1 << 32) - 1])
        payload = str(cfg.fixed_ips[0].tunnel_id)
    gs = goalstate_pb2.GoalStateV2()
    gs.neighbor_states[remote.id].CopyFrom(state)
    return gs, payload


def commands_text(calls) -> str:
    return "\0".join("\0".join(c) for c in calls)


def test_a_fuzz_of_hostile_goal_states_is_refused_and_runs_nothing(agent):
    rng = random.Random(20261202)
    tried = 0
    for i in range(400):
        gs, payload = (hostile_port if i % 3 else hostile_neighbour)(rng, i)
        agent.dp.calls.clear()
        failures = agent.failures
        reply = agent.push_v2(gs)  # raises nothing: a reply for every message
        tried += 1
        assert agent.failures == failures + 1, (payload, reply)  # neighbours have no status in a V2 reply (ACA)
        mine = [s for s in reply.operation_statuses if s.resource_type in (common.PORT, common.NEIGHBOR)]
        assert all(s.operation_status in (common.INVALID_ARG, common.FAILURE) for s in mine), (payload, reply)
        assert len(mine) == (1 if i % 3 else 0)
        ran = commands_text(agent.dp.calls)
        assert payload not in ran or payload in ("-", ".", "--"), (payload, agent.dp.calls)
        assert not any(c for c in agent.dp.calls if c[0] in ("ip", "ovs-vsctl", "links up")), agent.dp.calls
    assert tried == 400
    assert len(agent.ports) == 1  # the seed port alone
    # and a legitimate port afterwards is programmed as ever
    reply = agent.push_v2(goalstates.per_host([legit(999)])[HOST])
    assert {s.operation_status for s in reply.operation_statuses} == {common.SUCCESS}
    assert [c[0] for c in agent.dp.calls] == ["ip", "ovs-vsctl", "links up"]


def test_names_never_come_from_unchecked_text_and_never_collide(agent):
    """A port named like another port's namespace, or whose id shares another's tap name, is refused."""
    first = legit(1)
    agent.push_v2(goalstates.per_host([first])[HOST])
    twin = goalstates.per_host([legit(2)])[HOST]
    (state,) = twin.port_states.values()
    state.configuration.name = first.name  # the same VM namespace as p1
    reply = agent.push_v2(twin)
    assert [s.operation_status for s in reply.operation_statuses if s.resource_type == common.PORT] == [common.INVALID_ARG]


def test_the_token_gate_refuses_separators_and_quotes():
    for bad in ["a\nb", "a\rb", "a\x00b"]:
        with pytest.raises(tokens.UnsafeToken):
            tokens.batch_text(["link add x type dummy", f"link del {bad}"], "ip")
        with pytest.raises(tokens.UnsafeToken):
            tokens.argv_words(["ovs-vsctl", bad])
    for bad in ['a"b', "a'b", "a#b", "a\\b"]:
        with pytest.raises(tokens.UnsafeToken):
            tokens.batch_text([f"netns add {bad}"], "ip")
    assert tokens.batch_text(["netns add a", "netns add b"], "ip") == "netns add a\nnetns add b\n"
    for bad in ["x\n", "", "../etc", "a b", "a/b", "-x"]:
        with pytest.raises(tokens.UnsafeToken):
            tokens.identifier(bad)


def test_a_failed_flow_bundle_fails_its_ports_and_a_retry_programs_them(agent):
    """Nothing is SUCCESS that is not on the data plane, and nothing half-made blocks the retry."""
    real_run = agent.dp.run

    def failing(argv, text=None):
        if argv[0] == "ovs-ofctl":
            raise DataplaneError("ovs-ofctl failed: boom")
        return real_run(argv, text)
    red = goalstates.Vpc("red", 1002, "10.2.0.0/24")
    port = goalstates.Port("r1", red, HOST, "10.2.0.5", "fa:16:3e:00:03:01")
    agent.dp.run = failing
    reply = agent.push_v2(goalstates.per_host([port])[HOST])
    statuses = {s.resource_id: s.operation_status for s in reply.operation_statuses if s.resource_type == common.PORT}
    assert statuses == {port.id: common.FAILURE}
    assert port.id not in agent.ports and 1002 not in agent.vlans
    agent.dp.run = real_run
    agent.dp.calls.clear()
    reply = agent.push_v2(goalstates.per_host([port])[HOST])
    assert {s.operation_status for s in reply.operation_statuses} == {common.SUCCESS}
    assert "tun_id=0x3ea" in agent.dp.calls[0][-1]  # the VNI's flow comes with the retry


def test_failed_vm_links_are_removed_so_that_a_retry_works(agent):
    real_run = agent.dp.run
    failed_once = []

    def failing(argv, text=None):
        if argv[:2] == ["ip", "-batch"] and not failed_once:
            failed_once.append(text)
            raise DataplaneError("ip failed: File exists")
        return real_run(argv, text)
    agent.dp.run = failing
    reply = agent.push_v2(goalstates.per_host([legit(5)])[HOST])
    assert [s.operation_status for s in reply.operation_statuses if s.resource_type == common.PORT] == [common.FAILURE]
    undo = [c for c in agent.dp.calls if c[:3] == ("ip", "-force", "-batch")]
    assert undo and "netns del ce.x.p5" in undo[0][-1]
    reply = agent.push_v2(goalstates.per_host([legit(5)])[HOST])
    assert {s.operation_status for s in reply.operation_statuses} == {common.SUCCESS}
