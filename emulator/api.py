"""The Python API, in the spirit of Mininet's:

    emu = Emulation(load_file("topologies/smoke.yaml")).up()
    print(emu.node("h1").cmd("ping -c1 10.0.0.2"))
    emu.pingall()
    emu.down()
"""

from __future__ import annotations

import random
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from emulator.compiler.plan import Plan, PlanNode
from emulator.model import Cluster, Topology, UnknownName, check_experiment
from emulator.runtime import targets
from emulator.runtime.distributed import ClusterUp
from emulator.runtime.events import Phases, ProgressSink
from emulator.runtime.experiments import DownResult
from emulator.runtime.state import experiment_lock
from emulator.runtime.targets import RemoteProcess, Target, target_for
from provisioners import NodeState


@dataclass
class PingResult:
    pairs: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    of_pairs: int = 0  # when sampled: how many ordered pairs the hosts make (else 0: every pair was pinged)

    @property
    def loss_percent(self) -> float:
        return 100.0 * len(self.failed) / self.pairs if self.pairs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "failed": [list(p) for p in self.failed],
                "loss_percent": round(self.loss_percent, 2), "seconds": round(self.seconds, 3),
                **({"sampled_from": self.of_pairs} if self.of_pairs else {})}


def _argv(command: str | list[str]) -> list[str]:
    """A command as an argument list: a string is split as a shell would, but never run through one."""
    return shlex.split(command) if isinstance(command, str) else list(command)


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
        return self.emu.target.argv(self.plan_node, _argv(command))

    def run(self, command: str | list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a command inside the node (an argument list, never through a shell), on whichever machine it is."""
        return self.emu.target.run(self.plan_node, _argv(command), timeout)

    def cmd(self, command: str | list[str], timeout: float | None = 120) -> str:
        """Mininet's node.cmd: the command's output (stdout and stderr)."""
        proc = self.run(command, timeout)
        return proc.stdout + proc.stderr

    def popen(self, command: str | list[str], **kwargs: Any) -> subprocess.Popen | RemoteProcess:
        """Start a command in the node; `down` ends it with the node if the caller does not."""
        return self.emu.target.start(self.plan_node, _argv(command), **kwargs)


class Emulation:
    """One experiment: a topology brought up where its Target says (this machine, or a cluster's machines),
    and taken down again."""

    def __init__(self, topology: Topology | None = None, *, name: str | None = None, provisioner: str | None = None,
                 cluster: Cluster | None = None, placement: str = "metis", parallel: int = 16,
                 accept_new_host_keys: bool = False):
        self.topology = topology
        name = name or (topology.name if topology else None)
        self.name = check_experiment(name) if name is not None else None
        self.provisioner = provisioner
        self.cluster = cluster  # None: this machine; else the machines the experiment spans
        self.target: Target = target_for(cluster, placement=placement, parallel=parallel,
                                         accept_new=accept_new_host_keys)
        self.plan: Plan | None = None
        self.timings: dict[str, float] = {}

    @classmethod
    def attach(cls, name: str) -> Emulation:
        """An experiment that is already up (from its journal)."""
        emu = cls(name=name)
        emu.plan, emu.target = targets.attach(name)
        emu.provisioner = emu.plan.provisioner
        emu.cluster = getattr(emu.target, "cluster", None)
        return emu

    @property
    def deployment(self) -> ClusterUp | None:
        """Per-machine timings and round trips of a cluster `up`."""
        return getattr(self.target, "deployment", None)

    # -- lifecycle -------------------------------------------------------
    def up(self, sink: ProgressSink | None = None) -> Emulation:
        if self.topology is None:
            raise ValueError("no topology to bring up")
        phases = Phases(sink)
        with experiment_lock(self.name, wait=0, doing="up"):  # through the goal states: down waits for all of it
            self.plan = self.target.deploy(self.topology, self.name, self.provisioner, phases)
            if self.plan.vms:
                try:
                    hosts = {vm["host_ip"] for vm in self.plan.vms}
                    with phases.phase("goal states", total=len(hosts)) as step:
                        self.target.push_goal_states(self.plan, step.advance)
                except BaseException:  # an interrupt too: a half-made experiment is worse than none
                    self.down()
                    self.plan = None
                    raise
        self.timings = dict(phases.timings)
        return self

    def down(self, sink: ProgressSink | None = None) -> DownResult:
        return self.target.destroy(self.name, Phases(sink))

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
            raise UnknownName(f"no node {name!r} in experiment {self.name!r}") from None
        on = plan.node(vm["on"])
        where = {k: on.options[k] for k in ("engine", "container") if k in on.options}  # a VM in a compute container
        return NodeHandle(self, PlanNode(vm["name"], "vm", on.machine, vm["netns"], ip=vm["ip"], options=where))

    def hosts(self) -> list[NodeHandle]:
        return [NodeHandle(self, n) for n in self._plan().hosts()]

    def status(self) -> list[NodeState]:
        return self.target.status(self._plan())

    #: Up to this many hosts, pingall pings every ordered pair (9,900 at 100); beyond, a sample (see pingall).
    ALL_PAIRS_MAX = 100
    #: The sample's size at most: on a flat network each first ping's ARP broadcast reaches every host (1,000 hosts,
    #: 2,000 pairs: 16 s cold on 20 userspace switches; 10,000 hosts make each broadcast ten times dearer).
    SAMPLE_MAX = 2000

    def pingall(self, *, timeout: float = 1.0, wait: float = 0.0, every_pair: bool = False,
                sample: int | None = None) -> PingResult:
        """Every host pings every other host once; failed pairs are retried until `wait` seconds pass.

        The retry covers switches still converging (spanning tree) after `up`. Past ALL_PAIRS_MAX hosts (unless
        `every_pair`), each host pings two others instead of N-1: the host half the list away (in declaration
        order, so usually behind other switches) and one drawn at random (seeded): every host sends and answers,
        2N pairs rather than N^2 (at most SAMPLE_MAX of them, drawn at random), and the result says how many pairs
        it was sampled from."""
        hosts = [h for h in self.hosts() if h.ip]
        n = len(hosts)
        if every_pair or n <= self.ALL_PAIRS_MAX:
            pending = [(a, b) for a in hosts for b in hosts if a is not b]
        else:
            rng = random.Random(n)
            pending = [(a, hosts[(i + n // 2) % n]) for i, a in enumerate(hosts)]
            pending += [(a, hosts[(i + rng.randrange(1, n)) % n]) for i, a in enumerate(hosts)]
            most = sample or self.SAMPLE_MAX
            if len(pending) > most:  # each first contact is an ARP broadcast copied to all N hosts
                pending = rng.sample(pending, most)
        t0 = time.perf_counter()
        failed = {tuple(p) for p in self.target.ping(self.name, [[a.name, b.ip] for a, b in pending], timeout=timeout,
                                                     wait=wait, plan=self._plan())}
        return PingResult(len(pending), [(a.name, b.name) for a, b in pending if (a.name, b.ip) in failed],
                          time.perf_counter() - t0, 0 if len(pending) == n * (n - 1) else n * (n - 1))

    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("the emulation is not up")
        return self.plan
