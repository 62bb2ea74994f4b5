"""Hosts as LXD system containers (pylxd, local socket): the engine's hooks; the Deployer (deployer.py) does the rest.

The node image has no init system (debootstrap minbase), so each instance runs
`sleep infinity` as its init. Instances carry `user.cloudemu-exp` in their
config: `down` removes exactly the instances that say this experiment.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from emulator.compiler.plan import MARKER_KEY, Plan, PlanNode
from provisioners import computenodes, images
from provisioners.base import HostEngine, PreflightError

OWNER_KEY = f"user.{MARKER_KEY}"


class RequestCount:
    """LXD API requests this process made: a worker reports them, the cost of going through a cluster's API."""

    def __init__(self):
        self.made, self.lock = 0, threading.Lock()

    def __call__(self, response, **_) -> None:  # a requests response hook
        with self.lock:
            self.made += 1


REQUESTS = RequestCount()


def instances(client) -> list[dict[str, Any]]:
    """Every instance in one request (pylxd's objects would each fetch themselves again, and on a cluster fail for
    those of an offline member). An offline member's have no config: only their name, location and status."""
    return client.api.instances.get(params={"recursion": 1}).json()["metadata"]


def owner(instance: dict[str, Any]) -> str | None:
    return (instance.get("config") or {}).get(OWNER_KEY)


def members(client) -> dict[str, dict[str, Any]]:
    """A cluster's members in one request: name -> LXD's record (status, message, url, ...)."""
    return {m["server_name"]: m for m in client.api.cluster.members.get(params={"recursion": 1}).json()["metadata"]}


def remove_instance(client, name: str, tries: int = 50) -> bool:
    """Stop and delete; the instance may be stopping already (down ends the processes in its namespace). False if
    it was gone already; LXD's error once `tries` attempts, 0.1 s apart, all failed."""
    import pylxd.exceptions

    for attempt in itertools.count(1):
        try:
            instance = client.instances.get(name)
            if instance.status.lower() != "stopped":
                instance.stop(force=True, wait=True)
            instance.delete(wait=True)
            return True
        except pylxd.exceptions.NotFound:
            return False
        except pylxd.exceptions.LXDAPIException:
            if attempt >= tries:
                raise
            time.sleep(0.1)  # busy with a stop operation of its own


class LxdEngine(HostEngine):
    name = "lxd"

    def __init__(self, executor=None):
        super().__init__(executor)
        self._local = threading.local()

    @property
    def client(self):
        """One client per thread: pylxd's session keeps a single connection, so threads sharing one queue on it."""
        if getattr(self._local, "client", None) is None:
            self._local.client = images.lxd_client()
            self._local.client.api.session.hooks["response"].append(REQUESTS)
        return self._local.client

    @property
    def clustered(self) -> bool:
        """This daemon is a member of an LXD cluster: instances are placed on members by `target`, the machine
        name the placement chose (member name = machine name)."""
        return bool(self.client.host_info["environment"].get("server_clustered"))

    def engine_problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        try:
            client = self.client
        except PreflightError as exc:
            return [str(exc)]
        problems = []
        if self.clustered:
            status = {name: m["status"].lower() for name, m in members(client).items()}
            for machine in sorted({n.machine for n in nodes}):
                if machine not in status:
                    problems.append(f"machine {machine} is not a member of this LXD cluster (members: "
                                    f"{', '.join(sorted(status))}): name the machines as their members")
                elif status[machine] != "online":
                    problems.append(f"LXD cluster member {machine} is {status[machine]}: bring it back or "
                                    "'lxc cluster evacuate' it and plan without it")
        for image in sorted({n.options["image"] for n in nodes}):
            if not client.images.exists(images.lxd_alias(image), alias=True):
                hint = "'cloudemu image build --engine lxd'" if image == images.DEFAULT_IMAGE else "'lxc image import'"
                problems.append(f"image {images.lxd_alias(image)} is not in LXD and no image server can be reached: "
                                f"make it with {hint}")
        taken = {i["name"] for i in instances(client)}
        clash = [self.container_name(n) for n in nodes if self.container_name(n) in taken]
        if clash:
            problems.append(f"instance(s) {', '.join(clash[:5])} already exist; if left by an earlier run, "
                            f"'cloudemu down {plan.experiment}' removes them, otherwise pick another --name")
        return problems

    def start(self, plan: Plan, node: PlanNode) -> int:
        # on a cluster: through its API, on the member the plan says; then where it landed is checked
        target = node.machine if self.clustered else None
        instance = self.client.instances.create(self._config(plan, node), wait=True, target=target)
        if target is not None and instance.location != target:
            raise RuntimeError(f"LXD placed {instance.name} on {instance.location}, the plan says {target}")
        instance.start(wait=True)
        return instance.state().pid

    def _config(self, plan: Plan, node: PlanNode) -> dict[str, Any]:
        o = node.options
        config = {"raw.lxc": "lxc.init.cmd = /bin/sleep infinity", OWNER_KEY: plan.experiment,
                  "user.cloudemu-node": node.name}
        config.update({f"environment.{k}": v for k, v in o.get("env", {}).items()})
        if o.get("cpu"):
            config["limits.cpu.allowance"] = f"{int(float(o['cpu']) * 100)}%"
        if o.get("memory"):
            config["limits.memory"] = f"{int(o['memory'])}MiB"
        volumes = list(o.get("volumes", []))
        devices: dict[str, dict[str, str]] = {}
        if o.get("compute", {}).get("agent") == "builtin":
            # Its own OVS, VM namespaces and a proc of its own: a privileged, nesting container with the
            # tun device. Privileged, so that the mounted node directory stays writable by root inside.
            computenodes.prepare([node])
            volumes += computenodes.container_mounts(node)
            config.update({"security.privileged": "true", "security.nesting": "true"})
            devices["tun"] = {"type": "unix-char", "source": "/dev/net/tun", "path": "/dev/net/tun"}
        devices.update({f"vol{i}": {"type": "disk", "source": v.split(":")[0], "path": v.split(":")[1],
                                    **({"readonly": "true"} if v.endswith(":ro") else {})}
                        for i, v in enumerate(volumes)})
        return {"name": self.container_name(node), "source": {"type": "image", "alias": images.lxd_alias(o["image"])},
                "config": config, "devices": devices}

    def containers_of(self, experiment: str) -> dict[str, str]:
        """The experiment's instances here: on a cluster member, those located on this member only (each machine's
        `down` removes its own; the cluster's API lists every member's)."""
        here = self.client.host_info["environment"].get("server_name") if self.clustered else None
        return {i["name"]: i["status"] for i in instances(self.client)
                if owner(i) == experiment and (here is None or i["location"] == here)}

    def remove(self, name: str) -> None:
        remove_instance(self.client, name)

    def run_detached(self, name: str, argv: list[str]) -> None:
        # pylxd's execute waits for the command; a daemon-style start goes through the CLI without waiting
        self.ex.run(["lxc", "exec", name, "--", "/bin/sh", "-c", 'nohup "$@" >/dev/null 2>&1 &', "sh", *argv])

    def exec_prefix(self, name: str) -> list[str]:
        return ["lxc", "exec", name, "--"]
