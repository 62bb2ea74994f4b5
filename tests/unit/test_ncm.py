"""cloudemu's NCM answering on-demand agents: what an agent asks is untrusted (a VM's traffic shapes it). Hostile
or mutated requests never raise and never find a port; a VPC's address is never answered to another VPC."""

from __future__ import annotations

import random

from emulator.alcor import goalstates
from emulator.alcor.ncm import Ncm
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstateprovisioner_pb2 as gsp

BLUE = goalstates.Vpc("blue", 1001, "10.1.0.0/24")
RED = goalstates.Vpc("red", 1002, "10.1.0.0/24")
PORTS = [goalstates.Port("b1", BLUE, "10.200.0.1", "10.1.0.11", "fa:16:3e:00:00:01"),
         goalstates.Port("b2", BLUE, "10.200.0.2", "10.1.0.12", "fa:16:3e:00:00:02"),
         goalstates.Port("r3", RED, "10.200.0.2", "10.1.0.13", "fa:16:3e:00:00:03")]
HOSTILE = ["", "10.1.0.12; reboot", "10.1.0.12\n", "../../etc/passwd", "10.1.0.012", "10.1.0.12 ", "ｘ" * 300,
           "\x00", "$(id)", "10.1.0.12/24", "::1", "10.1.0.256", "-n", "10.1.0.11\r\nHost: x"]


def ncm() -> Ncm:
    """Its agents' sockets do not exist: a request that finds both ports fails at the push, and says so."""
    return Ncm(PORTS, {"10.200.0.1": "unix:/nonexistent/cloudemu-test/agent.sock"})


def ask(server: Ncm, *requests: dict) -> list[int]:
    request = gsp.HostRequest(format_version=1)
    for r in requests:
        request.state_requests.add(request_type=common.ON_DEMAND, **r)
    reply = server.RequestGoalStates(request, None)
    assert [s.request_id for s in reply.operation_statuses] == [r.get("request_id", "") for r in requests]
    return [s.operation_status for s in reply.operation_statuses]


def test_hostile_and_mutated_requests_are_answered_failure_and_counted():
    server, rng = ncm(), random.Random(7)
    requests = []
    for i in range(2000):
        requests.append({"request_id": rng.choice(HOSTILE + [str(i)]), "tunnel_id": rng.choice([0, 1001, 1002, 2**32 - 1]),
                         "source_ip": rng.choice(HOSTILE + ["10.1.0.11"]),
                         "destination_ip": rng.choice(HOSTILE),
                         "source_port": rng.randrange(2**32), "destination_port": rng.randrange(2**32),
                         "protocol": rng.choice([0, 1, 6, 17, 99])})
    statuses = []
    for chunk in range(0, len(requests), 100):  # many per message, as a misbehaving agent may send
        statuses += ask(server, *requests[chunk:chunk + 100])
    assert set(statuses) == {common.FAILURE}
    summary = server.summary()
    assert summary["requests"] == 2000 and summary["unknown"] == 2000 and summary["answered"] == 0


def test_an_address_of_another_vpc_is_never_found():
    server = ncm()
    # r3 (red) exists, but the asker is in blue: the same address space, another VPC
    assert ask(server, {"tunnel_id": 1001, "source_ip": "10.1.0.11", "destination_ip": "10.1.0.13"}) == [common.FAILURE]
    assert ask(server, {"tunnel_id": 1002, "source_ip": "10.1.0.11", "destination_ip": "10.1.0.13"}) == [common.FAILURE]
    assert server.summary()["unknown"] == 2


def test_a_known_pair_whose_agent_cannot_be_reached_fails_without_raising():
    server = ncm()
    assert ask(server, {"tunnel_id": 1001, "source_ip": "10.1.0.11", "destination_ip": "10.1.0.12"}) == [common.FAILURE]
    assert server.summary()["failed"] == 1
