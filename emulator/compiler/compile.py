"""compile(Topology, Cluster) -> one Plan per machine: placement, names, addresses, link realization.

Pure: same input, same plans, byte for byte. Works on the topology's arrays
(see graph.py) so that a million-node region compiles in seconds; rows are made
one machine at a time, so a shard can be written before the next is built.
Errors found here (names too long for the kernel, address clashes, a topology
that does not fit) point at the line that caused them.
"""

from __future__ import annotations

import gc
import ipaddress
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.compiler.addressing import Reserved, assign_host_addresses, check_reserved, host_mac
from emulator.compiler.graph import KIND_CODE, Graph, graph_of
from emulator.compiler.placement import Capacity, Placement, metrics, place
from emulator.compiler.plan import DEFAULT_IMAGE, Plan, container_name, netns_name
from emulator.kinds import KINDS
from emulator.model import (
    ACA_PORT,
    CONTAINER_KEYS,
    IFNAMSIZ,
    TAG_LEN,
    Cluster,
    Link,
    Node,
    Topology,
    TopologyError,
    Where,
    check_experiment,
)

#: Tag used when no experiment exists yet (validate, plan): same length as a real one.
PLACEHOLDER_TAG = "x" * TAG_LEN
VXLAN_PORT = 4789  # IANA
#: Bytes a VXLAN tunnel adds around an inner frame: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
VXLAN_OVERHEAD = 50
VNI_MAX = (1 << 24) - 1
#: Where a compute node keeps its OVS database, sockets and logs, and its agent's unix socket.
COMPUTE_DIR = "/run/cloudemu"
#: Hollow compute nodes served by one process (and one namespace, one link): a pack's nodes share one core.
#: 100,000 nodes in packs of 4,000: up 10.7 s, 8.3 KB each; of 10,000: 17.1 s (the kernel adds a device's
#: addresses in time growing with how many it has), 5.0 KB (fewer processes). Medians of three runs (README).
HOLLOW_PACK = 4000
ETH_RE = re.compile(r"eth(\d+)")
HOST, SWITCH, BRIDGE = KIND_CODE["host"], KIND_CODE["switch"], KIND_CODE["bridge"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while building millions of acyclic rows: each collection would walk them all (2x the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compile_topology(topo: Topology, *, experiment: str | None = None, tag: str = PLACEHOLDER_TAG,
                     reserved: Iterable[Reserved] = (), provisioner: str = "netns") -> Plan:
    """The plan for one machine (no placement, no tunnels): what `up` on this machine runs."""
    return compile_cluster(topo, None, experiment=experiment, tag=tag, reserved=reserved,
                           provisioner=provisioner).plan(0)


@gc_paused()
def compile_cluster(topo: Topology, cluster: Cluster | None, *, placement: str = "metis",
                    experiment: str | None = None, tag: str = PLACEHOLDER_TAG, reserved: Iterable[Reserved] = (),
                    provisioner: str | None = None, vni_base: int = 1) -> Compiled:
    """Place `topo` on `cluster` (None: this machine alone, pins ignored) and name everything."""
    started = time.perf_counter()
    check_experiment(experiment or topo.name)
    if len(tag) != TAG_LEN:
        raise ValueError(f"tag must be {TAG_LEN} characters")
    single = cluster is None
    cluster = cluster or Cluster.local(1)
    graph = graph_of(topo, None if single else cluster.index())
    placed = place(graph, cluster, placement)
    compiled = Compiled(topo, cluster, graph, placed, experiment or topo.name, tag, provisioner, vni_base, reserved)
    placed.seconds = time.perf_counter() - started
    compiled.metrics = metrics(graph, Capacity(graph, cluster), placed)
    return compiled


@dataclass(frozen=True)
class _End:
    """Where one end of a link sits, precomputed for row building."""

    node: int
    iface: str
    ordinal: int  # position among the node's interfaces, in link order
    short_dev: bool  # a switch port named <tag>-<node>-<N> because <tag>-<node>-ethN is too long


class Compiled:
    """A compiled topology: placement and names decided; per-machine rows on demand."""

    def __init__(self, topo: Topology, cluster: Cluster, graph: Graph, placement: Placement, experiment: str,
                 tag: str, provisioner: str | None, vni_base: int, reserved: Iterable[Reserved]):
        self.topo, self.cluster, self.graph, self.placement = topo, cluster, graph, placement
        self.experiment, self.tag, self.vni_base = experiment, tag, vni_base
        self.provisioner = provisioner
        self.metrics: dict[str, Any] = {}
        g = graph
        self.part = placement.part
        self.kind = g.kind.tolist()
        # Plain lists: the row builders index them a million times, numpy scalars would cost 5x more.
        self.part_of = self.part.tolist()
        ends = np.empty(2 * g.n_links, dtype=np.int64)
        ends[0::2], ends[1::2] = g.src, g.dst
        self.end_node = ends.tolist()
        self.machine_names = [m.name for m in cluster.machines]
        self.netns_prefix = netns_name(experiment, "")
        self.has_objects = not topo.only_bulk()
        self.default_engine = provisioner or topo.node_defaults.get("provisioner") or "netns"
        self.containers = self._container_options()
        self.host_rank = np.cumsum(g.kind == HOST).tolist()  # 1-based among hosts, for MACs and addresses
        self.switch_rank = np.cumsum(g.switching()).tolist()
        self.ips = self._addresses(list(reserved))
        self.explicit_ifnames, self.ifnum, self.ordinals = self._interfaces()
        self.short = self._check_device_names().tolist()
        self.stp = _switches_needing_stp(g, topo)
        cut = self.part[g.src] != self.part[g.dst]
        self.cut = cut
        self.vni = np.full(g.n_links, -1, dtype=np.int64)
        self.vni[cut] = vni_base + np.arange(int(cut.sum()))
        if cut.any() and self.vni.max() > VNI_MAX:
            raise TopologyError(f"{int(cut.sum())} links cross machines, more than VXLAN's 24-bit VNI allows from "
                                f"{vni_base}", field="links")
        self.tunnel_mtu = min(m.mtu for m in cluster.machines) - VXLAN_OVERHEAD if cut.any() else None
        self.params = self._link_params()
        self.vm_addresses = vm_addresses(topo) if topo.vms else []
        self.hollow = {v for v, opts in self.containers.items() if opts.get("compute", {}).get("agent") == "hollow"}

    # -- decisions ---------------------------------------------------------
    def _addresses(self, reserved: list[Reserved]) -> list[str | None] | None:
        """Hosts' own addresses when some host names one; None: host k gets subnet address k (see ip_of)."""
        topo, g = self.topo, self.graph
        subnet = ipaddress.ip_network(topo.subnet)
        self.ip_base, self.prefixlen = int(subnet.network_address), subnet.prefixlen
        if topo.only_bulk() or not any(n.ip for n in topo.hosts()):
            check_reserved(topo, {}, reserved, subnet_only=True)
            hosts = int((g.kind == HOST).sum())
            if hosts > subnet.num_addresses - 2:
                raise TopologyError(f"subnet {subnet} has room for {subnet.num_addresses - 2} hosts, the topology has "
                                    f"{hosts}", where=topo.subnet_where, field="defaults.subnet")
            return None
        addresses = assign_host_addresses(topo)
        check_reserved(topo, addresses, reserved)
        return [addresses.get(name) for name in g.names]

    def _container_options(self) -> dict[int, dict[str, Any]]:
        """Hosts that run as containers, with what their engine needs to know (image, limits, command...)."""
        image = self.topo.node_defaults.get("image", DEFAULT_IMAGE)
        if not self.has_objects:
            kinds = [k for b in self.topo.bulk for k in b.kinds]
            computes = {v: self._compute_options(None, "netns", self.graph.names[v], hollow=k == "hollow")
                        for v, k in enumerate(kinds) if k in ("compute", "hollow")}
            if computes and self.default_engine != "netns":
                raise TopologyError("generated compute nodes run in network namespaces: drop the provisioner default",
                                    where=self.topo.bulk[0].where, field="defaults.provisioner")
            if self.default_engine == "netns":
                return computes
            return {v: {"engine": self.default_engine, "image": image,
                        "container": container_name(self.default_engine, self.experiment, self.tag, self.graph.names[v])}
                    for v in range(self.graph.n_nodes) if self.kind[v] == HOST}
        out = {}
        for v, node in enumerate(self.topo.nodes.values()):
            engine = node.options.get("provisioner", self.default_engine)
            if node.kind != "host":
                continue
            if node.role == "compute":
                out[v] = self._compute_options(node, engine)
                continue
            if node.role == "service" and engine == "netns":
                raise TopologyError("a service is a container: give it provisioner: docker or lxd and an image",
                                    where=node.where, field=f"nodes.{node.name}.provisioner")
            own = _kind_options(node)  # what a kind of emulator/kinds.py reads, under its name
            if engine == "netns":
                if node.options.get("ports"):  # published by a forwarder, whatever the engine
                    own["ports"] = node.options["ports"]
                if own:
                    out[v] = own
                continue
            opts = {"engine": engine, "image": node.options.get("image", image)}
            opts.update({k: node.options[k] for k in CONTAINER_KEYS | {"cpu", "memory"} if k in node.options})
            opts.pop("provisioner", None)
            opts["container"] = container_name(engine, self.experiment, self.tag, node.name)
            if node.role == "service":
                opts["service"] = {"depends_on": node.options.get("depends_on", []),
                                   "healthcheck": node.options.get("healthcheck")}
            out[v] = {**opts, **own}
        return out

    def _compute_options(self, node, engine: str, name: str | None = None, hollow: bool = False) -> dict[str, Any]:
        """A compute node: its own OVS and agent start once its links are up (node None: generated).

        On netns the agent runs in the node's namespace; on Docker or LXD inside the container (its VMs
        too), with the node's directory mounted so that cloudemu reaches the agent's socket from the machine."""
        agent = node.options.get("agent", "builtin") if node is not None else ("hollow" if hollow else "builtin")
        if agent == "hollow" and engine != "netns":
            raise TopologyError("a hollow compute node is not a container: drop its provisioner (or the default's)",
                                where=node.where, field=f"nodes.{node.name}.provisioner")
        if agent == "external" and (engine != "docker" or "image" not in node.options):
            raise TopologyError("agent: external runs your agent's image: give the node provisioner: docker and the "
                                "image (and its start command as command:)", where=node.where, field=f"nodes.{node.name}")
        name = name or node.name
        listen = node.options.get("agent_listen", "any") if node is not None else "any"
        compute = {"agent": agent, "port": ACA_PORT, "listen": listen, "vm_prefix": self.netns_prefix,
                   "dir": f"{COMPUTE_DIR}/{self.experiment}/{name}"}
        if node is not None and node.options.get("on_demand"):
            if agent != "builtin":
                raise TopologyError("on_demand is a mode of cloudemu's own agent (agent: builtin)", where=node.where,
                                    field=f"nodes.{node.name}.on_demand")
            compute["on_demand"] = True
        if engine == "netns":
            opts: dict[str, Any] = {"compute": compute}
            if node is not None and node.options.get("ports"):
                opts["ports"] = node.options["ports"]
            return opts
        opts = {"engine": engine, "image": node.options.get("image", self.topo.node_defaults.get("image", DEFAULT_IMAGE))}
        opts.update({k: node.options[k] for k in CONTAINER_KEYS | {"cpu", "memory"} if k in node.options})
        opts.pop("provisioner", None)
        opts["caps"] = sorted(set(opts.get("caps", [])) | {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"})  # OVS and namespaces
        opts["container"] = container_name(engine, self.experiment, self.tag, name)
        opts["compute"] = {**compute, "in_container": True}
        return opts

    def vm_rows(self, m: int) -> list[dict[str, Any]]:
        """The VMs whose compute node is on machine `m`, with addresses and VNIs decided."""
        if not self.topo.vms:
            return []
        index = {name: v for v, name in enumerate(self.graph.names)}
        rows = []
        for vm, (vpc, ip, mac) in zip(self.topo.vms.values(), self.vm_addresses, strict=True):
            v = index[vm.on]
            if self.part_of[v] != m:
                continue
            host_ip = self.ip_of(v)
            rows.append({"name": vm.name, "on": vm.on, "vpc": vm.vpc, "vni": vpc["vni"], "cidr": vpc["cidr"],
                         "gateway": vpc["gateway"], "ip": ip, "mac": mac, "netns": self.netns_prefix + vm.name,
                         "host_ip": host_ip.split("/")[0] if host_ip else None,
                         **({"subnet": vpc["subnet"], "router": vpc["router"]} if vpc["subnet"] else {}),
                         **({"security_groups": {g: self.topo.security_groups[g] for g in vm.security_groups}}
                            if vm.security_groups else {}),
                         **({"dhcp": True} if vm.dhcp else {}), **({"dns": vpc["dns"]} if vpc["dns"] else {})})
        return rows

    def engine(self) -> str:
        """The provisioner that runs this plan: a container engine as soon as one host is a container."""
        engines = {o["engine"] for o in self.containers.values() if "engine" in o}
        return engines.pop() if len(engines) == 1 else ("netns" if not engines else "mixed")

    def ip_of(self, v: int) -> str | None:
        if self.ips is not None:
            return self.ips[v]
        ip = self.ip_base + self.host_rank[v]
        return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}/{self.prefixlen}"

    def _interfaces(self) -> tuple[list[str] | None, list[int], list[int]]:
        """Per link end (a then b): explicit names or None, the ethN number, and the ordinal among the node's ends."""
        g = self.graph
        ends = np.asarray(self.end_node, dtype=np.int64)
        order = np.argsort(ends, kind="stable")
        starts = np.zeros(g.n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(ends, minlength=g.n_nodes), out=starts[1:])
        ordinal = np.empty_like(ends)
        ordinal[order] = np.arange(len(ends)) - starts[ends[order]]
        numbers = ordinal + (g.kind[ends] != HOST)  # hosts count from eth0, switches from eth1 (as Mininet)
        self.digits = 1 + sum((numbers >= 10 ** p).astype(np.int64) for p in range(1, 10))
        explicit = None
        if self.has_objects and any(ep.iface for lk in self.topo.links for ep in (lk.a, lk.b)):
            explicit = _explicit_interfaces(self.topo)
        return explicit, numbers.tolist(), ordinal.tolist()

    def ifname(self, e: int) -> str:
        return self.explicit_ifnames[e] if self.explicit_ifnames is not None else f"eth{self.ifnum[e]}"

    def _check_device_names(self) -> np.ndarray:
        """Ends whose root-namespace device gets the short form <tag>-<node>-<N>; refuse what fits neither way."""
        g = self.graph
        limit = IFNAMSIZ - TAG_LEN - 1  # room for "<node>-<iface>" after "<tag>-"
        ends = np.asarray(self.end_node, dtype=np.int64)
        name_len = np.fromiter(map(len, g.names), np.int64, g.n_nodes)[ends]
        root_side = g.kind[ends] != HOST
        digits = self.digits
        if self.explicit_ifnames is None:
            iface_len, is_eth = digits + 3, np.ones(len(ends), bool)
        else:
            iface_len = np.fromiter(map(len, self.explicit_ifnames), np.int64, len(ends))
            is_eth = np.fromiter((bool(ETH_RE.fullmatch(n)) for n in self.explicit_ifnames), bool, len(ends))
            digits = np.where(is_eth, iface_len - 3, 0)
        too_long = root_side & (name_len + 1 + iface_len > limit)
        short = too_long & is_eth & (name_len + 1 + digits <= limit)
        bad = np.flatnonzero((too_long & ~short) | (~root_side & (iface_len > IFNAMSIZ)))
        if bad.size:
            e = int(bad[0])
            node, iface = self.end_node[e], self.ifname(e)
            dev = f"{self.tag}-{g.names[node]}-{iface}" if root_side[e] else iface
            raise TopologyError(
                f"device name {dev!r} is {len(dev)} characters after prefixing; Linux allows {IFNAMSIZ}. "
                "Use a shorter node name, or name the interface (e.g. s1:p1)",
                where=self._link_where(e // 2), field="links.endpoints")
        return short

    def _link_params(self) -> list[dict[str, Any]] | dict[str, Any]:
        """Per link (object topologies) or one shared dict (generated ones)."""
        mtu = {"mtu": self.tunnel_mtu} if self.tunnel_mtu is not None else {}  # frames must fit through any tunnel
        if self.topo.only_bulk():
            shared = {**mtu, **self.topo.link_defaults.to_dict()}
            if mtu and shared["mtu"] > self.tunnel_mtu:
                raise TopologyError(f"defaults.link.mtu {shared['mtu']} does not fit through the VXLAN tunnels this "
                                    f"plan needs (underlay MTU minus {VXLAN_OVERHEAD} = {self.tunnel_mtu})",
                                    where=self.topo.bulk[0].where, field="defaults.link.mtu")
            return shared
        defaults = self.topo.link_defaults
        out = [{**mtu, **lk.params.merged_over(defaults).to_dict()} for lk in self.topo.links]
        if self.tunnel_mtu is not None:
            for i in np.flatnonzero(self.cut).tolist():
                mtu = out[i].get("mtu")
                if mtu and mtu > self.tunnel_mtu:
                    raise TopologyError(f"mtu {mtu} does not fit through the VXLAN tunnel this link becomes "
                                        f"(underlay MTU minus {VXLAN_OVERHEAD} = {self.tunnel_mtu})",
                                        where=self.topo.links[i].where, field="links.mtu")
        return out

    def _link_where(self, link: int) -> Where:
        if self.topo.only_bulk():
            return self.topo.bulk[0].where
        return self.topo.links[link].where

    # -- rows ----------------------------------------------------------------
    def params_of(self, link: int) -> dict[str, Any]:
        return self.params if isinstance(self.params, dict) else self.params[link]

    def node_row(self, v: int) -> dict[str, Any]:
        name = self.graph.names[v]
        machine = self.machine_names[self.part_of[v]]
        if self.kind[v] == HOST:
            return {"name": name, "kind": "host", "machine": machine, "netns": self.netns_prefix + name, "device": None,
                    "ip": self.ip_of(v), "options": self.containers.get(v, {})}
        return {"name": name, "kind": "switch" if self.kind[v] == SWITCH else "bridge", "machine": machine,
                "netns": None, "device": f"{self.tag}-{name}", "ip": None, "options": self._switch_options(v)}

    def _switch_options(self, v: int) -> dict[str, Any]:
        opts = self.topo.nodes[self.graph.names[v]].options if self.has_objects else {}
        out: dict[str, Any] = {"stp": v in self.stp}
        if self.kind[v] == SWITCH:
            out.update({"datapath": opts.get("datapath", "auto"), "fail_mode": opts.get("fail_mode", "standalone"),
                        "dpid": f"{self.switch_rank[v]:016x}"})
            if opts.get("controller"):
                out["controller"] = opts["controller"]
        return out

    def end_row(self, e: int) -> dict[str, Any]:
        v = self.end_node[e]
        name, iface = self.graph.names[v], self.ifname(e)
        if self.kind[v] == HOST:
            ordinal = self.ordinals[e]
            return {"node": name, "iface": iface, "dev": iface, "netns": self.netns_prefix + name,
                    "mac": self._mac(v, ordinal), "ip": self.ip_of(v) if ordinal == 0 else None}
        port = iface[3:] if self.short[e] else iface
        return {"node": name, "iface": iface, "dev": f"{self.tag}-{name}-{port}", "netns": None, "mac": None, "ip": None}

    def _mac(self, v: int, ordinal: int) -> str:
        if ordinal == 0 and self.has_objects:
            own = self.topo.nodes[self.graph.names[v]].mac
            if own:
                return own
        return host_mac(self.host_rank[v], ordinal)

    def link_row(self, i: int) -> dict[str, Any]:
        machine = self.machine_names[self.part_of[self.end_node[2 * i]]]
        return {"id": i, "a": self.end_row(2 * i), "b": self.end_row(2 * i + 1), "params": self.params_of(i),
                "kind": "veth", "machine": machine}

    def tunnel_row(self, i: int, side: int) -> dict[str, Any]:
        """The end of cut link `i` on the machine of its `side` (0: a, 1: b)."""
        here, there = self.end_node[2 * i + side], self.end_node[2 * i + 1 - side]
        local, remote = self.cluster.machines[self.part_of[here]], self.cluster.machines[self.part_of[there]]
        vni = int(self.vni[i])
        end = self.end_row(2 * i + side)
        kind = self.kind[here]
        realize = "netns" if kind == HOST else ("ovs" if kind == SWITCH else "bridge")
        return {"link": i, "vni": vni, "end": end, "peer_node": self.graph.names[there], "peer_machine": remote.name,
                "local_ip": local.tunnel_address, "remote_ip": remote.tunnel_address, "realize": realize,
                "port": VXLAN_PORT, "mtu": self.tunnel_mtu, "create_as": f"{self.tag}-v{vni}" if kind == HOST else None,
                "params": self.params_of(i)}

    # -- per machine -----------------------------------------------------------
    def machine_members(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(machine, its nodes, its local links, cut links with their a end here, cut links with their b end here)."""
        g, part = self.graph, self.part
        k = len(self.cluster.machines)
        node_order = np.argsort(part, kind="stable")
        node_bounds = np.searchsorted(part[node_order], np.arange(k + 1))
        pa = part[g.src]
        local = np.flatnonzero(~self.cut)
        local_order = local[np.argsort(pa[local], kind="stable")]
        local_bounds = np.searchsorted(pa[local_order], np.arange(k + 1))
        cut = np.flatnonzero(self.cut)
        by_a = cut[np.argsort(pa[cut], kind="stable")]
        a_bounds = np.searchsorted(pa[by_a], np.arange(k + 1))
        pb = part[g.dst]
        by_b = cut[np.argsort(pb[cut], kind="stable")]
        b_bounds = np.searchsorted(pb[by_b], np.arange(k + 1))
        for m in range(k):
            yield (m, node_order[node_bounds[m]:node_bounds[m + 1]], local_order[local_bounds[m]:local_bounds[m + 1]],
                   by_a[a_bounds[m]:a_bounds[m + 1]], by_b[b_bounds[m]:b_bounds[m + 1]])

    def shard(self, m: int, members: tuple | None = None) -> dict[str, Any]:
        """Machine `m`'s plan as plain data (the Plan's JSON form)."""
        if members is None:
            members = next(x for x in self.machine_members() if x[0] == m)
        _, nodes, local, cut_a, cut_b = members
        machine = self.cluster.machines[m]
        tunnels = [(i, 0) for i in cut_a.tolist()] + [(i, 1) for i in cut_b.tolist()]
        tunnels.sort()
        node_list, links = nodes.tolist(), local.tolist()
        pack_nodes, pack_links = [], []
        if self.hollow:
            ends = self.end_node
            packed = [v for v in node_list if v in self.hollow]
            attach = {}  # hollow node -> the switch of its first link on this machine
            for i in links:
                a, b = ends[2 * i], ends[2 * i + 1]
                if a in self.hollow and b not in self.hollow:
                    attach.setdefault(a, b)
                elif b in self.hollow and a not in self.hollow:
                    attach.setdefault(b, a)
            node_list = [v for v in node_list if v not in self.hollow]
            links = [i for i in links if ends[2 * i] not in self.hollow and ends[2 * i + 1] not in self.hollow]
            tunnels = [(i, side) for i, side in tunnels if ends[2 * i] not in self.hollow and ends[2 * i + 1] not in self.hollow]
            pack_nodes, pack_links = self.pack_rows(m, packed, attach)
        return {
            "experiment": self.experiment, "tag": self.tag, "subnet": self.topo.subnet, "format": 1,
            "provisioner": self.engine() if self.containers else (self.provisioner or machine.provisioner),
            "machine": machine.name,
            "nodes": [self.node_row(v) for v in node_list] + pack_nodes,
            "links": [self.link_row(i) for i in links] + pack_links,
            "tunnels": [self.tunnel_row(i, side) for i, side in tunnels],
            "vms": self.vm_rows(m),
        }

    def pack_rows(self, m: int, hollow: list[int], attach: dict[int, int]) -> tuple[list, list]:
        """Machine `m`'s hollow compute nodes, HOLLOW_PACK to a pack: one namespace and one process serving all of
        them, with every node's address on its one link, to the switch of its first node that has one here."""
        rows, links = [], []
        machine = self.machine_names[m]
        for i, start in enumerate(range(0, len(hollow), HOLLOW_PACK)):
            members = hollow[start:start + HOLLOW_PACK]
            name, first = f"hollow-{m}.{i}", members[0]
            netns = self.netns_prefix + name
            ip, mac = self.ip_of(first), host_mac(self.host_rank[first], 0)
            rows.append({"name": name, "kind": "host", "machine": machine, "netns": netns, "device": None, "ip": ip,
                         "options": {"hollow": {
                             "dir": f"{COMPUTE_DIR}/{self.experiment}/{name}", "port": ACA_PORT,
                             "vm_prefix": self.netns_prefix,
                             "nodes": [[self.graph.names[v], self.ip_of(v)] for v in members]}}})
            switch = next((attach[v] for v in members if v in attach), None)
            if switch is None:
                continue  # reached from this machine only (its unix socket): no switch of its nodes is here
            mtu = {"mtu": self.tunnel_mtu} if self.tunnel_mtu is not None else {}  # as every link: frames fit any tunnel
            links.append({"id": self.graph.n_links + m * 1_000_000 + i, "params": mtu, "kind": "veth", "machine": machine,
                          "a": {"node": name, "iface": "eth0", "dev": "eth0", "netns": netns, "mac": mac, "ip": ip},
                          "b": {"node": self.graph.names[switch], "iface": f"_hp{m}.{i}", "dev": f"{self.tag}-_hp{m}.{i}",
                                "netns": None, "mac": None, "ip": None}})
        return rows, links

    def plan(self, m: int = 0) -> Plan:
        return Plan.from_dict(self.shard(m))

    def machines_summary(self) -> list[dict[str, Any]]:
        out = []
        for m, nodes, local, cut_a, cut_b in self.machine_members():
            machine = self.cluster.machines[m]
            out.append({"machine": machine.name, "address": machine.address, "nodes": len(nodes),
                        "links": len(local), "tunnels": len(cut_a) + len(cut_b)})
        return out


def _kind_options(node: Node) -> dict[str, Any]:
    """A node of a kind from emulator/kinds.py (other than the two the compiler knows): its keys, under its name,
    for its handler."""
    kind = KINDS.get(node.role)
    if kind is None or node.role in ("compute", "service"):
        return {}
    return {node.role: {k: node.options[k] for k in sorted(kind.keys) if k in node.options}}


def vm_addresses(topo: Topology) -> list[tuple[dict[str, Any], str, str]]:
    """Per VM in declaration order: its subnet (vni, cidr, gateway, subnet name, router), its address and MAC.

    VPCs without a VNI take the next free one from 1000, without a subnet 10.(100+i).0.0/24; the subnets of a VPC
    share its VNI (as Alcor's do); the first address of a subnet is its gateway; VMs without an address take the
    next free one of their subnet."""
    used_vni = {p.vni for p in topo.vpcs.values() if p.vni}
    pools: dict[tuple[str, str], dict[str, Any]] = {}  # (VPC, subnet name or "") ->
    next_vni = 1000
    for i, name in enumerate(dict.fromkeys([*topo.vpcs, *(vm.vpc for vm in topo.vms.values())])):
        spec = topo.vpcs.get(name)
        vni = spec.vni if spec and spec.vni else None
        while vni is None:
            vni = next_vni if next_vni not in used_vni else None
            next_vni += 1
        used_vni.add(vni)
        subnets = dict(spec.subnets) if spec and spec.subnets else {
            "": spec.cidr if spec and spec.cidr else f"10.{100 + i % 150}.{i // 150}.0/24"}
        router = "router" if spec and spec.router else ""
        dns = list(spec.dns) if spec else []
        for sub, cidr in subnets.items():
            net = ipaddress.ip_network(cidr)
            pools[(name, sub)] = {
                "vni": vni, "cidr": cidr, "gateway": str(net.network_address + 1), "prefix": net.prefixlen,
                "subnet": sub, "router": router, "dns": dns, "next": 2,
                "taken": {net.network_address + 1} | {ipaddress.ip_interface(vm.ip).ip for vm in topo.vms.values()
                                                      if vm.vpc == name and vm.ip}}
    out = []
    for n, vm in enumerate(topo.vms.values(), start=1):
        pool = pools[(vm.vpc, vm.subnet or "")]
        ip = vm.ip
        if ip is None:
            net = ipaddress.ip_network(pool["cidr"])
            while net.network_address + pool["next"] in pool["taken"]:
                pool["next"] += 1
            if pool["next"] >= net.num_addresses - 1:
                raise TopologyError(f"VPC {vm.vpc}'s subnet {pool['cidr']} is full", where=vm.where,
                                    field=f"nodes.{vm.name}.ip")
            address = net.network_address + pool["next"]
            pool["taken"].add(address)
            ip = f"{address}/{pool['prefix']}"
        mac = vm.mac or f"fa:16:3e:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"  # OpenStack's prefix
        out.append(({k: pool[k] for k in ("vni", "cidr", "gateway", "subnet", "router", "dns")}, ip, mac))
    return out


def _explicit_interfaces(topo: Topology) -> list[str]:
    """Names when some links name their interfaces: the others take the next free ethN."""
    names = _InterfaceNames(topo)
    out = []
    for link in topo.links:
        for ep in (link.a, link.b):
            out.append(names.take(link, ep.node, ep.iface))
    return out


class _InterfaceNames:
    """Hands out interface names per node: hosts eth0.., switches eth1.. (as Mininet does)."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.used: dict[str, dict[str, Link]] = {}
        self.explicit = {(ep.node, ep.iface) for lk in topo.links for ep in (lk.a, lk.b) if ep.iface}

    def take(self, link: Link, node: str, wanted: str | None) -> str:
        used = self.used.setdefault(node, {})
        if wanted is None:
            n = 0 if self.topo.nodes[node].kind == "host" else 1
            while f"eth{n}" in used or (node, f"eth{n}") in self.explicit:
                n += 1
            wanted = f"eth{n}"
        elif wanted in used:
            raise TopologyError(f"interface {node}:{wanted} is used by two links (the other at {used[wanted].where})",
                                where=link.where, field="links.endpoints")
        used[wanted] = link
        return wanted


def _switches_needing_stp(g: Graph, topo: Topology) -> set[int]:
    """Switches in a loop need spanning tree to avoid a broadcast storm; `stp` overrides."""
    switching = g.switching()
    both = np.flatnonzero(switching[g.src] & switching[g.dst])
    parent = list(range(g.n_nodes))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    looped_roots: set[int] = set()
    for a, b in zip(g.src[both].tolist(), g.dst[both].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb:
            looped_roots.add(ra)
        else:
            parent[ra] = rb
    looped = {find(r) for r in looped_roots}
    out = set()
    for v in np.flatnonzero(switching).tolist():
        want = "auto" if topo.only_bulk() else topo.nodes[g.names[v]].options.get("stp", "auto")
        if want is True or (want == "auto" and find(v) in looped):
            out.add(v)
    return out
