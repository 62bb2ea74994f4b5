"""cloudemu as Alcor's NCM for on-demand agents: RequestGoalStates answered from what the experiment knows.

An agent in on-demand mode asks for a destination it has no flow for (a HostRequest: VNI, source and destination
address). The NCM finds both ports among the experiment's VMs, pushes the destination to the source's host as a
neighbour (an L3 one when a router joins their subnets), as Alcor's NCM pushes a GoalStateV2, and only then
answers SUCCESS; an address it does not know is a FAILURE. It serves each on-demand compute node on a unix socket
in the node's directory (a container node has that directory mounted), and counts what it was asked and how long
each answer took.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from emulator.alcor import controller, goalstates
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, goalstateprovisioner_pb2
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.compiler.plan import Plan
from provisioners.computenodes import NCM_SOCKET


class Ncm(rpc.GoalStateProvisionerServicer):
    def __init__(self, ports: list[goalstates.Port], targets: dict[str, str]):
        self.by_address = {(p.vpc.vni, p.ip): p for p in ports}
        self.targets = targets
        self.stubs: dict[str, rpc.GoalStateProvisionerStub] = {}  # a channel per agent, kept (opening one costs 0.2 s)
        self.lock = threading.Lock()
        self.stats: dict = {"requests": 0, "answered": 0, "unknown": 0, "failed": 0, "seconds": []}

    def RequestGoalStates(self, request, context):  # noqa: N802 - the name is Alcor's
        t0 = time.perf_counter()
        reply = goalstateprovisioner_pb2.HostRequestReply(format_version=1)
        for asked in request.state_requests:
            outcome = self._one(asked)
            reply.operation_statuses.add(request_id=asked.request_id,
                                         operation_status=common.SUCCESS if outcome == "answered" else common.FAILURE)
            with self.lock:
                self.stats["requests"] += 1
                self.stats[outcome] += 1
        seconds = time.perf_counter() - t0
        reply.total_operation_time = int(seconds * 1e6)
        with self.lock:
            self.stats["seconds"].append(seconds)
        return reply

    def PushGoalStatesStream(self, request_iterator, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this is the controller: agents serve goal states")

    def _one(self, asked) -> str:
        source = self.by_address.get((asked.tunnel_id, asked.source_ip))
        found = self.by_address.get((asked.tunnel_id, asked.destination_ip))
        if source is None or found is None or source.host_ip not in self.targets:
            return "unknown"
        routed = found.vpc.subnet_id != source.vpc.subnet_id and bool(found.vpc.router) and \
            found.vpc.router_id == source.vpc.router_id
        message = goalstate_pb2.GoalStateV2(format_version=1)
        goalstates.add(message, source.host_ip, found, neighbor=True, l3=routed)
        try:
            (reply,) = self._stub(source.host_ip).PushGoalStatesStream(iter([message]), timeout=30)
        except (grpc.RpcError, ValueError):  # the agent is gone (or answered twice): the request fails, the NCM goes on
            return "failed"
        return "failed" if controller.Pushed(source.host_ip, 0, 0, 0, reply).failed else "answered"

    def _stub(self, host: str) -> rpc.GoalStateProvisionerStub:
        with self.lock:
            stub = self.stubs.get(host)
            if stub is None:
                target = self.targets[host]
                options = controller.CHANNEL_OPTIONS + ([("grpc.default_authority", f"{host}:{controller.ACA_PORT}")]
                                                        if target.startswith("unix:") else [])
                stub = self.stubs[host] = rpc.GoalStateProvisionerStub(grpc.insecure_channel(target, options=options))
            return stub

    def summary(self) -> dict:
        with self.lock:
            seconds = sorted(self.stats["seconds"])
            counts = {k: v for k, v in self.stats.items() if k != "seconds"}

        def pct(q: float) -> float:
            return round(seconds[min(len(seconds) - 1, int(q * len(seconds)))] * 1e3, 2) if seconds else 0.0
        return {**counts, "answer_ms": {"p50": pct(0.5), "p90": pct(0.9), "max": pct(1.0)}}


def sockets(plan: Plan) -> list[Path]:
    """Where the plan's on-demand compute nodes (on this machine) ask."""
    return [Path(n.options["compute"]["dir"]) / NCM_SOCKET for n in plan.nodes
            if n.options.get("compute", {}).get("on_demand")]


def serving(path: Path) -> bool:
    """Whether an NCM answers on this socket already."""
    import socket

    with socket.socket(socket.AF_UNIX) as probe:
        return probe.connect_ex(str(path)) == 0


def serve(plan: Plan, more_ports: list[goalstates.Port] = ()) -> tuple[grpc.Server, Ncm]:
    """The NCM of an experiment, serving each on-demand node's socket; it knows the plan's VMs and `more_ports`."""
    paths = sockets(plan)
    if not paths:
        raise ValueError(f"experiment {plan.experiment} has no on-demand compute node (on_demand: true)")
    busy = [p for p in paths if p.is_socket() and serving(p)]
    if busy:
        raise RuntimeError(f"an NCM serves experiment {plan.experiment} already ({busy[0]}): stop it first")
    ncm = Ncm([*controller.plan_ports(plan), *more_ports], controller.agent_targets(plan))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rpc.add_GoalStateProvisionerServicer_to_server(ncm, server)
    for path in paths:
        if path.is_socket():
            os.unlink(path)  # an NCM that ended without removing it
        if server.add_insecure_port(f"unix:{path}") == 0:
            raise RuntimeError(f"cannot listen on {path}")
    server.start()
    return server, ncm


def stop(server: grpc.Server, plan: Plan) -> None:
    server.stop(1).wait()
    for path in sockets(plan):
        if path.is_socket():
            os.unlink(path)
