"""The one Deployer: every plan, whatever engines its hosts use and whatever kinds its nodes are, is made
by the fabric (provisioners/fabric.py: namespaces, switches, bridges, links, tunnels, shaping, published
ports) around the hosts each engine starts (provisioners.base.HostEngine: start, list, remove, run, exec),
then each node kind's own work (provisioners/kinds/: compute agents, then services by dependency level).

Named phases, in order: preflight; journal; hosts by engine with the fabric; after the links, each kind.
Each container starts with no network; its network namespace is then named `ce.<exp>.<node>` (`ip netns
attach`), so links, addresses and shaping are made exactly as for a plain namespace. Plain hosts stay
plain namespaces; hosts of several engines share one plan. The journal records each container with its
engine, so `down` asks only the engines the experiment used.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal, Resource
from provisioners import kinds
from provisioners.base import HostEngine, NodeState, PreflightError, Provisioner, unchecked
from provisioners.fabric import Fabric

THREADS = 8  # the engines' own limits are near 4-7 containers/s: more threads only queue


class Deployer(Provisioner):
    """The fabric, the container engines and the node kinds, each in its phase."""

    name = "deployer"

    def __init__(self, executor=None, engines: dict[str, HostEngine] | None = None):
        super().__init__(executor)
        self.fabric = Fabric(self.ex)
        self.engines = engines if engines is not None else host_engines(self.ex)
        self.kinds = kinds.handlers(self)

    def engine_of(self, node: PlanNode) -> HostEngine:
        return self.engines[node.options["engine"]]

    def is_container(self, node: PlanNode) -> bool:
        return node.kind == "host" and node.options.get("engine") in self.engines

    container_name = staticmethod(HostEngine.container_name)

    def _by_kind(self, plan: Plan) -> list[tuple[kinds.NodeKind, list[PlanNode]]]:
        return [(kind, [n for n in plan.nodes if n.kind == "host" and kind.selects(n)]) for kind in self.kinds]

    # -- the phases ------------------------------------------------------
    def resources(self, plan: Plan) -> list[Resource]:
        boxes = [container_resource(n) for n in plan.nodes if self.is_container(n)]
        out = boxes + self.fabric.resources(plan)
        for kind, nodes in self._by_kind(plan):
            out += kind.resources(plan, nodes) if nodes else []
        return out

    def preflight(self, plan: Plan) -> None:
        problems = self.fabric.problems(plan)
        for name, engine in self.engines.items():
            mine = [n for n in plan.nodes if self.is_container(n) and n.options["engine"] == name]
            if mine:
                problems += engine.engine_problems(plan, mine)
        for kind, nodes in self._by_kind(plan):
            problems += kind.problems(plan, nodes) if nodes else []
        if problems:
            raise PreflightError("; ".join(problems))

    def create(self, plan: Plan, journal: Journal, phases: Phases) -> None:
        with phases.phase("journal"):
            journal.plan(self.resources(plan))
        self.fabric.create(plan, journal, phases, self.make_hosts)
        for kind, nodes in self._by_kind(plan):
            if nodes:
                kind.after_links(plan, nodes, journal, phases)

    def make_hosts(self, plan: Plan, hosts: list[PlanNode], journal: Journal, advance) -> None:
        """Plain hosts as namespaces, the others by their engines, whose namespaces then get our names."""
        self.fabric.make_namespaces([n for n in hosts if not self.is_container(n)], journal, advance)
        boxes = [n for n in hosts if self.is_container(n)]

        def start(node: PlanNode) -> tuple[PlanNode, int]:
            pid = self.engine_of(node).start(plan, node)
            advance(1)
            return node, pid

        with ThreadPoolExecutor(THREADS) as pool:
            started = list(pool.map(start, boxes))
        journal.mark([container_resource(n) for n in boxes], "created")
        self.ex.ip_batch(f"netns attach {n.netns} {pid}" for n, pid in started)
        journal.mark([Resource("netns", n.netns) for n in boxes], "created")

    def destroy(self, experiment: str, journaled: list[Resource], phases: Phases) -> list[Resource]:
        # Engines remove containers at their own pace: let them work while the switches,
        # links and namespace names go, rather than one after the other.
        used = self._engines_in(journaled)
        with ThreadPoolExecutor(1) as background:
            removing = background.submit(self._remove_all, experiment, used)
            left = self.fabric.destroy(experiment, journaled, phases)
            with phases.phase("containers"):
                removing.result()
        found, unasked = self._ask(experiment, used)
        left += [Resource("container", name, engine) for name, (engine, _) in found.items()]
        return left + [unchecked(*why.split(": ", 1)) for why in unasked]  # "could not ask" is not "none left"

    def _engines_in(self, journaled: list[Resource]) -> list[str]:
        """The engines whose containers the journal names (its entry says which; an older journal does not)."""
        named = {r.netns or "*" for r in journaled if r.kind == "container"}
        return list(self.engines) if "*" in named else sorted(n for n in named if n in self.engines)

    def owned(self, experiment: str) -> tuple[list[Resource], list[str]]:
        left, unasked = self.fabric.owned(experiment)
        found, engines_unasked = self._ask(experiment, list(self.engines))
        return left + [Resource("container", name, engine) for name, (engine, _) in found.items()], \
            unasked + engines_unasked

    def _ask(self, experiment: str, engines: list[str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """The experiment's containers in these engines (name -> engine, state), and the engines that could
        not be asked ("engine: why")."""
        found: dict[str, tuple[str, str]] = {}
        unasked: list[str] = []
        for name in engines:
            try:
                found.update((c, (name, state)) for c, state in self.engines[name].containers_of(experiment).items())
            except Exception as exc:  # noqa: BLE001 - a daemon gone away raises its client's own kinds (requests, pylxd)
                unasked.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return found, unasked

    def _remove_all(self, experiment: str, engines: list[str]) -> None:
        found, _ = self._ask(experiment, engines)
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda item: self.engines[item[1][0]].remove(item[0]), found.items()))

    # -- using it --------------------------------------------------------
    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if self.is_container(node):
            return [*self.engine_of(node).exec_prefix(self.container_name(node)), *argv]
        if node.kind == "vm" and node.options.get("engine") in self.engines:  # a VM inside a compute container
            return [*self.engine_of(node).exec_prefix(node.options["container"]), "ip", "netns", "exec", node.netns, *argv]
        return self.fabric.exec_argv(node, argv)

    def net_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if node.kind == "vm":
            return self.exec_argv(node, argv)  # its namespace exists only inside the compute container
        return self.fabric.exec_argv(node, argv)  # the attached namespace: same network, no engine

    def status(self, plan: Plan) -> list[NodeState]:
        used = sorted({n.options["engine"] for n in plan.nodes if self.is_container(n)})
        asked, unasked = self._ask(plan.experiment, used)
        running = {name: state.lower() for name, (_, state) in asked.items()}
        nodes = {n.name: n for n in plan.nodes}
        out = []
        for state in self.fabric.status(plan):
            node = nodes[state.node]
            if self.is_container(node):
                seen = running.get(self.container_name(node), "unknown" if unasked else "missing")
                detail = f"{node.ip or ''} {node.options['image']} ({seen})".strip()
                if unasked:
                    detail += f"; could not ask {'; '.join(unasked)}"
                state = NodeState(node.name, node.kind, "running" if seen == "running" else
                                  "unknown" if unasked else "missing", detail)
            out.append(state)
        for kind, selected in self._by_kind(plan):
            out = kind.status(plan, selected, out)
        return out


def container_resource(node: PlanNode) -> Resource:
    """A container's journal entry names its engine, so `down` asks only the engines the experiment used."""
    return Resource("container", HostEngine.container_name(node), node.options["engine"])


def host_engines(executor) -> dict[str, HostEngine]:
    """Every container engine of emulator/engines.py, built on one executor (their clients connect lazily)."""
    import importlib

    from emulator.engines import ENGINES

    out = {}
    for name, where in ENGINES.items():
        if where:
            module, _, cls = where.partition(":")
            out[name] = getattr(importlib.import_module(module), cls)(executor)
    return out
