"""The one interface every engine implements (netns now; docker and lxd later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from emulator.compiler.plan import Plan, PlanNode
from emulator.model import CloudemuError
from emulator.runtime.events import Phases
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.journal import Journal, Resource


class PreflightError(CloudemuError, RuntimeError):
    """The machine cannot run this plan; nothing was created. Says what to do."""

    exit_code = 2
    hint = " (nothing was created)"


@dataclass
class NodeState:
    node: str
    kind: str
    state: str  # running | missing
    detail: str = ""


class Provisioner(ABC):
    name: str = ""

    def __init__(self, executor: LocalExecutor | None = None):
        self.ex = executor or LocalExecutor()

    @abstractmethod
    def resources(self, plan: Plan) -> list[Resource]:
        """What `create` will make, in creation order: journaled before anything exists."""

    @abstractmethod
    def preflight(self, plan: Plan) -> None:
        """Raise PreflightError if the plan cannot run here. Creates nothing."""

    @abstractmethod
    def create(self, plan: Plan, journal: Journal, phases: Phases) -> None:
        """Make the plan real. Every resource is in the journal before it exists."""

    @abstractmethod
    def destroy(self, experiment: str, journaled: list[Resource], phases: Phases) -> list[Resource]:
        """Remove what the journal and the ownership markers say is this experiment's.

        Returns what is still left afterwards (empty when clean)."""

    def owned(self, experiment: str) -> tuple[list[Resource], list[str]]:
        """What on this machine carries the experiment's markers, found without a journal; and the engines that
        could not be asked (a daemon down), each with why. `down` of an experiment whose journal is gone."""
        return [], []

    @abstractmethod
    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        """The argument list that runs `argv` inside `node`."""

    def net_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        """The argument list that runs the machine's `argv` in the node's network namespace (default: exec_argv)."""
        return self.exec_argv(node, argv)

    @abstractmethod
    def status(self, plan: Plan) -> list[NodeState]:
        """Per node: is it there."""


class HostEngine(ABC):
    """An engine that runs hosts as containers: the few hooks the Deployer composes (everything else about
    a node, its links, addresses, shaping, switches and removal is the same for every engine). A new engine
    is one module with a subclass of this, and one line in emulator/engines.py."""

    name: str = ""

    def __init__(self, executor: LocalExecutor | None = None):
        self.ex = executor or LocalExecutor()

    @staticmethod
    def container_name(node: PlanNode) -> str:
        return node.options["container"]  # named by the compiler (see plan.container_name)

    @abstractmethod
    def engine_problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        """Engine reachable, images present, names free: what stops this plan (raise nothing)."""

    @abstractmethod
    def start(self, plan: Plan, node: PlanNode) -> int:
        """Create and start the node's container with no network; return its init's pid."""

    @abstractmethod
    def containers_of(self, experiment: str) -> dict[str, str]:
        """The experiment's containers (found by its ownership marker): name -> state."""

    @abstractmethod
    def remove(self, name: str) -> None: ...

    @abstractmethod
    def run_detached(self, name: str, argv: list[str]) -> None: ...

    @abstractmethod
    def exec_prefix(self, name: str) -> list[str]: ...


def unchecked(what: str, why: str) -> Resource:
    """Something `down` could not look at: it may still hold the experiment's resources, so the journal stays."""
    return Resource("unchecked", f"{what}: {why}")


class NodeStartError(CloudemuError, RuntimeError):
    """A node's own program did not come up (a compute node's agent, a service that never got healthy).

    `up` has removed what it made by the time this reaches the user; the message says which node and why."""

    exit_code = 1
