"""Where an experiment runs: this machine, or machines over SSH (later an LXD cluster), as one object.

`Emulation` holds one Target and never asks which kind it is: bringing a topology up, taking it down,
node status, running a command in a node, pinging pairs and pushing goal states are each one call
here. A new place to run is one class with these methods, and one line in `target_for`.
"""

from __future__ import annotations

import base64
import functools
import subprocess
from collections.abc import Callable
from typing import Any, Protocol

from emulator.compiler.plan import Plan, PlanNode
from emulator.model import Cluster, Topology
from emulator.runtime import distributed, orchestrator, pings
from emulator.runtime.events import Phases
from emulator.runtime.experiments import CLUSTER, DownResult, ExperimentError
from emulator.runtime.journal import Journal
from emulator.runtime.state import experiment_lock
from emulator.runtime.workers import Workers
from provisioners import NodeState
from provisioners import get as get_provisioner

#: [source node, destination address] pairs.
Pairs = list[list[str]]


class Target(Protocol):
    def deploy(self, topo: Topology, name: str, provisioner: str | None, phases: Phases) -> Plan: ...
    def destroy(self, name: str, phases: Phases, wait: float | None = None) -> DownResult: ...
    def status(self, plan: Plan) -> list[NodeState]: ...
    def argv(self, node: PlanNode, argv: list[str]) -> list[str]: ...
    def run(self, node: PlanNode, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess: ...
    def start(self, node: PlanNode, argv: list[str], **kwargs: Any) -> Any: ...
    def ping(self, name: str, pairs: Pairs, timeout: float, wait: float, plan: Plan | None = None) -> Pairs: ...
    def push_goal_states(self, plan: Plan, on_reply: Callable[[int], None]) -> None: ...
    def push_messages(self, plan: Plan, targets: dict[str, str], messages: dict[str, list], connections: int,
                      on_host_done=None) -> list: ...
    def ask_packs(self, plan: Plan, requests: dict[str, dict]) -> dict[str, dict | Exception]: ...
    def close(self) -> None: ...


@functools.cache
def _deployer():
    """One Deployer for every node of every engine: each node command (each ping of pingall) goes through it."""
    return get_provisioner("netns")


class ThisMachine:
    """Namespaces, containers and switches made here, by this process."""

    def deploy(self, topo: Topology, name: str, provisioner: str | None, phases: Phases) -> Plan:
        return orchestrator.deploy(topo, experiment=name, provisioner=provisioner, phases=phases)

    def destroy(self, name: str, phases: Phases, wait: float | None = None) -> DownResult:
        return orchestrator.destroy(name, phases, wait=wait)

    def status(self, plan: Plan) -> list[NodeState]:
        return _deployer().status(plan)

    def argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        return _deployer().exec_argv(node, argv)

    def run(self, node: PlanNode, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(node, argv), capture_output=True, text=True, timeout=timeout)

    def start(self, node: PlanNode, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(self.argv(node, argv), **kwargs)

    def ping(self, name: str, pairs: Pairs, timeout: float, wait: float, plan: Plan | None = None) -> Pairs:
        return pings.failing_pairs(plan, _deployer(), pairs, timeout=timeout, wait=wait)

    def push_goal_states(self, plan: Plan, on_reply: Callable[[int], None]) -> None:
        from emulator.alcor.controller import program_vms

        program_vms(plan, on_reply=on_reply)

    def push_messages(self, plan: Plan, targets: dict[str, str], messages: dict[str, list], connections: int,
                      on_host_done=None) -> list:
        """Goal states (or what makes their bytes) to agents here, a connection per agent (controller.push_each)."""
        from emulator.alcor.controller import push_each

        return push_each(targets, messages, connections=connections, on_host_done=on_host_done)

    def ask_packs(self, plan: Plan, requests: dict[str, dict]) -> dict[str, dict | Exception]:
        """Each named pack of hollow compute nodes asked over its control socket: its answer, or why it did not."""
        from emulator.alcor.remote import ask_packs

        return ask_packs(plan, requests)

    def close(self) -> None:
        pass


class SshMachines:
    """A cluster inventory's machines: a worker per machine over SSH does the work there; this process
    compiles, places and keeps the controller's journal."""

    def __init__(self, cluster: Cluster, *, placement: str = "metis", parallel: int = 16, accept_new: bool = False):
        self.cluster, self.placement, self.parallel, self.accept_new = cluster, placement, parallel, accept_new
        self.deployment: distributed.ClusterUp | None = None

    @functools.cached_property
    def workers(self) -> Workers:
        return Workers(self.cluster, accept_new=self.accept_new, parallel=self.parallel)

    def deploy(self, topo: Topology, name: str, provisioner: str | None, phases: Phases) -> Plan:
        self.deployment = distributed.deploy_cluster(topo, self.cluster, experiment=name, placement=self.placement,
                                                     provisioner=provisioner, parallel=self.parallel,
                                                     accept_new=self.accept_new, phases=phases)
        return self.deployment.plan

    def destroy(self, name: str, phases: Phases, wait: float | None = None) -> DownResult:
        self.close()
        return destroy(name, phases, wait=wait, accept_new=self.accept_new)

    def status(self, plan: Plan) -> list[NodeState]:
        out = []
        machines = sorted({n.machine for n in plan.nodes})
        for machine, r in distributed.shard_status(self.workers, plan.experiment, machines).items():
            if isinstance(r, Exception):
                out += [NodeState(n.name, n.kind, "unknown", f"{machine}: {r}") for n in plan.nodes
                        if n.machine == machine]
            else:
                out += [NodeState(**{**s, "detail": f"{s['detail']} on {machine}".strip()}) for s in r["nodes"]]
        return self._with_lxd_members(plan, out) if self.cluster.lxd else out

    def _with_lxd_members(self, plan: Plan, states: list[NodeState]) -> list[NodeState]:
        """An LXD node's detail says its member and the member's state, from the cluster's API; an instance that is
        not on the member the plan says is a problem."""
        from emulator.runtime import lxdcluster

        try:
            api = lxdcluster.client(self.cluster.lxd)
            members = lxdcluster.members(api)
            where = lxdcluster.instances_of(api, plan.experiment, {n.options.get("container") for n in plan.nodes})
        except Exception as exc:  # noqa: BLE001 - the cluster's view is extra: status still shows the machines'
            return [NodeState(s.node, s.kind, s.state, f"{s.detail}; LXD cluster: {exc}") for s in states]
        lxd_nodes = {n.name: n for n in plan.nodes if n.options.get("engine") == "lxd"}
        out = []
        for s in states:
            node = lxd_nodes.get(s.node)
            if node is None:
                out.append(s)
                continue
            machine, member = node.machine, members.get(node.machine)
            landed = where.get(node.options["container"])
            detail = f"{s.detail}; LXD member {member.status.lower() if member else 'unknown'}"
            state = s.state
            if landed is None:
                state, detail = "missing", f"{detail}, no instance in the cluster"
            elif landed != machine:
                state, detail = "misplaced", f"{detail}, instance on {landed}"
            out.append(NodeState(s.node, s.kind, state, detail))
        return out

    def argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        return _deployer().exec_argv(node, argv)

    def run(self, node: PlanNode, argv: list[str], timeout: float | None) -> subprocess.CompletedProcess:
        """Over the machine's SSH session, output when it ends."""
        full = self.argv(node, argv)
        done = self.workers.session(node.machine).run(full, timeout=timeout)
        return subprocess.CompletedProcess(full, done.returncode, done.stdout, done.stderr)

    def start(self, node: PlanNode, argv: list[str], **kwargs: Any) -> RemoteProcess:
        return RemoteProcess(self.workers.session(node.machine).start(self.argv(node, argv)))

    def ping(self, name: str, pairs: Pairs, timeout: float, wait: float, plan: Plan | None = None) -> Pairs:
        """One worker request per source machine, whatever the host count."""
        machine_of = {n.name: n.machine for n in plan.nodes} if plan else {}
        by_machine: dict[str, Pairs] = {}
        for pair in pairs:
            by_machine.setdefault(machine_of[pair[0]], []).append(list(pair))
        return distributed.ping_pairs(self.workers, name, by_machine, timeout=timeout, wait=wait)

    def push_goal_states(self, plan: Plan, on_reply: Callable[[int], None]) -> None:
        """Each machine's worker pushes to its own compute nodes' sockets: one round trip per machine."""
        from emulator.alcor.controller import program_vms

        program_vms(plan, on_reply=on_reply, push=lambda targets, messages: self._push(plan, targets, messages))

    def push_messages(self, plan: Plan, targets: dict[str, str], messages: dict[str, list], connections: int,
                      on_host_done=None) -> list:
        """Through each agent's machine's worker, which pushes to its local agents: one round trip per machine."""
        pushed = self._push(plan, targets, messages)
        if on_host_done:
            for host in messages:
                on_host_done(host, None)
        return pushed

    def _push(self, plan: Plan, targets: dict[str, str], messages: dict[str, list]) -> list:
        """Messages are GoalStateV2s or what makes their bytes; each machine's are sent as bytes to its worker."""
        from emulator.alcor.controller import Pushed, agent_nodes
        from emulator.alcor.errors import AgentError

        machine_of = {ip: n.machine for ip, n in agent_nodes(plan).items()}
        by_machine: dict[str, list[str]] = {}
        for host in messages:
            by_machine.setdefault(machine_of[host], []).append(host)

        def request(machine: str) -> dict[str, Any]:
            hosts = by_machine[machine]
            return {"command": "goalstates", "targets": {h: targets[h] for h in hosts},
                    "messages": {h: [base64.b64encode(m() if callable(m) else m.SerializeToString()).decode()
                                     for m in messages[h]] for h in hosts}}
        out = []
        for machine, result in self.workers.each(by_machine, request).items():
            if isinstance(result, Exception):
                raise AgentError(f"goal states for the compute nodes on {machine}: {result}")
            out += [Pushed(r["host"], 0.0, r["seconds"], r["agent_us"], failed_names=r["failed"],
                           pending_names=r.get("pending", [])) for r in result["pushed"]]
        return out

    def ask_packs(self, plan: Plan, requests: dict[str, dict]) -> dict[str, dict | Exception]:
        """Through each pack's machine's worker: one round trip per machine."""
        machine_of = {n.name: n.machine for n in plan.nodes}
        by_machine: dict[str, dict[str, dict]] = {}
        for pack, request in requests.items():
            by_machine.setdefault(machine_of[pack], {})[pack] = request
        out: dict[str, dict | Exception] = {}
        for machine, result in self.workers.each(by_machine, lambda m: {
                "command": "hollow", "experiment": plan.experiment, "requests": by_machine[m]}).items():
            for pack in by_machine[machine]:
                if isinstance(result, Exception):
                    out[pack] = result
                else:
                    answer = result["answers"][pack]
                    out[pack] = OSError(answer["unreachable"]) if "unreachable" in answer else answer
        return out

    def close(self) -> None:
        if "workers" in self.__dict__:
            self.workers.close()
            del self.__dict__["workers"]


class RemoteProcess:
    """A command started on another machine on a pseudo-terminal: kill() hangs it up."""

    def __init__(self, channel):
        self.channel = channel

    def kill(self) -> None:
        self.channel.close()

    def wait(self, timeout: float | None = None) -> int:
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else -1


def target_for(cluster: Cluster | None, *, placement: str = "metis", parallel: int = 16,
               accept_new: bool = False) -> ThisMachine | SshMachines:
    if cluster is None:
        return ThisMachine()
    return SshMachines(cluster, placement=placement, parallel=parallel, accept_new=accept_new)


def attach(name: str, accept_new: bool = False) -> tuple[Plan, ThisMachine | SshMachines]:
    """An experiment that is up, from its journal: its plan (every machine's shard merged) and where it runs."""
    journal = Journal(name)
    if not journal.exists():
        raise ExperimentError(f"no experiment named {name!r}; 'cloudemu status' lists them")
    meta = journal.meta()
    if meta.get("provisioner") == CLUSTER:
        plan = distributed.merge_shards(name, meta["shards"])
        return plan, SshMachines(distributed.cluster_from_dict(meta["cluster"]), accept_new=accept_new)
    return orchestrator.load_plan(name), ThisMachine()


def destroy(name: str, phases: Phases | None = None, *, wait: float | None = None,
            accept_new: bool = False) -> DownResult:
    """`down` of any experiment, wherever it runs (as its journal says), or a sweep of its markers here."""
    phases = phases or Phases()
    with experiment_lock(name, wait=wait, doing="down"):
        journal = Journal(name)
        if journal.exists() and journal.meta().get("provisioner") == CLUSTER:
            return distributed.destroy_cluster(name, phases, accept_new=accept_new)
        return orchestrator.destroy(name, phases, wait=wait)
