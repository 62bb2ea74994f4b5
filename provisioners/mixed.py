"""Docker and LXD hosts in one experiment (with plain namespaces beside them, as every engine allows).

Each container call goes to the engine that owns the node; the wiring is the shared
code of containers.py, done once for all of them.
"""

from __future__ import annotations

from emulator.compiler.plan import Plan, PlanNode
from provisioners.containers import ContainerProvisioner
from provisioners.docker import DockerProvisioner
from provisioners.lxd import LxdProvisioner


class MixedProvisioner(ContainerProvisioner):
    name = "mixed"

    def __init__(self, executor=None):
        super().__init__(executor)
        self.engines: dict[str, ContainerProvisioner] = {"docker": DockerProvisioner(self.ex),
                                                         "lxd": LxdProvisioner(self.ex)}

    def is_container(self, node: PlanNode) -> bool:
        return node.kind == "host" and node.options.get("engine") in self.engines

    def _owner(self, name: str) -> ContainerProvisioner:
        # the compiler names LXD instances ce-<tag>-<node> and Docker containers ce.<exp>.<node>
        return self.engines["lxd" if name.startswith("ce-") else "docker"]

    def engine_problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        out = []
        for name, engine in self.engines.items():
            mine = [n for n in nodes if n.options.get("engine") == name]
            if mine:
                out += engine.engine_problems(plan, mine)
        return out

    def start(self, plan: Plan, node: PlanNode) -> int:
        return self.engines[node.options["engine"]].start(plan, node)

    def containers_of(self, experiment: str) -> dict[str, str]:
        return self._ask(experiment)[0]

    def _ask(self, experiment: str) -> tuple[dict[str, str], list[str]]:
        found: dict[str, str] = {}
        unasked: list[str] = []
        for engine in self.engines.values():
            mine, why = engine._ask(experiment)
            found.update(mine)
            unasked += why
        return found, unasked

    def remove(self, name: str) -> None:
        self._owner(name).remove(name)

    def run_detached(self, name: str, argv: list[str]) -> None:
        self._owner(name).run_detached(name, argv)

    def exec_prefix(self, name: str) -> list[str]:
        return self._owner(name).exec_prefix(name)
