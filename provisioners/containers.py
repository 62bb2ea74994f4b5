"""The one Deployer: every plan, whatever engines its hosts use, is made by the netns engine's fabric
(namespaces, switches, bridges, links, tunnels, shaping, published ports) composed with each container
engine's few hooks (provisioners.base.HostEngine: start, list, remove, run, exec).

Each container starts with no network; its network namespace is then named
`ce.<exp>.<node>` (`ip netns attach`), so links, addresses and shaping are made
exactly as for a plain namespace. A node's own `command` starts only after its
links exist and are addressed. Plain hosts stay plain namespaces; hosts of several
engines share one plan. The journal records each container with its engine.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal, Resource
from provisioners import computenodes, health
from provisioners.base import HostEngine, NodeState, PreflightError, unchecked
from provisioners.netns import NetnsProvisioner

THREADS = 8  # the engines' own limits are near 4-7 containers/s: more threads only queue


class Deployer(NetnsProvisioner):
    """The fabric (NetnsProvisioner) and the container engines, each in its phase."""

    name = "deployer"

    def __init__(self, executor=None, engines: dict[str, HostEngine] | None = None):
        super().__init__(executor)
        self.engines = engines if engines is not None else host_engines(self.ex)

    def engine_of(self, node: PlanNode) -> HostEngine:
        return self.engines[node.options["engine"]]

    def is_container(self, node: PlanNode) -> bool:
        return node.kind == "host" and node.options.get("engine") in self.engines

    container_name = staticmethod(HostEngine.container_name)

    def resources(self, plan: Plan) -> list[Resource]:
        boxes = [container_resource(n) for n in plan.nodes if self.is_container(n)]
        return boxes + super().resources(plan)

    def preflight(self, plan: Plan) -> None:
        problems: list[str] = []
        try:
            super().preflight(plan)
        except PreflightError as exc:
            problems.append(str(exc))
        for name, engine in self.engines.items():
            mine = [n for n in plan.nodes if self.is_container(n) and n.options["engine"] == name]
            if mine:
                problems += engine.engine_problems(plan, mine)
        if problems:
            raise PreflightError("; ".join(problems))

    def make_hosts(self, plan: Plan, hosts: list[PlanNode], journal: Journal, advance) -> None:
        super().make_hosts(plan, [n for n in hosts if not self.is_container(n)], journal, advance)
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

    def create(self, plan: Plan, journal: Journal, phases: Phases) -> None:
        super().create(plan, journal, phases)
        boxes = {n.name: n for n in plan.nodes if self.is_container(n)}
        computes = [n for n in boxes.values() if n.options.get("compute", {}).get("agent") == "builtin"]
        if computes:
            with phases.phase("compute nodes", total=len(computes)) as step:
                computenodes.write_peers(computes, computenodes.underlay_peers(plan))
                for node in computes:
                    self.engine_of(node).run_detached(self.container_name(node), computenodes.container_command(node))
                computenodes.wait_ready(computes, on_ready=step.advance)
                journal.mark([Resource("dir", n.options["compute"]["dir"]) for n in computes], "created")
        order = health.levels({name: n.options.get("service", {}).get("depends_on", []) for name, n in boxes.items()})
        started = [n for n in boxes.values() if n.options.get("command") or n.options.get("service", {}).get("healthcheck")]
        with phases.phase("commands", total=len(started)) as step:
            for level in order:  # links exist and are addressed by now; dependencies are healthy
                for node in (boxes[name] for name in level if boxes[name].options.get("command")):
                    cmd = node.options["command"]
                    self.engine_of(node).run_detached(self.container_name(node),
                                                      ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd))
                    step.advance(0 if node.options.get("service", {}).get("healthcheck") else 1)
                checked = [boxes[name] for name in level if boxes[name].options.get("service", {}).get("healthcheck")]
                with ThreadPoolExecutor(max(1, min(THREADS, len(checked)))) as pool:
                    for _ in pool.map(self._wait_healthy, checked):
                        step.advance(1)

    def _wait_healthy(self, node: PlanNode) -> str:
        check = node.options["service"]["healthcheck"]
        return health.wait_healthy(node.name, node.netns, check, lambda argv: self.exec_argv(node, argv))

    def destroy(self, experiment: str, journaled: list[Resource], phases: Phases) -> list[Resource]:
        # Engines remove containers at their own pace: let them work while the switches,
        # links and namespace names go, rather than one after the other.
        used = self._engines_in(journaled)
        with ThreadPoolExecutor(1) as background:
            removing = background.submit(self._remove_all, experiment, used)
            left = super().destroy(experiment, journaled, phases)
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
        left, unasked = super().owned(experiment)
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

    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if self.is_container(node):
            return [*self.engine_of(node).exec_prefix(self.container_name(node)), *argv]
        if node.kind == "vm" and node.options.get("engine") in self.engines:  # a VM inside a compute container
            return [*self.engine_of(node).exec_prefix(node.options["container"]), "ip", "netns", "exec", node.netns, *argv]
        return super().exec_argv(node, argv)

    def net_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if node.kind == "vm":
            return self.exec_argv(node, argv)  # its namespace exists only inside the compute container
        return NetnsProvisioner.exec_argv(self, node, argv)  # the attached namespace: same network, no engine

    def status(self, plan: Plan) -> list[NodeState]:
        used = sorted({n.options["engine"] for n in plan.nodes if self.is_container(n)})
        asked, unasked = self._ask(plan.experiment, used)
        running = {name: state for name, (_, state) in asked.items()}
        nodes = {n.name: n for n in plan.nodes}
        out = []
        for state in super().status(plan):
            node = nodes.get(state.node)  # None: a VM (see below)
            if node is not None and self.is_container(node):
                status = running.get(self.container_name(node), "unknown" if unasked else "missing")
                up = status.lower() == "running"
                detail = f"{node.ip or ''} {node.options['image']} ({status.lower()})".strip()
                if unasked:
                    detail += f"; could not ask {'; '.join(unasked)}"
                kind = "service" if "service" in node.options else "compute" if "compute" in node.options else node.kind
                check = node.options.get("service", {}).get("healthcheck")
                if check and up:
                    ok, seen = health.probe(node.netns, check, lambda argv, n=node: self.exec_argv(n, argv))
                    detail += f" {'healthy' if ok else 'unhealthy'}: {seen}"
                    up = ok
                state = NodeState(node.name, kind, "running" if up else "unhealthy" if status.lower() == "running"
                                  else "unknown" if unasked else "missing", detail)
            out.append(state)
        inside = self._vm_namespaces_in_containers(plan, running)
        return [NodeState(s.node, s.kind, "running", s.detail) if s.kind == "vm" and s.node in inside else s for s in out]

    def _vm_namespaces_in_containers(self, plan: Plan, running: dict[str, str]) -> set[str]:
        """VMs whose namespace exists inside their (running) compute container."""
        boxes = {n.name: n for n in plan.nodes if self.is_container(n) and "compute" in n.options}
        found = set()
        for name, node in boxes.items():
            if running.get(self.container_name(node), "").lower() != "running":
                continue
            proc = self.ex.run([*self.engine_of(node).exec_prefix(self.container_name(node)), "ip", "netns", "list"],
                               check=False)
            present = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
            found |= {vm["name"] for vm in plan.vms if vm["on"] == name and vm["netns"] in present}
        return found


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
