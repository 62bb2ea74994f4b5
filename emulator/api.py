"""The Python API, in the spirit of Mininet's:

    emu = Emulation(load_file("topologies/smoke.yaml")).up()
    print(emu.node("h1").cmd("ping -c1 10.0.0.2"))
    emu.pingall()
    emu.down()
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from emulator.compiler.plan import Plan, PlanNode
from emulator.model import Cluster, Topology, check_experiment
from emulator.runtime import orchestrator
from emulator.runtime.distributed import CLUSTER, ClusterUp, cluster_from_dict, deploy_cluster, ping_pairs, shard_status
from emulator.runtime.events import Phases, ProgressSink
from emulator.runtime.journal import Journal
from emulator.runtime.state import experiment_lock
from emulator.runtime.workers import Workers
from provisioners import NodeState
from provisioners import get as get_provisioner


@functools.cache
def _engine_named(name: str):
    return get_provisioner(name)


@dataclass
class PingResult:
    pairs: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def loss_percent(self) -> float:
        return 100.0 * len(self.failed) / self.pairs if self.pairs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "failed": [list(p) for p in self.failed],
                "loss_percent": round(self.loss_percent, 2), "seconds": round(self.seconds, 3)}


class NodeHandle:
    def __init__(self, emu: Emulation, node: PlanNode):
        self.emu, self.plan_node = emu, node

    @property
    def name(self) -> str:
        return self.plan_node.name

    @property
    def ip(self) -> str | None:
        return self.plan_node.ip.split("/")[0] if self.plan_node.ip else None

    def argv(self, command: str | list[str]) -> list[str]:
        args = shlex.split(command) if isinstance(command, str) else list(command)
        return self.emu.engine_of(self.plan_node).exec_argv(self.plan_node, args)

    def run(self, command: str | list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a command inside the node (an argument list, never through a shell), on whichever machine it is."""
        argv = self.argv(command)
        if self.emu.cluster is not None:
            done = self.emu.workers.session(self.plan_node.machine).run(argv, timeout=timeout)
            return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def run_in_network(self, argv: list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run the machine's own tool in the node's network namespace: what pingall needs, without the
        container engine's exec (one `lxc exec` per ping overloads LXD at a few dozen at once)."""
        return subprocess.run(self.emu.engine_of(self.plan_node).net_argv(self.plan_node, argv), capture_output=True,
                              text=True, timeout=timeout)

    def cmd(self, command: str | list[str], timeout: float | None = 120) -> str:
        """Mininet's node.cmd: the command's output (stdout and stderr)."""
        proc = self.run(command, timeout)
        return proc.stdout + proc.stderr

    def popen(self, command: str | list[str], **kwargs: Any) -> subprocess.Popen | RemoteProcess:
        """Start a command in the node; `down` ends it with the node if the caller does not."""
        if self.emu.cluster is not None:
            return RemoteProcess(self.emu.workers.session(self.plan_node.machine).start(self.argv(command)))
        return subprocess.Popen(self.argv(command), **kwargs)


class RemoteProcess:
    """A command started on another machine on a pseudo-terminal: kill() hangs it up."""

    def __init__(self, channel):
        self.channel = channel

    def kill(self) -> None:
        self.channel.close()

    def wait(self, timeout: float | None = None) -> int:
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else -1


class Emulation:
    """One experiment: a topology brought up on this machine, and taken down again."""

    def __init__(self, topology: Topology | None = None, *, name: str | None = None, provisioner: str | None = None,
                 cluster: Cluster | None = None, placement: str = "metis", parallel: int = 16,
                 accept_new_host_keys: bool = False):
        self.topology = topology
        name = name or (topology.name if topology else None)
        self.name = check_experiment(name) if name is not None else None
        self.provisioner = provisioner
        self.cluster = cluster  # None: this machine; else the machines the experiment spans
        self.placement, self.parallel, self.accept_new = placement, parallel, accept_new_host_keys
        self.plan: Plan | None = None
        self.shard_engines: dict[str, str] = {}  # machine -> its shard's provisioner
        self.timings: dict[str, float] = {}
        self.deployment: ClusterUp | None = None

    @classmethod
    def attach(cls, name: str) -> Emulation:
        """An experiment that is already up (from its journal)."""
        emu = cls(name=name)
        emu.plan = orchestrator.load_plan(name)
        emu.provisioner = emu.plan.provisioner
        meta = Journal(name).meta()
        if meta.get("provisioner") == CLUSTER:
            emu.cluster = cluster_from_dict(meta["cluster"])
            emu.shard_engines = {m: s["provisioner"] for m, s in meta["shards"].items()}
        return emu

    @functools.cached_property
    def engine(self):
        """One provisioner per emulation: every node command (each ping of pingall) goes through it."""
        return get_provisioner(self.plan.provisioner if self.plan else (self.provisioner or "netns"))

    def engine_of(self, node: PlanNode):
        """The provisioner that made `node` (on a cluster, its machine's shard says which)."""
        if self.cluster is None:
            return self.engine
        return _engine_named(self.shard_engines.get(node.machine, "netns"))

    @functools.cached_property
    def workers(self) -> Workers:
        if self.cluster is None:
            raise RuntimeError("not a cluster experiment")
        return Workers(self.cluster, accept_new=self.accept_new, parallel=self.parallel)

    # -- lifecycle -------------------------------------------------------
    def up(self, sink: ProgressSink | None = None) -> Emulation:
        if self.topology is None:
            raise ValueError("no topology to bring up")
        phases = Phases(sink)
        with experiment_lock(self.name, wait=0, doing="up"):  # through the goal states: down waits for all of it
            self._up(phases)
        self.timings = dict(phases.timings)
        return self

    def _up(self, phases: Phases) -> None:
        if self.cluster is not None:
            self.deployment = deploy_cluster(self.topology, self.cluster, experiment=self.name, placement=self.placement,
                                             provisioner=self.provisioner, parallel=self.parallel,
                                             accept_new=self.accept_new, phases=phases)
            self.plan = self.deployment.plan
            self.shard_engines = {m: s["provisioner"] for m, s in self.deployment.shards.items()}
        else:
            self.plan = orchestrator.deploy(self.topology, experiment=self.name, provisioner=self.provisioner,
                                            phases=phases)
        if self.plan.vms:
            try:
                self._program_vms(phases)
            except BaseException:  # an interrupt too: a half-made experiment is worse than none
                self.down()
                self.plan = None
                raise

    def _program_vms(self, phases: Phases) -> None:
        """The declared VMs, made by their compute nodes' agents from goal states (as Alcor's controller would)."""
        from emulator.alcor.controller import program_vms

        hosts = {vm["host_ip"] for vm in self.plan.vms}
        with phases.phase("goal states", total=len(hosts)) as step:
            if self.cluster is None:
                program_vms(self.plan, on_reply=step.advance)
            else:  # each machine's worker pushes to its own compute nodes' sockets: one round trip per machine
                program_vms(self.plan, on_reply=step.advance, push=self._push_through_workers)

    def _push_through_workers(self, targets: dict[str, str], messages: dict[str, list]) -> list:
        import base64

        from emulator.alcor.controller import Pushed
        from emulator.alcor.errors import AgentError

        machine_of = {n.ip.split("/")[0]: n.machine for n in self._plan().nodes if n.ip and "compute" in n.options}
        by_machine: dict[str, list[str]] = {}
        for host in messages:
            by_machine.setdefault(machine_of[host], []).append(host)

        def request(machine: str) -> dict[str, Any]:
            hosts = by_machine[machine]
            return {"command": "goalstates", "targets": {h: targets[h] for h in hosts},
                    "messages": {h: [base64.b64encode(m.SerializeToString()).decode() for m in messages[h]]
                                 for h in hosts}}
        out = []
        for machine, result in self.workers.each(by_machine, request).items():
            if isinstance(result, Exception):
                raise AgentError(f"goal states for the compute nodes on {machine}: {result}")
            out += [Pushed(r["host"], 0.0, r["seconds"], r["agent_us"], failed_names=r["failed"]) for r in result["pushed"]]
        return out

    def down(self, sink: ProgressSink | None = None) -> orchestrator.DownResult:
        if "workers" in self.__dict__:
            self.workers.close()
        return orchestrator.destroy(self.name, Phases(sink))

    def __enter__(self) -> Emulation:
        return self.up() if self.plan is None else self

    def __exit__(self, *exc: Any) -> None:
        self.down()

    # -- using it --------------------------------------------------------
    def node(self, name: str) -> NodeHandle:
        plan = self._plan()
        try:
            return NodeHandle(self, plan.node(name))
        except KeyError:
            pass
        vm = next((v for v in plan.vms if v["name"] == name), None)
        if vm is None:
            raise KeyError(f"no node {name!r} in experiment {self.name!r}")
        on = plan.node(vm["on"])
        where = {k: on.options[k] for k in ("engine", "container") if k in on.options}  # a VM in a compute container
        return NodeHandle(self, PlanNode(vm["name"], "vm", on.machine, vm["netns"], ip=vm["ip"], options=where))

    def hosts(self) -> list[NodeHandle]:
        return [NodeHandle(self, n) for n in self._plan().hosts()]

    def status(self) -> list[NodeState]:
        if self.cluster is None:
            return self.engine.status(self._plan())
        out = []
        machines = sorted({n.machine for n in self._plan().nodes})
        for machine, r in shard_status(self.workers, self.name, machines).items():
            if isinstance(r, Exception):
                out += [NodeState(n.name, n.kind, "unknown", f"{machine}: {r}") for n in self._plan().nodes
                        if n.machine == machine]
            else:
                out += [NodeState(**{**s, "detail": f"{s['detail']} on {machine}".strip()}) for s in r["nodes"]]
        return out

    def pingall(self, *, timeout: float = 1.0, wait: float = 0.0, workers: int = 32) -> PingResult:
        """Every host pings every other host once; failed pairs are retried until `wait` seconds pass.

        The retry covers switches still converging (spanning tree) after `up`."""
        hosts = [h for h in self.hosts() if h.ip]
        pending = [(a, b) for a in hosts for b in hosts if a is not b]
        t0 = time.perf_counter()
        if self.cluster is not None:  # one worker request per source machine, whatever the host count
            by_machine: dict[str, list[list[str]]] = {}
            for a, b in pending:
                by_machine.setdefault(a.plan_node.machine, []).append([a.name, b.ip])
            failed_ips = {tuple(p) for p in ping_pairs(self.workers, self.name, by_machine, timeout=timeout, wait=wait)}
            failed = [(a.name, b.name) for a, b in pending if (a.name, b.ip) in failed_ips]
            return PingResult(len(pending), failed, time.perf_counter() - t0)
        deadline = t0 + wait
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pending)))) as pool:
            while True:
                ok = list(pool.map(lambda p: _ping_once(p[0], p[1].ip, timeout), pending))
                pending = [p for p, good in zip(pending, ok, strict=True) if not good]
                if not pending or time.perf_counter() >= deadline:
                    break
                time.sleep(0.5)
        failed = [(a.name, b.name) for a, b in pending]
        return PingResult(len(hosts) * (len(hosts) - 1), failed, time.perf_counter() - t0)

    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("the emulation is not up")
        return self.plan


def _ping_once(src: NodeHandle, ip: str, timeout: float) -> bool:
    proc = src.run_in_network(["ping", "-c1", "-q", "-W", f"{max(1, round(timeout))}", ip], timeout=timeout + 10)
    return proc.returncode == 0
