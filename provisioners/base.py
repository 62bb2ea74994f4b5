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


def unchecked(what: str, why: str) -> Resource:
    """Something `down` could not look at: it may still hold the experiment's resources, so the journal stays."""
    return Resource("unchecked", f"{what}: {why}")


class NodeStartError(CloudemuError, RuntimeError):
    """A node's own program did not come up (a compute node's agent, a service that never got healthy).

    `up` has removed what it made by the time this reaches the user; the message says which node and why."""

    exit_code = 1
