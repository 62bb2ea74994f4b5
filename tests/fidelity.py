"""One sequence of goal states for comparing two agents: creates, repeats, deletes, neighbours (new, moved,
gone) and hostile messages, addressed to no host in particular (each agent takes all of it)."""

from __future__ import annotations

import random

from emulator.alcor import goalstates
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from tests.unit.test_hostile_goal_states import hostile_neighbour, hostile_port

VPCS = [goalstates.Vpc(f"fid{i}", 2001 + i, f"10.{60 + i}.0.0/24") for i in range(3)]


def _unaddressed(gs: goalstate_pb2.GoalStateV2) -> goalstate_pb2.GoalStateV2:
    gs.ClearField("host_resources")  # without it an agent takes every resource, whatever its own address
    return gs


def sequence(remote_hosts: list[str], count: int = 240, seed: int = 20261202) -> list[goalstate_pb2.GoalStateV2]:
    """`count` messages; neighbours live on `remote_hosts` (neither agent's own address)."""
    rng = random.Random(seed)
    ports: dict[str, goalstates.Port] = {}
    neighbours: dict[str, goalstates.Port] = {}
    out = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.10:
            gs, _ = (hostile_port if rng.random() < 0.6 else hostile_neighbour)(rng, 1000 + i)
            out.append(_unaddressed(gs))
            continue
        vpc = rng.choice(VPCS)
        gs = goalstate_pb2.GoalStateV2(format_version=1)
        gs.host_resources.get_or_create("any")
        if roll < 0.40 or not ports:  # a new port (sometimes the same id again: nothing changes)
            pid = f"port{i}" if rng.random() < 0.85 or not ports else rng.choice(sorted(ports))
            port = ports.get(pid) or goalstates.Port(pid, vpc, "any", f"10.{60 + VPCS.index(vpc)}.0.{10 + i % 240}",
                                                     f"fa:16:3e:10:{i // 256:02x}:{i % 256:02x}")
            ports[pid] = port
            goalstates.add(gs, "any", port, op=common.CREATE if rng.random() < 0.8 else common.UPDATE)
        elif roll < 0.55:  # a port deleted
            pid = rng.choice(sorted(ports))
            goalstates.add(gs, "any", ports.pop(pid), op=common.DELETE)
        elif roll < 0.90:  # a few neighbours, new or moved to another host
            for _ in range(rng.randint(1, 5)):
                nid = f"nb{rng.randint(0, 60)}"
                host = rng.choice(remote_hosts)
                n = goalstates.Port(nid, vpc, host, f"10.{60 + VPCS.index(vpc)}.1.{rng.randint(2, 250)}",
                                    f"fa:16:3e:20:00:{rng.randint(0, 255):02x}")
                neighbours[nid] = n
                goalstates.add(gs, "any", n, neighbor=True, op=common.CREATE)
        elif neighbours:  # a neighbour gone
            nid = rng.choice(sorted(neighbours))
            goalstates.add(gs, "any", neighbours.pop(nid), neighbor=True, op=common.DELETE)
        else:  # nothing to delete yet: a question about a VPC (INFO), answered and changing nothing
            gs.vpc_states[vpc.id].CopyFrom(goalstates.vpc_state(vpc))
        out.append(_unaddressed(gs))
    return out


def statuses(reply) -> list[tuple[str, int, int, int]]:
    """A reply's statuses, comparable between agents: resource, kind, operation, outcome."""
    return sorted((s.resource_id, s.resource_type, s.operation_type, s.operation_status)
                  for s in reply.operation_statuses)
