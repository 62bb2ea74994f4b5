"""cloudemu as Alcor's controller: goal states streamed to the compute nodes' agents.

`up` uses it to create the VMs a topology declares; `cloudemu alcor load` to drive many ports
through the agents and measure them. One gRPC stream per agent, messages sent as fast as asked
(or at a set rate), one reply read per message, as PushGoalStatesStream defines.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from emulator.alcor import goalstates
from emulator.alcor.errors import AgentError
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, goalstateprovisioner_pb2
from emulator.alcor.schema import goalstateprovisioner_pb2_grpc as rpc
from emulator.alcor.server import ACA_PORT, CHANNEL_OPTIONS
from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime import processes

STATUS_NAMES = {v: k for k, v in common.OperationStatus.items()}


@dataclass
class Pushed:
    """One message's round trip: what the agent said and how long it took as seen from here."""

    host: str
    sent_at: float  # seconds since the run started
    seconds: float
    agent_us: int
    #: The reply itself, read only when asked. A wrapper kept per status (a million for a 10,000-port load) lives
    #: in protobuf's object cache: inserting them cost the controller 7 s of CPU, from 100 threads at once.
    reply: goalstateprovisioner_pb2.GoalStateOperationReply | None = None
    failed_names: list[str] | None = None  # when it came back from a worker as names only
    pending_names: list[str] | None = None

    @property
    def failed(self) -> list[str]:
        """Operations that did not succeed; PENDING is not among them (ACA's answer while a port's VIF is not there
        yet: it keeps trying, see `pending`)."""
        if self.failed_names is not None:
            return list(self.failed_names)
        if self.reply is None:
            return []
        return [f"{s.resource_id} ({STATUS_NAMES.get(s.operation_status, s.operation_status)})"
                for s in self.reply.operation_statuses if s.operation_status not in (common.SUCCESS, common.PENDING)]

    @property
    def pending(self) -> list[str]:
        if self.pending_names is not None:
            return list(self.pending_names)
        if self.reply is None:
            return []
        return [s.resource_id for s in self.reply.operation_statuses if s.operation_status == common.PENDING]


def agent_nodes(plan: Plan) -> dict[str, PlanNode]:
    """Compute node underlay IP -> the plan node its agent runs in: the full compute node itself (with cloudemu's
    agent), or the pack of a hollow one."""
    out = {}
    for n in plan.nodes:
        spec = n.options.get("compute")
        if spec and spec["agent"] == "builtin" and n.ip:
            out[n.ip.split("/")[0]] = n
        pack = n.options.get("hollow")
        if pack:
            out.update((ip.split("/")[0], n) for _, ip in pack["nodes"])
    return out


def on_demand_hosts(plan: Plan) -> set[str]:
    return {ip for ip, n in agent_nodes(plan).items() if n.options.get("compute", {}).get("on_demand")}


def agent_targets(plan: Plan) -> dict[str, str]:
    """Compute node underlay IP -> where cloudemu reaches its agent (the unix socket in the node's directory; a
    pack's one socket serves all its nodes, each call naming its node: see stream)."""
    return {ip: f"unix:{(n.options.get('compute') or n.options['hollow'])['dir']}/agent.sock"
            for ip, n in agent_nodes(plan).items()}


def plan_ports(plan: Plan) -> list[goalstates.Port]:
    dhcp = {(vm["vpc"], vm["cidr"]) for vm in plan.vms if vm.get("dhcp")}
    subnets = {(vm["vpc"], vm["cidr"]): goalstates.Vpc(vm["vpc"], vm["vni"], vm["cidr"], router=vm.get("router", ""),
                                                       dhcp=(vm["vpc"], vm["cidr"]) in dhcp, dns=tuple(vm.get("dns", ())))
               for vm in plan.vms}
    return [goalstates.Port(vm["name"], subnets[(vm["vpc"], vm["cidr"])], vm["host_ip"], vm["ip"].split("/")[0],
                            vm["mac"], groups=tuple(goalstates.SecurityGroup(name, tuple(rules)) for name, rules
                                                    in vm.get("security_groups", {}).items()),
                            dhcp=bool(vm.get("dhcp")))
            for vm in plan.vms]


#: Streams open at once (a thread each); beyond it, hosts wait for a stream to end.
MAX_STREAMS = 512
#: Goal-state messages in flight at once, over all agents. Local agents share the machine's cores: more
#: than two messages per core only adds contention (a 3,000-port load on 2 cores: 250-260 ports/s and
#: p50 0.8-1.6 s with 2-4 in flight, 210 ports/s and p50 6.8 s with 16).
DEFAULT_CONCURRENCY = 2 * (os.cpu_count() or 1)


def stream(target: str, messages: Iterable[goalstate_pb2.GoalStateV2], *, host: str = "", started: float | None = None,
           timeout: float = 600.0, connect_timeout: float = 120.0, gate: threading.Semaphore | None = None) -> list[Pushed]:
    """Sends `messages` to one agent as the iterable yields them (a paced one paces them), each on its own
    PushGoalStatesStream call as Alcor's NCM sends them and ACA serves them (ACA reads one GoalStateV2 per call
    and drops the rest); one Pushed per reply. A message leaves only once `gate` lets it (released by its
    reply). A hundred busy agents on two cores may take tens of seconds to accept."""
    started = time.perf_counter() if started is None else started
    sent: list[float] = []

    def timed():
        for msg in messages:
            if gate is not None:
                gate.acquire()
            sent.append(time.perf_counter())
            yield msg

    out = []
    # Over a unix socket the call names its host as its authority: a hollow pack serves many nodes on one socket.
    options = CHANNEL_OPTIONS + ([("grpc.default_authority", f"{host}:{ACA_PORT}")] if target.startswith("unix:") and host
                                 else [])
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=connect_timeout)
            call = rpc.GoalStateProvisionerStub(channel).PushGoalStatesStream
            for message in timed():
                replies = list(call(iter([message]), timeout=timeout))
                now = time.perf_counter()
                if gate is not None:
                    gate.release()
                if len(replies) != 1:
                    raise AgentError(f"agent {host or target} ({target}) answered one goal state with {len(replies)} "
                                     "replies")
                out.append(Pushed(host or target, sent[-1] - started, now - sent[-1],
                                  replies[0].message_total_operation_time, replies[0]))
        except (grpc.RpcError, grpc.FutureTimeoutError) as exc:
            if gate is not None:
                for _ in range(len(sent) - len(out)):
                    gate.release()  # messages that found no reply
            detail = exc.details() if isinstance(exc, grpc.RpcError) else f"not reachable within {connect_timeout:g} s"
            raise AgentError(f"agent {host or target} ({target}): {detail}") from None
    return out


def push_each(targets: dict[str, str], messages: dict[str, list], *,
              connections: int = 256, timeout: float = 600.0, on_host_done=None) -> list[Pushed]:
    """Like push_all, for many agents: an asyncio HTTP/2 client (h2client) instead of grpcio, one connection per
    agent with at most `connections` open, each message on its own call, a host's messages in order. A message
    is a GoalStateV2 or what makes its bytes when it is sent (a hundred hosts' whole VPC tables are GBs)."""
    from emulator.alcor import h2client

    missing = sorted(set(messages) - set(targets))
    if missing:
        raise AgentError(f"no agent for host {', '.join(missing)}")
    started = time.perf_counter()
    encoded = {host: [m.SerializeToString if isinstance(m, goalstate_pb2.GoalStateV2) else m for m in msgs]
               for host, msgs in messages.items()}
    answers = processes.run_async(h2client.push_all(targets, encoded, connections=connections, timeout=timeout,
                                                    on_done=on_host_done))
    failed = {host: a for host, a in answers.items() if isinstance(a, Exception)}
    if failed:
        host, why = next(iter(sorted(failed.items())))
        raise AgentError(f"{len(failed)} agent(s) failed, first {host} ({targets[host]}): {why}")
    Reply = goalstateprovisioner_pb2.GoalStateOperationReply  # noqa: N806 - a class
    out = []
    for host in sorted(answers):
        for a in answers[host]:
            reply = Reply.FromString(a.reply)
            out.append(Pushed(host, a.sent_at - started, a.seconds, reply.message_total_operation_time, reply))
    return out


def streams(targets: dict[str, str], messages: dict[str, Iterable[goalstate_pb2.GoalStateV2]], *,
            concurrency: int = DEFAULT_CONCURRENCY, started: float | None = None, on_stream_done=None) -> list[Pushed]:
    """Every host's messages on its own stream, all streams open at once (a paced stream keeps its
    schedule), at most `concurrency` messages in flight over all of them."""
    started = time.perf_counter() if started is None else started
    gate = threading.Semaphore(max(1, concurrency))

    def one(host: str) -> list[Pushed]:
        result = stream(targets[host], messages[host], host=host, started=started, gate=gate)
        if on_stream_done:
            on_stream_done(host, result)
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_STREAMS, len(messages)))) as pool:
        return [p for batch in pool.map(one, sorted(messages)) for p in batch]


def push_all(targets: dict[str, str], messages: dict[str, list[goalstate_pb2.GoalStateV2]], *,
             concurrency: int = DEFAULT_CONCURRENCY, on_reply=None) -> list[Pushed]:
    """Each host's messages on its own stream, `concurrency` messages in flight at once."""
    missing = sorted(set(messages) - set(targets))
    if missing:
        raise AgentError(f"no agent for host {', '.join(missing)}")
    return streams(targets, messages, concurrency=concurrency,
                   on_stream_done=(lambda _, result: on_reply(len(result))) if on_reply else None)


def program_vms(plan: Plan, on_reply=None, push=None) -> list[Pushed]:
    """Creates the plan's VMs through their agents, as Alcor would; raises naming each port that failed.

    `push(targets, messages)` sends them some other way (through each machine's worker on a cluster)."""
    messages = {host: [gs] for host, gs in goalstates.per_host(plan_ports(plan)).items()}
    for host in on_demand_hosts(plan) & set(messages):  # their neighbours come when a VM first needs one
        goalstates.without_neighbours(messages[host][0], host)
    if push is None:
        pushed = push_all(agent_targets(plan), messages, on_reply=on_reply)
    else:
        pushed = push(agent_targets(plan), messages)
        if on_reply:
            on_reply(len(pushed))
    failed = [f for p in pushed for f in p.failed]
    if failed:
        raise AgentError(f"{len(failed)} operation(s) failed: {', '.join(failed[:10])}")
    return pushed
