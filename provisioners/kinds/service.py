"""Services: containers whose command starts once their links exist and whose dependencies are healthy.

Any container's own command starts here, in the same order (a plain host's with the first level); a
service's health check gates the next level, and `status` says whether it still passes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal
from provisioners import health
from provisioners.base import NodeState
from provisioners.kinds import NodeKind, replace

THREADS = 8


def _check(node: PlanNode) -> dict | None:
    return node.options.get("service", {}).get("healthcheck")


class Service(NodeKind):
    name = "service"

    def selects(self, node: PlanNode) -> bool:
        return self.deployer.is_container(node) and ("service" in node.options or bool(node.options.get("command")))

    def after_links(self, plan: Plan, nodes: list[PlanNode], journal: Journal, phases: Phases) -> None:
        deployer = self.deployer
        boxes = {n.name: n for n in nodes}
        order = health.levels({name: n.options.get("service", {}).get("depends_on", []) for name, n in boxes.items()})
        started = [n for n in nodes if n.options.get("command") or _check(n)]
        with phases.phase("commands", total=len(started)) as step:
            for level in order:  # links exist and are addressed by now; dependencies are healthy
                for node in (boxes[name] for name in level if boxes[name].options.get("command")):
                    cmd = node.options["command"]
                    deployer.engine_of(node).run_detached(deployer.container_name(node),
                                                          ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd))
                    step.advance(0 if _check(node) else 1)
                checked = [boxes[name] for name in level if _check(boxes[name])]
                with ThreadPoolExecutor(max(1, min(THREADS, len(checked)))) as pool:
                    for _ in pool.map(self._wait_healthy, checked):
                        step.advance(1)

    def _wait_healthy(self, node: PlanNode) -> str:
        return health.wait_healthy(node.name, node.netns, _check(node),
                                   lambda argv: self.deployer.exec_argv(node, argv))

    def status(self, plan: Plan, nodes: list[PlanNode], states: list[NodeState]) -> list[NodeState]:
        seen = {s.node: s for s in states}
        changed = {}
        for node in (n for n in nodes if "service" in n.options):
            was = seen[node.name]
            state, detail = was.state, was.detail
            if _check(node) and state == "running":
                ok, said = health.probe(node.netns, _check(node),
                                        lambda argv, n=node: self.deployer.exec_argv(n, argv))
                detail += f" {'healthy' if ok else 'unhealthy'}: {said}"
                state = "running" if ok else "unhealthy"
            changed[node.name] = NodeState(node.name, "service", state, detail)
        return replace(states, changed)
