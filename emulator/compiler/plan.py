"""The Plan: everything `up` will create, as plain data that serializes to JSON.

`deploy` executes exactly this; `cloudemu plan` prints it. Nothing in here
touches the machine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

PLAN_FORMAT = 1
#: Prefix of every network namespace cloudemu makes: ce.<experiment>.<node>
NETNS_PREFIX = "ce."
#: The ifalias and OVS external_ids key that mark a device as an experiment's.
MARKER_KEY = "cloudemu-exp"
#: The node image `cloudemu image build` makes (Debian with OVS, iproute2, ping, iperf3, python3).
DEFAULT_IMAGE = "cloudemu/node:1"


def netns_name(experiment: str, node: str) -> str:
    return f"{NETNS_PREFIX}{experiment}.{node}"


def container_name(engine: str, experiment: str, tag: str, node: str) -> str:
    """Docker takes the namespace's name; LXD instance names are host names (no dots or underscores),
    so they carry the experiment's tag instead, which is unique among live experiments."""
    if engine == "lxd":
        return f"ce-{tag}-{node}".replace("_", "-")
    return netns_name(experiment, node)


def root_device(tag: str, node: str, iface: str | None = None) -> str:
    """A device in the machine's root namespace: <tag>-<node>[-<iface>]."""
    return f"{tag}-{node}-{iface}" if iface else f"{tag}-{node}"


def marker(experiment: str) -> str:
    """The ifalias that marks a root-namespace device as this experiment's."""
    return f"{MARKER_KEY}={experiment}"


@dataclass
class PlanEnd:
    node: str
    iface: str  # the name the user sees (eth0)
    dev: str  # the device's real name where it lives
    netns: str | None  # None: the machine's root namespace
    mac: str | None = None
    ip: str | None = None


@dataclass
class PlanLink:
    id: int
    a: PlanEnd
    b: PlanEnd
    params: dict[str, Any] = field(default_factory=dict)
    kind: str = "veth"
    machine: str = "local"

    @property
    def root_end(self) -> PlanEnd | None:
        """An end in the root namespace (deleting it removes the pair), if any."""
        return self.a if self.a.netns is None else (self.b if self.b.netns is None else None)


@dataclass
class PlanTunnel:
    """One machine's end of a link cut by placement: a VXLAN tunnel to the other machine.

    `realize` says how: `ovs` (a Linux vxlan device as a port of the switch's bridge), `bridge` (a
    Linux vxlan device on the Linux bridge) or `netns` (a Linux vxlan device made
    in the root namespace as `create_as`, then moved into the host's namespace and
    renamed, so its UDP socket stays on the underlay).
    """

    link: int
    vni: int
    end: PlanEnd
    peer_node: str
    peer_machine: str
    local_ip: str
    remote_ip: str
    realize: str
    port: int = 4789
    mtu: int = 1450
    create_as: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanNode:
    name: str
    kind: str
    machine: str = "local"
    netns: str | None = None  # hosts
    device: str | None = None  # switches and bridges: the bridge device
    ip: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    experiment: str
    tag: str
    subnet: str
    nodes: list[PlanNode] = field(default_factory=list)
    links: list[PlanLink] = field(default_factory=list)
    provisioner: str = "netns"
    format: int = PLAN_FORMAT
    machine: str = "local"
    tunnels: list[PlanTunnel] = field(default_factory=list)
    #: VMs on this machine's compute nodes: not created by a provisioner but by the nodes' agents,
    #: once `up` pushes their goal states (name, on, vpc, vni, cidr, gateway, ip, mac, host_ip, netns).
    vms: list[dict[str, Any]] = field(default_factory=list)

    # -- lookups ---------------------------------------------------------
    def node(self, name: str) -> PlanNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def hosts(self) -> list[PlanNode]:
        return [n for n in self.nodes if n.kind == "host"]

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for n in self.nodes:
            kinds[n.kind] = kinds.get(n.kind, 0) + 1
        return {
            "experiment": self.experiment,
            "provisioner": self.provisioner,
            "nodes": len(self.nodes),
            "links": len(self.links),
            "tunnels": len(self.tunnels),
            "kinds": kinds,
            "vms": len(self.vms),
            "shaped_links": sum(1 for link in self.links if link.params.get("bw")),
        }

    # -- serialization -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        nodes = [PlanNode(**n) for n in d["nodes"]]
        links = [PlanLink(**{**lk, "a": PlanEnd(**lk["a"]), "b": PlanEnd(**lk["b"])}) for lk in d["links"]]
        tunnels = [PlanTunnel(**{**t, "end": PlanEnd(**t["end"])}) for t in d.get("tunnels", ())]
        return cls(**{**d, "nodes": nodes, "links": links, "tunnels": tunnels})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))
