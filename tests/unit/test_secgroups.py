"""Security groups as conntrack flows: rules read from Alcor's form, port ranges as masks, a port's flows kept in step
with its groups (and with the members of a remote group)."""

from __future__ import annotations

import random

import pytest

from emulator.alcor import goalstates
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import RecordingDataplane
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, resources_pb2
from emulator.alcor.secgroups import Bound, Firewall, Rule, port_masks, read_group, rule_matches

Cfg = resources_pb2.SecurityGroupConfiguration


def covered(masks: list[str]) -> set[int]:
    out = set()
    for m in masks:
        value, mask = (int(x, 16) for x in m.split("/"))
        out |= {p for p in range(65536) if p & mask == value}
    return out


def test_a_port_range_is_covered_exactly_by_its_masks():
    assert port_masks(80, 80) == ["0x50/0xffff"] and port_masks(0, 0) == [""] and port_masks(1, 65535) != [""]
    rng = random.Random(7)
    for low, high in [(1, 65535), (1024, 2047), (8000, 8080), *((a, a + rng.randrange(3000)) for a in
                                                                  (rng.randrange(1, 60000) for _ in range(20)))]:
        high = min(high, 65535)
        assert covered(port_masks(low, high)) == set(range(low, high + 1)), (low, high)


def rule(**kw) -> Cfg.SecurityGroupRule:
    base = {"id": "r", "direction": Cfg.INGRESS, "ethertype": common.IPV4, "protocol": common.TCP}
    return Cfg.SecurityGroupRule(**{**base, **kw})


def test_rules_are_read_as_alcor_writes_them_and_refused_when_impossible():
    cfg = Cfg(id="g", security_group_rules=[
        rule(port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.7/24"),
        rule(protocol=common.HTTP), rule(protocol=common.ARP), rule(ethertype=common.IPV6),
        rule(protocol=common.ICMP, port_range_min=8, direction=Cfg.EGRESS), rule(operation_type=common.DELETE)])
    assert read_group(cfg) == [Rule(False, "tcp", 22, 22, "10.0.0.0/24", ""), Rule(False, "tcp", 80, 80, "", ""),
                               Rule(True, "icmp", 8, 0, "", "")]
    for bad in (rule(remote_ip_prefix="10.0.0.0/8,actions=NORMAL"), rule(remote_ip_prefix="10.0.0.0/8\nadd"),
                rule(port_range_min=90, port_range_max=80), rule(port_range_max=70000), rule(protocol=9),
                rule(protocol=common.ICMP, port_range_min=300), rule(remote_group_id="g,actions=drop")):
        with pytest.raises(ValueError):
            read_group(Cfg(id="g", security_group_rules=[bad]))
    assert rule_matches(Rule(True, "icmp", 8, 0, "", ""), [""]) == ["icmp,icmp_type=8"]
    assert rule_matches(Rule(False, "tcp", 80, 81, "10.1.0.0/16", ""), ["10.1.0.0/16"]) == \
        ["tcp,nw_src=10.1.0.0/16,tp_dst=0x50/0xfffe"]


def test_a_remote_group_follows_its_members_on_this_host():
    fw = Firewall()
    fw.set_group("db", [Rule(False, "tcp", 5432, 5432, "", "app")])
    fw.set_group("app", [])
    fw.flush(fw.bind("db1", Bound("fa:16:3e:00:00:01", "10.1.0.5", 1, ("db",))))
    assert not any("tp_dst" in a for a in fw.installed["db1"].values())  # no member yet: nothing allowed in
    changed = fw.bind("app1", Bound("fa:16:3e:00:00:02", "10.1.0.6", 1, ("app",)))
    assert changed == {"app1", "db1"}
    lines = fw.flush(changed)
    assert any("nw_src=10.1.0.6,tp_dst=0x1538/0xffff" in ln for ln in lines)
    gone = fw.flush(fw.bind("app1", None))
    assert any(ln.startswith("delete_strict") and "nw_src=10.1.0.6" in ln for ln in gone)
    assert "app1" not in fw.zones and set(fw.zones) == {"db1"}


def test_the_agent_filters_ports_with_groups_only_and_drops_their_flows_with_them():
    web = goalstates.SecurityGroup("web", ({"direction": "ingress", "protocol": "tcp", "ports": (80, 80),
                                            "remote": "10.5.1.0/24", "remote_group": ""},))
    vpc = goalstates.Vpc("app", 2201, "10.5.2.0/24")
    guarded = goalstates.Port("g", vpc, "10.9.0.1", "10.5.2.12", "fa:16:3e:00:00:03", groups=(web,))
    plain = goalstates.Port("p", vpc, "10.9.0.1", "10.5.2.13", "fa:16:3e:00:00:04")
    dp = RecordingDataplane()
    dp.setup()
    base = len(dp.int_flows)
    agent = Agent(dp, "10.9.0.1", "x.", all_statuses=True)
    reply = agent.push_v2(goalstates.per_host([guarded, plain])["10.9.0.1"])
    assert {s.operation_status for s in reply.operation_statuses} == {common.SUCCESS}
    made = dp.int_flows[base:]
    assert all(guarded.mac in f or "ct_zone=1" in f for f in made) and not any(plain.mac in f for f in made)
    assert any("nw_src=10.5.1.0/24,tp_dst=0x50/0xffff" in f for f in made)
    assert not any("table=71,priority=70" in f for f in made)  # no egress rule (the loader adds Neutron's default)
    agent.push_v2(goalstates.per_host([guarded], op=common.DELETE)["10.9.0.1"])
    removed = {f.removeprefix("delete_strict ") for f in dp.int_flows if f.startswith("delete_strict")}
    assert removed == {f.removeprefix("add cookie=0xace,").split(",actions=")[0] for f in made}
    hostile = goalstate_pb2.GoalStateV2()
    hostile.security_group_states["x"].CopyFrom(resources_pb2.SecurityGroupState(
        operation_type=common.CREATE, configuration=Cfg(id="x\nadd-flow", revision_number=1)))
    (status,) = agent.push_v2(hostile).operation_statuses
    assert status.operation_status == common.INVALID_ARG
