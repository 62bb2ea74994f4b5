"""`cloudemu alcor calibrate`: how long a full compute node's agent takes on this machine, as a model hollow
nodes can answer by (hollow.DelayModel), so that latencies measured on a hollow region mean something.

Messages of a few shapes (ports, neighbours) go to one full node, each repeated, each undone by a DELETE of
what it made; a least-squares fit of the agent's own time (message_total_operation_time) over
[1, ports, neighbours] gives the cost per message, per port and per neighbour.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from emulator.alcor import controller, goalstates
from emulator.alcor import load as loadtest
from emulator.alcor.schema import common_pb2 as common

#: (ports, neighbours) per message: enough spread for three coefficients, small enough for a busy node.
SHAPES = ((1, 0), (4, 0), (12, 0), (1, 1000), (1, 4000))
VNI = 16_000_000  # a VPC of its own, above every load run's
CIDR = "10.250.0.0/16"


@dataclass
class Sample:
    ports: int
    neighbours: int
    agent_s: float


def measure(target: str, host: str, repeats: int = 3) -> list[Sample]:
    """Each shape `repeats` times against the agent at `target` (its node's underlay address `host`)."""
    vpc = goalstates.Vpc("calibration", VNI, CIDR)
    remote = loadtest.fake_hosts(8)
    out = []
    serial = 0
    for _ in range(repeats):
        for ports, neighbours in SHAPES:
            made = []
            for _ in range(ports):
                serial += 1
                made.append(goalstates.Port(f"calib-{serial}", vpc, host, f"10.250.{serial >> 8 & 255}.{serial & 255 or 1}",
                                            f"fa:16:3f:00:{serial >> 8 & 255:02x}:{serial & 255:02x}"))
            far = [goalstates.Port(f"calib-n{i}", vpc, remote[i % len(remote)], f"10.250.{128 + (i >> 8)}.{i & 255 or 1}",
                                   f"fa:16:3f:01:{i >> 8:02x}:{i & 255:02x}") for i in range(neighbours)]
            (pushed,) = controller.stream(target, [_message(host, made, far, common.CREATE)], host=host)
            if pushed.failed:
                raise RuntimeError(f"the agent at {host} refused the calibration message: {pushed.failed[:3]}")
            out.append(Sample(ports, neighbours, pushed.agent_us / 1e6))
            controller.stream(target, [_message(host, made, far, common.DELETE)], host=host)
    return out


def _message(host: str, ports: list[goalstates.Port], neighbours: list[goalstates.Port], op: int):
    messages: dict = {}
    gs = goalstates.message_for(messages, host)
    for p in ports:
        goalstates.add(gs, host, p, op=op)
    for p in neighbours:
        goalstates.add(gs, host, p, neighbor=True, op=op)
    return gs


def fit(samples: list[Sample]) -> dict:
    """Per message (ms), per port (ms) and per neighbour (us), none below zero, with what they rest on."""
    a = np.array([[1.0, s.ports, s.neighbours] for s in samples])
    y = np.array([s.agent_s for s in samples])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    message, port, neighbour = (max(0.0, float(c)) for c in coef)
    return {"per_message_ms": round(message * 1e3, 3), "per_port_ms": round(port * 1e3, 3),
            "per_neighbour_us": round(neighbour * 1e6, 3),
            "samples": [{"ports": s.ports, "neighbours": s.neighbours, "agent_ms": round(s.agent_s * 1e3, 2)}
                        for s in samples],
            "machine": socket.gethostname(), "cores": os.cpu_count(),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
