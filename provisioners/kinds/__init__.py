"""Node kinds: what a host with a role (compute node, service, ...) needs beyond its engine and the fabric.

Each kind is one module here with a NodeKind subclass, and one line in emulator/kinds.py. The Deployer asks
every kind, in the registry's order, for its resources and problems, runs its `after_links` once the fabric
is built (links up and addressed), and lets it say more of its nodes' state."""

from __future__ import annotations

import importlib
from typing import Protocol

from emulator.compiler.plan import Plan, PlanNode
from emulator.kinds import KINDS
from emulator.runtime.events import Phases
from emulator.runtime.executor import LocalExecutor
from emulator.runtime.journal import Journal, Resource
from provisioners.base import HostEngine, NodeState
from provisioners.fabric import Fabric


class Deployer(Protocol):
    """What a kind may use of the Deployer that hands itself to it (provisioners.deployer)."""

    ex: LocalExecutor
    fabric: Fabric

    def is_container(self, node: PlanNode) -> bool: ...

    def engine_of(self, node: PlanNode) -> HostEngine: ...

    def container_name(self, node: PlanNode) -> str: ...

    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]: ...


class NodeKind:
    """The hooks of one kind; each has a default that does nothing."""

    name: str = ""

    def __init__(self, deployer: Deployer):
        self.deployer = deployer

    def selects(self, node: PlanNode) -> bool:
        """Its nodes: the compiler puts a kind's options under its name."""
        return self.name in node.options

    def resources(self, plan: Plan, nodes: list[PlanNode]) -> list[Resource]:
        """What `after_links` will make, journaled before anything exists."""
        return []

    def problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        """What stops these nodes on this machine (raises nothing, creates nothing)."""
        return []

    def after_links(self, plan: Plan, nodes: list[PlanNode], journal: Journal, phases: Phases) -> None:
        """Start what the nodes run once their links exist and are addressed."""

    def status(self, plan: Plan, nodes: list[PlanNode], states: list[NodeState]) -> list[NodeState]:
        """The states, with what this kind knows of its nodes (and of anything inside them)."""
        return states


def handlers(deployer: Deployer) -> list[NodeKind]:
    """One handler of every kind in emulator/kinds.py, in its order."""
    out = []
    for kind in KINDS.values():
        module, _, cls = kind.handler.partition(":")
        out.append(getattr(importlib.import_module(module), cls)(deployer))
    return out


def replace(states: list[NodeState], changed: dict[str, NodeState]) -> list[NodeState]:
    """The states, with those of `changed` (by node name) in their place."""
    return [changed.get(s.node, s) for s in states]
