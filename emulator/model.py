"""The topology model: plain dataclasses that know no engine.

Every object remembers where it came from (file and line) so that errors found
late, in the compiler, still point at the line the user has to change.
"""

from __future__ import annotations

import dataclasses
import graphlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

#: Kinds a node may have. A `compute` node in a file is a host with role "compute" (its own OVS and a
#: goal-state agent); a `vm` is not a node at all but a port inside one (Topology.vms).
NODE_KINDS: dict[str, str] = {
    "host": "a network namespace",
    "switch": "an Open vSwitch bridge",
    "bridge": "a Linux bridge",
}
#: What the agent of a compute node listens on, as ACA does.
ACA_PORT = 50001
#: What a host run as a container may say about its container (the container engines read these).
CONTAINER_KEYS = frozenset({"provisioner", "image", "env", "command", "volumes", "caps", "ports"})
#: Kinds that forward frames (their ports live in the machine's root namespace).
SWITCHING_KINDS = frozenset({"switch", "bridge"})

#: Matched whole (fullmatch): `$` would let a trailing newline through into a device or namespace name.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
IFACE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
NAME_MAX = 32
IFNAMSIZ = 15  # Linux interface names: 15 characters plus the terminating NUL
#: Length of the per-experiment tag that prefixes names in the root namespace
#: ("abc-"), fixed so that name lengths can be checked before an experiment exists.
TAG_LEN = 3
ROOT_PREFIX_LEN = TAG_LEN + 1


@dataclass(frozen=True)
class Where:
    """A place in a topology source, for error messages."""

    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or (f"line {self.line}" if self.line else "<input>")


class CloudemuError(Exception):
    """Every error cloudemu means to report (the CLI catches this one class): a message that says what to do
    next, the exit code (2: bad input or wrong state, nothing was done; 1: something failed), and details
    for `-o json`."""

    exit_code = 1
    #: Said after the message on the command line.
    hint = ""

    def details(self) -> dict[str, Any]:
        return {}


class UnknownName(CloudemuError, LookupError):
    """A node, engine or experiment that is not there."""

    exit_code = 2

    def __str__(self) -> str:  # LookupError's would quote the message
        return str(self.args[0]) if self.args else ""


class TopologyError(CloudemuError, ValueError):
    """Bad input: names the file, line and field, and what to do about it."""

    exit_code = 2

    def __init__(self, message: str, *, where: Where | None = None, field: str | None = None):
        self.message = message
        self.where = where or Where()
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        head = str(self.where)
        if self.field:
            head += f": {self.field}"
        return f"{head}: {self.message}"

    def details(self) -> dict[str, Any]:
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.where.file,
            "line": self.where.line,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class LinkParams:
    """Shaping and framing of one link; None means "not set"."""

    bw: float | None = None  # Mbit/s
    delay: str | None = None  # e.g. "5ms"
    jitter: str | None = None
    loss: float | None = None  # percent
    mtu: int | None = None

    def needs_netem(self) -> bool:
        return bool(self.delay or self.jitter or self.loss)

    def merged_over(self, defaults: LinkParams) -> LinkParams:
        """These parameters, falling back to `defaults` field by field."""
        return LinkParams(
            **{k: (v if v is not None else getattr(defaults, k)) for k, v in vars(self).items()}
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str | None = None  # None: named by the compiler

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        node, _, iface = text.partition(":")
        return cls(node, iface or None)

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}" if self.iface else self.node


@dataclass
class Node:
    name: str
    kind: str = "host"
    ip: str | None = None  # "10.0.0.1/24"; hosts only
    mac: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific (datapath, stp...)
    where: Where = field(default_factory=Where)

    @property
    def role(self) -> str:
        """What the node is to the user: its kind, or "compute" for a host that runs an agent."""
        return self.options.get("role", self.kind)

    @property
    def switching(self) -> bool:
        return self.kind in SWITCHING_KINDS


@dataclass
class Link:
    a: Endpoint
    b: Endpoint
    params: LinkParams = field(default_factory=LinkParams)
    where: Where = field(default_factory=Where)

    @property
    def nodes(self) -> tuple[str, str]:
        return (self.a.node, self.b.node)


@dataclass
class Check:
    """A test the topology file declares, run by `cloudemu run` after pingall."""

    kind: str  # ping | exec | iperf
    args: dict[str, Any]
    where: Where = field(default_factory=Where)

    @property
    def title(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.kind}({inner})"


DEFAULT_SUBNET = "10.0.0.0/8"


@dataclass
class Bulk:
    """Generated nodes and links as plain lists and index arrays.

    A million-node region would cost seconds and a gigabyte as Node and Link
    objects; the compiler reads this form directly, and the objects are only
    made if someone asks for them.
    """

    names: list[str]
    kinds: list[str]
    src: Any  # link ends as indices into names (sequence or numpy array)
    dst: Any
    where: Where = field(default_factory=Where)


@dataclass
class Vpc:
    """A tenant network: VXLAN VNI and the subnet its VMs take addresses from (None: chosen by the compiler), or
    several named subnets (`cidr` is then the VPC's range), connected by a router (DVR) when `router`."""

    name: str
    vni: int | None = None
    cidr: str | None = None
    where: Where = field(default_factory=Where)
    subnets: dict[str, str] = field(default_factory=dict)  # name -> cidr
    router: bool = False
    dns: list[str] = field(default_factory=list)  # what DHCP gives its VMs


@dataclass
class Vm:
    """A VM: a port on compute node `on`, made by that node's agent when its goal state arrives."""

    name: str
    on: str
    vpc: str
    ip: str | None = None  # "10.1.0.5/24"
    mac: str | None = None
    where: Where = field(default_factory=Where)
    subnet: str | None = None  # in a VPC of several subnets: which (else the one holding `ip`, else the first)
    security_groups: tuple[str, ...] = ()
    dhcp: bool = False  # `ip: dhcp`: the VM takes its address by DHCP (its subnet then has DHCP on)


class Topology:
    """What the user asked for: nodes and links, before any placement."""

    def __init__(self, name: str, nodes: dict[str, Node] | None = None, links: list[Link] | None = None,
                 subnet: str = DEFAULT_SUBNET, link_defaults: LinkParams | None = None,
                 checks: list[Check] | None = None, source: str | None = None, subnet_where: Where | None = None):
        self.name = name
        self._nodes: dict[str, Node] = nodes if nodes is not None else {}
        self._links: list[Link] = links if links is not None else []
        self.bulk: list[Bulk] = []
        self.subnet = subnet
        self.link_defaults = link_defaults or LinkParams()
        self.checks: list[Check] = checks or []
        self.source = source
        self.subnet_where = subnet_where or Where()  # where the subnet was set, for errors about it
        self.node_defaults: dict[str, Any] = {}  # defaults.provisioner and defaults.image
        self.vpcs: dict[str, Vpc] = {}
        self.vms: dict[str, Vm] = {}
        self.security_groups: dict[str, list[dict[str, Any]]] = {}  # name -> rules (schema.security_group)

    @property
    def nodes(self) -> dict[str, Node]:
        self._materialize()
        return self._nodes

    @property
    def links(self) -> list[Link]:
        self._materialize()
        return self._links

    def add_bulk(self, bulk: Bulk) -> None:
        """Generated content; names are valid by construction, duplicates are checked when objects are made."""
        if self._nodes or self._links:
            self._materialize_one(bulk)
        else:
            self.bulk.append(bulk)

    def only_bulk(self) -> bool:
        """True while no object form exists: the compiler may read the arrays alone."""
        return bool(self.bulk) and not self._nodes and not self._links

    def _materialize(self) -> None:
        pending, self.bulk = self.bulk, []
        for bulk in pending:
            self._materialize_one(bulk)

    def _materialize_one(self, bulk: Bulk) -> None:
        names, where = bulk.names, bulk.where
        for name, kind in zip(names, bulk.kinds, strict=True):
            if kind == "compute":
                self.add_node(name, "host", where=where, role="compute", agent="builtin")
            else:
                self.add_node(name, kind, where=where)
        for a, b in zip(bulk.src, bulk.dst, strict=True):
            self.add_link(names[a], names[b], where=where)

    # -- building -------------------------------------------------------
    def add_node(self, name: str, kind: str = "host", *, where: Where | None = None, **opts: Any) -> Node:
        where = where or Where(self.source)
        check_name(name, "node", where)
        if name in self.nodes:
            first = self.nodes[name].where
            raise TopologyError(f"duplicate node {name!r} (first defined at {first})", where=where, field=f"nodes.{name}")
        if kind not in NODE_KINDS:
            raise TopologyError(
                f"unknown kind {kind!r}; expected one of: {', '.join(NODE_KINDS)}", where=where, field=f"nodes.{name}.kind"
            )
        ip = opts.pop("ip", None)
        mac = opts.pop("mac", None)
        node = Node(name, kind, ip, mac, opts, where)
        self.nodes[name] = node
        return node

    def add_link(self, a: str | Endpoint, b: str | Endpoint, *, where: Where | None = None, **params: Any) -> Link:
        where = where or Where(self.source)
        ea = a if isinstance(a, Endpoint) else Endpoint.parse(a)
        eb = b if isinstance(b, Endpoint) else Endpoint.parse(b)
        for ep in (ea, eb):
            if ep.node not in self.nodes:
                raise TopologyError(f"link to unknown node {ep.node!r}", where=where, field="links.endpoints")
            if ep.iface is not None and not IFACE_RE.fullmatch(ep.iface):
                raise TopologyError(
                    f"interface name {ep.iface!r} must start with a letter and hold only letters, digits and _",
                    where=where,
                    field="links.endpoints",
                )
        if ea.node == eb.node:
            raise TopologyError(f"self-loop: a link from {ea.node!r} to itself", where=where, field="links.endpoints")
        link = Link(ea, eb, LinkParams(**params), where)
        self.links.append(link)
        return link

    def add_vm(self, name: str, on: str, vpc: str, *, ip: str | None = None, mac: str | None = None,
               where: Where | None = None, subnet: str | None = None, security_groups: tuple[str, ...] = (),
               dhcp: bool = False) -> Vm:
        """A VM; its compute node may be declared later, so `check_vms` runs once everything is in."""
        where = where or Where(self.source)
        check_name(name, "node", where)
        if name in self.vms or name in self.nodes:
            raise TopologyError(f"duplicate node {name!r}", where=where, field=f"nodes.{name}")
        vm = Vm(name, on, vpc, ip, mac, where, subnet, tuple(security_groups), dhcp)
        self.vms[name] = vm
        return vm

    def check_vms(self) -> None:
        """Every VM sits on a compute node, in a VPC whose subnet holds its address, with an address of its own."""
        taken: dict[tuple[str, str], str] = {}
        for vm in self.vms.values():
            host = self.nodes.get(vm.on)
            if host is None or host.role != "compute":
                what = "is not a node" if host is None else f"is a {host.role}, not a compute node"
                raise TopologyError(f"{vm.on!r} {what}; a vm sits on a compute node (kind: compute)",
                                    where=vm.where, field=f"nodes.{vm.name}.on")
            if host.options.get("agent") == "external":
                raise TopologyError(f"{vm.on!r} runs an external agent, which cloudemu does not drive at up; declare "
                                    "VMs on builtin agents, or drive yours with 'cloudemu alcor load --target'",
                                    where=vm.where, field=f"nodes.{vm.name}.on")
            if vm.name in self.nodes:
                raise TopologyError(f"duplicate node {vm.name!r}", where=vm.where, field=f"nodes.{vm.name}")
            unknown = [g for g in vm.security_groups if g not in self.security_groups]
            if unknown:
                raise TopologyError(f"security group {unknown[0]!r} is not declared (security_groups: {{name: [rules]}} "
                                    "at the top of the file)", where=vm.where, field=f"nodes.{vm.name}.security_groups")
            vpc = self.vpcs.setdefault(vm.vpc, Vpc(vm.vpc, where=vm.where))
            if vpc.subnets:
                self._subnet_of(vm, vpc)
            elif vm.subnet is not None:
                raise TopologyError(f"VPC {vm.vpc} declares no subnets (subnets: {{name: cidr}}), so a vm names none",
                                    where=vm.where, field=f"nodes.{vm.name}.subnet")
            if vm.ip and not vpc.subnets:
                net = ipaddress.ip_interface(vm.ip).network
                if vpc.cidr is None:
                    vpc.cidr = str(net)
                elif ipaddress.ip_interface(vm.ip).ip not in ipaddress.ip_network(vpc.cidr):
                    raise TopologyError(f"{vm.ip} is outside VPC {vm.vpc}'s subnet {vpc.cidr}", where=vm.where,
                                        field=f"nodes.{vm.name}.ip")
            if vm.ip:
                key = (vm.vpc, vm.ip.split("/")[0])
                if key in taken:
                    raise TopologyError(f"{key[1]} is already {taken[key]}'s address in VPC {vm.vpc}", where=vm.where,
                                        field=f"nodes.{vm.name}.ip")
                taken[key] = vm.name

    @staticmethod
    def _subnet_of(vm: Vm, vpc: Vpc) -> None:
        """A VM of a VPC of several subnets: the subnet it names, or the one its address is in, else the first."""
        if vm.subnet is not None and vm.subnet not in vpc.subnets:
            raise TopologyError(f"VPC {vpc.name} has no subnet {vm.subnet!r}; its subnets: {', '.join(vpc.subnets)}",
                                where=vm.where, field=f"nodes.{vm.name}.subnet")
        if vm.ip:
            address = ipaddress.ip_interface(vm.ip).ip
            found = next((n for n, c in vpc.subnets.items() if address in ipaddress.ip_network(c)), None)
            if found is None or (vm.subnet is not None and found != vm.subnet):
                where_to = vm.subnet or ", ".join(f"{n} {c}" for n, c in vpc.subnets.items())
                raise TopologyError(f"{vm.ip} is outside VPC {vpc.name}'s subnets ({where_to})", where=vm.where,
                                    field=f"nodes.{vm.name}.ip")
            vm.subnet = found
        elif vm.subnet is None:
            vm.subnet = next(iter(vpc.subnets))

    def check_services(self) -> None:
        """depends_on names services, and never comes back round to where it started."""
        if self.only_bulk():
            return  # generated nodes are never services (and stay arrays)
        services = {n.name: n for n in self.nodes.values() if n.role == "service"}
        for node in services.values():
            where = node.options.get("depends_on_where", node.where)
            for dep in node.options.get("depends_on", ()):
                if dep not in services:
                    what = "is not a node" if dep not in self.nodes else f"is a {self.nodes[dep].role}, not a service"
                    raise TopologyError(f"{dep!r} {what}; depends_on names services", where=where,
                                        field=f"nodes.{node.name}.depends_on")
        try:
            graphlib.TopologicalSorter({n: svc.options.get("depends_on", ()) for n, svc in services.items()}).prepare()
        except graphlib.CycleError as exc:
            cycle = list(reversed(exc.args[1]))  # graphlib lists it against the dependency direction
            node = services[cycle[-2]]  # the service whose depends_on closes the cycle
            raise TopologyError(f"depends_on cycle: {' -> '.join(cycle)}",
                                where=node.options.get("depends_on_where", node.where),
                                field=f"nodes.{node.name}.depends_on") from None

    # -- queries ---------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(b.names) for b in self.bulk) + len(self._nodes)

    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "host"]

    def switches(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.switching]

    def summary(self) -> dict[str, Any]:
        from collections import Counter

        kinds = Counter(n.kind for n in self._nodes.values())
        for b in self.bulk:
            kinds.update(b.kinds)
        links = len(self._links) + sum(len(b.src) for b in self.bulk)
        return {"name": self.name, "nodes": len(self), "links": links, "kinds": dict(kinds)}

    # -- interchange (a graph in: emulator.from_networkx, in topology/imports.py) -----------
    def to_networkx(self) -> Any:
        import networkx as nx

        g = nx.MultiGraph(name=self.name)
        for n in self.nodes.values():
            attrs = {"kind": n.kind, **n.options}
            if n.ip:
                attrs["ip"] = n.ip
            g.add_node(n.name, **attrs)
        for link in self.links:
            g.add_edge(link.a.node, link.b.node, **link.params.to_dict())
        return g


@dataclass
class Machine:
    """A physical (or emulated physical) machine nodes are placed on."""

    name: str
    address: str = "127.0.0.1"  # where SSH reaches it
    user: str = "root"
    key: str | None = None  # SSH private key file
    port: int = 22
    provisioner: str = "netns"
    cpu: float | None = None  # cores; None: not a limit
    memory: int | None = None  # MiB
    max_nodes: int | None = None
    underlay: str | None = None  # interface that carries the tunnels
    tunnel_ip: str | None = None  # the address tunnels bind to
    mtu: int = 1500  # of the underlay
    python: str = "python3"  # runs cloudemu's worker there (needs its dependencies installed)
    where: Where = field(default_factory=Where)

    @property
    def tunnel_address(self) -> str:
        return self.tunnel_ip or self.address


@dataclass
class LxdCluster:
    """An LXD cluster whose members are the inventory's machines (member name = machine name): its API endpoint and
    the client certificate it trusts, or the local socket of a member."""

    endpoint: str | None = None  # https://host:port
    cert: str | None = None  # client certificate the cluster trusts
    key: str | None = None
    server_cert: str | None = None  # the cluster's certificate, pinned (as lxc pins a remote's)
    socket: str | None = None  # unix socket of a member, instead of the endpoint

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Cluster:
    name: str
    machines: list[Machine]
    source: str | None = None
    known_hosts: str | None = None  # the SSH host keys to verify machines against (default ~/.ssh/known_hosts)
    lxd: LxdCluster | None = None  # the machines are the members of this LXD cluster

    @classmethod
    def local(cls, count: int = 1) -> Cluster:
        """`count` identical machines on this host, for planning (m1, m2, ...)."""
        if count == 1:
            return cls("local", [Machine("local")])
        return cls(f"local{count}", [Machine(f"m{i}", tunnel_ip=f"127.0.{i // 250}.{i % 250 + 1}")
                                      for i in range(1, count + 1)])

    def index(self) -> dict[str, int]:
        return {m.name: i for i, m in enumerate(self.machines)}


def check_name(name: Any, what: str, where: Where | None = None) -> str:
    """Names end up in namespace and device names: keep them short and plain."""
    field_name = f"{what}s.{name}" if what == "node" else what
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise TopologyError(
            f"{what} name {name!r} must start with a letter and hold only letters, digits and _",
            where=where,
            field=field_name,
        )
    if len(name) > NAME_MAX:
        raise TopologyError(f"{what} name {name!r} is longer than {NAME_MAX} characters", where=where, field=field_name)
    return name


def check_experiment(name: Any) -> str:
    """An experiment's name becomes part of paths, namespace and device names, OVS and container labels: every
    way in (--name, the Python API, a worker's request) passes here before anything is made."""
    return check_name(name, "experiment", Where("--name / experiment name"))
