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
from emulator.model import Topology
from emulator.runtime import orchestrator
from emulator.runtime.events import Phases, ProgressSink
from provisioners import get as get_provisioner


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
        return self.emu.engine.exec_argv(self.plan_node, args)

    def run(self, command: str | list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run a command inside the node (an argument list, never through a shell)."""
        return subprocess.run(self.argv(command), capture_output=True, text=True, timeout=timeout)

    def run_in_network(self, argv: list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
        """Run the machine's own tool in the node's network namespace: what pingall needs, without the
        container engine's exec (one `lxc exec` per ping overloads LXD at a few dozen at once)."""
        return subprocess.run(self.emu.engine.net_argv(self.plan_node, argv), capture_output=True, text=True,
                              timeout=timeout)

    def cmd(self, command: str | list[str], timeout: float | None = 120) -> str:
        """Mininet's node.cmd: the command's output (stdout and stderr)."""
        proc = self.run(command, timeout)
        return proc.stdout + proc.stderr

    def popen(self, command: str | list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a command in the node; `down` ends it with the node if the caller does not."""
        return subprocess.Popen(self.argv(command), **kwargs)


class Emulation:
    """One experiment: a topology brought up on this machine, and taken down again."""

    def __init__(self, topology: Topology | None = None, *, name: str | None = None, provisioner: str | None = None):
        self.topology = topology
        self.name = name or (topology.name if topology else None)
        self.provisioner = provisioner
        self.plan: Plan | None = None
        self.timings: dict[str, float] = {}

    @classmethod
    def attach(cls, name: str) -> Emulation:
        """An experiment that is already up (from its journal)."""
        emu = cls(name=name)
        emu.plan = orchestrator.load_plan(name)
        emu.provisioner = emu.plan.provisioner
        return emu

    @functools.cached_property
    def engine(self):
        """One provisioner per emulation: every node command (each ping of pingall) goes through it."""
        return get_provisioner(self.plan.provisioner if self.plan else (self.provisioner or "netns"))

    # -- lifecycle -------------------------------------------------------
    def up(self, sink: ProgressSink | None = None) -> Emulation:
        if self.topology is None:
            raise ValueError("no topology to bring up")
        phases = Phases(sink)
        self.plan = orchestrator.deploy(self.topology, experiment=self.name, provisioner=self.provisioner,
                                        phases=phases)
        self.timings = dict(phases.timings)
        return self

    def down(self, sink: ProgressSink | None = None) -> orchestrator.DownResult:
        return orchestrator.destroy(self.name, Phases(sink))

    def __enter__(self) -> Emulation:
        return self.up() if self.plan is None else self

    def __exit__(self, *exc: Any) -> None:
        self.down()

    # -- using it --------------------------------------------------------
    def node(self, name: str) -> NodeHandle:
        try:
            return NodeHandle(self, self._plan().node(name))
        except KeyError:
            raise KeyError(f"no node {name!r} in experiment {self.name!r}") from None

    def hosts(self) -> list[NodeHandle]:
        return [NodeHandle(self, n) for n in self._plan().hosts()]

    def status(self):
        return self.engine.status(self._plan())

    def pingall(self, *, timeout: float = 1.0, wait: float = 0.0, workers: int = 32) -> PingResult:
        """Every host pings every other host once; failed pairs are retried until `wait` seconds pass.

        The retry covers switches still converging (spanning tree) after `up`."""
        hosts = [h for h in self.hosts() if h.ip]
        pending = [(a, b) for a in hosts for b in hosts if a is not b]
        t0 = time.perf_counter()
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
