"""Hosts as Docker containers, wired by us: switches, links, addresses and shaping as in the netns engine.

Each container starts with `network_mode=none`; its network namespace is then
named `ce.<exp>.<node>` (`ip netns attach`), so the links, addresses and shaping
are made exactly as for a plain namespace -- one code path for every engine.
A node's own `command` starts only after its links exist and are addressed.
Hosts without `provisioner: docker` in the same plan stay plain namespaces.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from emulator.compiler.plan import MARKER_KEY, Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal, Resource
from provisioners import images
from provisioners.base import NodeState, PreflightError
from provisioners.netns import NetnsProvisioner

#: Containers that run OVS or namespaces need these; --privileged fails on this kind of machine.
BASE_CAPS = ["NET_ADMIN", "NET_RAW"]
OVS_CAPS = {"SYS_ADMIN"}
THREADS = 8  # the engine's own limit is near 7 containers/s: more threads only queue
NODE_LABEL = "cloudemu-node"


def is_container(node: PlanNode) -> bool:
    return node.kind == "host" and node.options.get("engine") == "docker"


def container_name(node: PlanNode) -> str:
    return node.netns  # ce.<exp>.<node>: the experiment is in the name as well as in the label


class DockerProvisioner(NetnsProvisioner):
    name = "docker"

    def __init__(self, executor=None):
        super().__init__(executor)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    # -- what will exist -------------------------------------------------
    def resources(self, plan: Plan) -> list[Resource]:
        containers = [Resource("container", container_name(n)) for n in plan.nodes if is_container(n)]
        return containers + super().resources(plan)

    def preflight(self, plan: Plan) -> None:
        problems: list[str] = []
        try:
            super().preflight(plan)
        except PreflightError as exc:
            problems.append(str(exc))
        try:
            client = self.client
        except PreflightError as exc:
            raise PreflightError("; ".join([*problems, str(exc)])) from None
        import docker.errors

        for image in sorted({n.options["image"] for n in plan.nodes if is_container(n)}):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                hint = "'cloudemu image build'" if image == images.DEFAULT_IMAGE else "'docker load' or 'docker import'"
                problems.append(f"image {image} is not in the Docker engine and no registry can be reached: make it "
                                f"with {hint}")
        taken = {c.name for c in client.containers.list(all=True)}
        clash = [container_name(n) for n in plan.nodes if is_container(n) and container_name(n) in taken]
        if clash:
            problems.append(f"container(s) {', '.join(clash[:5])} already exist; if left by an earlier run, "
                            f"'cloudemu down {plan.experiment}' removes them, otherwise pick another --name")
        if problems:
            raise PreflightError("; ".join(problems))

    # -- create ----------------------------------------------------------
    def make_hosts(self, plan: Plan, hosts: list[PlanNode], journal: Journal, advance) -> None:
        plain = [n for n in hosts if not is_container(n)]
        super().make_hosts(plan, plain, journal, advance)
        boxes = [n for n in hosts if is_container(n)]

        def start(node: PlanNode) -> tuple[PlanNode, int]:
            container = self.client.containers.run(**self._run_args(plan, node))
            container.reload()
            advance(1)
            return node, container.attrs["State"]["Pid"]

        with ThreadPoolExecutor(THREADS) as pool:
            started = list(pool.map(start, boxes))
        journal.mark([Resource("container", container_name(n)) for n in boxes], "created")
        self.ex.ip_batch(f"netns attach {n.netns} {pid}" for n, pid in started)
        journal.mark([Resource("netns", n.netns) for n in boxes], "created")

    def _run_args(self, plan: Plan, node: PlanNode) -> dict[str, Any]:
        o = node.options
        caps = sorted(set(BASE_CAPS) | set(o.get("caps", ())))
        args: dict[str, Any] = {
            "image": o["image"], "command": ["sleep", "infinity"], "name": container_name(node), "hostname": node.name,
            "detach": True, "network_mode": "none", "init": True, "cap_add": caps,
            "labels": {MARKER_KEY: plan.experiment, NODE_LABEL: node.name},
            "environment": o.get("env", {}), "volumes": o.get("volumes", []),
        }
        if OVS_CAPS & set(caps):  # OVS or namespaces inside: what works where --privileged does not
            args.update(devices=["/dev/net/tun:/dev/net/tun"], security_opt=["seccomp=unconfined", "apparmor=unconfined"])
        if o.get("cpu"):
            args["nano_cpus"] = int(float(o["cpu"]) * 1e9)
        if o.get("memory"):
            args["mem_limit"] = f"{int(o['memory'])}m"
        return args

    def create(self, plan: Plan, journal: Journal, phases: Phases) -> None:
        super().create(plan, journal, phases)
        commands = [n for n in plan.nodes if is_container(n) and n.options.get("command")]
        with phases.phase("commands", total=len(commands)) as step:
            for node in commands:  # links exist and are addressed by now: the start order users expect
                cmd = node.options["command"]
                argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
                self.client.containers.get(container_name(node)).exec_run(argv, detach=True)
                step.advance(1)

    # -- destroy ---------------------------------------------------------
    def destroy(self, experiment: str, journaled: list[Resource], phases: Phases) -> list[Resource]:
        # The engine removes containers at its own pace (~25/s): let it work while the
        # switches, links and namespace names go, rather than one after the other.
        with ThreadPoolExecutor(1) as background:
            removing = background.submit(self._remove_containers, experiment)
            left = super().destroy(experiment, journaled, phases)
            with phases.phase("containers"):
                removing.result()
        return left + [Resource("container", c.name) for c in self._containers_of(experiment)]

    def _containers_of(self, experiment: str) -> list:
        try:
            return self.client.containers.list(all=True, filters={"label": f"{MARKER_KEY}={experiment}"})
        except PreflightError:
            return []  # no engine, so no container of ours either

    def _remove_containers(self, experiment: str) -> None:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda c: c.remove(force=True), self._containers_of(experiment)))

    # -- using it --------------------------------------------------------
    def exec_argv(self, node: PlanNode, argv: list[str]) -> list[str]:
        if is_container(node):
            return ["docker", "exec", container_name(node), *argv]
        return super().exec_argv(node, argv)

    def status(self, plan: Plan) -> list[NodeState]:
        running = {c.name: c.status for c in self._containers_of(plan.experiment)}
        out = []
        for state in super().status(plan):
            node = next(n for n in plan.nodes if n.name == state.node)
            if is_container(node):
                status = running.get(container_name(node), "missing")
                state = NodeState(node.name, node.kind, "running" if status == "running" else "missing",
                                  f"{node.ip or ''} {node.options['image']} ({status})".strip())
            out.append(state)
        return out
