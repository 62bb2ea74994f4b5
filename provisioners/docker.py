"""Hosts as Docker containers (Docker SDK): the engine's hooks; the Deployer (deployer.py) does the rest."""

from __future__ import annotations

import time
from typing import Any

from emulator.compiler.plan import MARKER_KEY, Plan, PlanNode
from provisioners import computenodes, images
from provisioners.base import HostEngine, PreflightError

#: Containers that run OVS or namespaces need these; --privileged fails on this kind of machine.
BASE_CAPS = ["NET_ADMIN", "NET_RAW"]
OVS_CAPS = {"SYS_ADMIN"}
NODE_LABEL = "cloudemu-node"


class DockerEngine(HostEngine):
    name = "docker"

    def __init__(self, executor=None):
        super().__init__(executor)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = images.docker_client()
        return self._client

    def engine_problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        try:
            client = self.client
        except PreflightError as exc:
            return [str(exc)]
        import docker.errors

        problems = []
        for image in sorted({n.options["image"] for n in nodes}):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                hint = "'cloudemu image build'" if image == images.DEFAULT_IMAGE else "'docker load' or 'docker import'"
                problems.append(f"image {image} is not in the Docker engine and no registry can be reached: make it "
                                f"with {hint}")
        taken = {c.name for c in client.containers.list(all=True)}
        clash = [self.container_name(n) for n in nodes if self.container_name(n) in taken]
        if clash:
            problems.append(f"container(s) {', '.join(clash[:5])} already exist; if left by an earlier run, "
                            f"'cloudemu down {plan.experiment}' removes them, otherwise pick another --name")
        return problems

    def start(self, plan: Plan, node: PlanNode) -> int:
        container = self.client.containers.run(**self._run_args(plan, node))
        container.reload()
        return container.attrs["State"]["Pid"]

    def _run_args(self, plan: Plan, node: PlanNode) -> dict[str, Any]:
        o = node.options
        caps = sorted(set(BASE_CAPS) | set(o.get("caps", ())))
        args: dict[str, Any] = {
            "image": o["image"], "command": ["sleep", "infinity"], "name": self.container_name(node),
            "hostname": node.name, "detach": True, "network_mode": "none", "init": True, "cap_add": caps,
            "labels": {MARKER_KEY: plan.experiment, NODE_LABEL: node.name},
            "environment": o.get("env", {}), "volumes": o.get("volumes", []),
        }
        if OVS_CAPS & set(caps):  # OVS or namespaces inside: what works where --privileged does not
            args.update(devices=["/dev/net/tun:/dev/net/tun"], security_opt=["seccomp=unconfined", "apparmor=unconfined"])
        if o.get("compute", {}).get("agent") == "builtin":  # the node's directory, this code, its packages
            computenodes.prepare([node])
            args["volumes"] = [*args["volumes"], *computenodes.container_mounts(node)]
        if o.get("cpu"):
            args["nano_cpus"] = int(float(o["cpu"]) * 1e9)
        if o.get("memory"):
            args["mem_limit"] = f"{int(o['memory'])}m"
        return args

    def containers_of(self, experiment: str) -> dict[str, str]:
        found = self.client.containers.list(all=True, filters={"label": f"{MARKER_KEY}={experiment}"})
        return {c.name: c.status for c in found}

    def remove(self, name: str) -> None:
        """Gone already is fine: machines that share one engine (the testbed) may both remove it."""
        import docker.errors

        for _ in range(300):
            try:
                self.client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress; wait until it is gone
                    raise
                time.sleep(0.1)

    def run_detached(self, name: str, argv: list[str]) -> None:
        self.client.containers.get(name).exec_run(argv, detach=True)

    def exec_prefix(self, name: str) -> list[str]:
        return ["docker", "exec", name]
