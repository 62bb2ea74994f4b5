"""compile(Topology) -> Plan for one machine: names, addresses, link realization.

Pure: same input, same plan, byte for byte. Errors found here (names too long
for the kernel, address clashes) point at the line that caused them.
"""

from __future__ import annotations

from collections.abc import Iterable

from emulator.compiler.addressing import Reserved, assign_host_addresses, check_reserved, host_mac
from emulator.compiler.plan import Plan, PlanEnd, PlanLink, PlanNode, netns_name, root_device
from emulator.model import IFNAMSIZ, TAG_LEN, Link, Topology, TopologyError

#: Tag used when no experiment exists yet (validate, plan): same length as a real one.
PLACEHOLDER_TAG = "x" * TAG_LEN


def compile_topology(topo: Topology, *, experiment: str | None = None, tag: str = PLACEHOLDER_TAG,
                     reserved: Iterable[Reserved] = (), provisioner: str = "netns") -> Plan:
    if len(tag) != TAG_LEN:
        raise ValueError(f"tag must be {TAG_LEN} characters")
    experiment = experiment or topo.name
    addresses = assign_host_addresses(topo)
    check_reserved(topo, addresses, reserved)
    stp_on = _switches_needing_stp(topo)

    plan = Plan(experiment=experiment, tag=tag, subnet=topo.subnet, provisioner=provisioner)
    host_index = {n.name: i for i, n in enumerate(topo.hosts(), start=1)}
    switch_index = {n.name: i for i, n in enumerate(topo.switches(), start=1)}
    for node in topo.nodes.values():
        pn = PlanNode(node.name, node.kind)
        if node.kind == "host":
            pn.netns = netns_name(experiment, node.name)
            pn.ip = addresses[node.name]
        else:
            pn.device = _checked_dev(root_device(tag, node.name), node.where, f"nodes.{node.name}")
            pn.options = _switch_options(node.options, node.kind, switch_index[node.name], node.name in stp_on)
        plan.nodes.append(pn)

    names = _InterfaceNames(topo)
    for i, link in enumerate(topo.links):
        ends = []
        for ep in (link.a, link.b):
            node = topo.nodes[ep.node]
            iface = names.take(link, ep.node, ep.iface)
            if node.kind == "host":
                dev, ns = _checked_dev(iface, link.where, "links.endpoints"), netns_name(experiment, node.name)
                index = names.count_of(ep.node) - 1
                end = PlanEnd(node.name, iface, dev, ns, mac=host_mac(host_index[node.name], index))
                if index == 0:
                    end.ip = addresses[node.name]
            else:
                dev = _checked_dev(root_device(tag, node.name, iface), link.where, "links.endpoints")
                end = PlanEnd(node.name, iface, dev, None)
            ends.append(end)
        params = link.params.merged_over(topo.link_defaults).to_dict()
        plan.links.append(PlanLink(i, ends[0], ends[1], params))
    return plan


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

    def count_of(self, node: str) -> int:
        return len(self.used.get(node, {}))


def _checked_dev(dev: str, where, field: str) -> str:
    if len(dev) > IFNAMSIZ:
        raise TopologyError(
            f"device name {dev!r} is {len(dev)} characters after prefixing; Linux allows {IFNAMSIZ}. "
            "Use a shorter node name, or name the interface (e.g. s1:p1)",
            where=where, field=field)
    return dev


def _switch_options(opts: dict, kind: str, index: int, stp: bool) -> dict:
    out = {"stp": stp}
    if kind == "switch":
        out.update({
            "datapath": opts.get("datapath", "auto"),
            "fail_mode": opts.get("fail_mode", "standalone"),
            "dpid": f"{index:016x}",
        })
        if opts.get("controller"):
            out["controller"] = opts["controller"]
    return out


def _switches_needing_stp(topo: Topology) -> set[str]:
    """Switches in a loop need spanning tree to avoid a broadcast storm; `stp` overrides."""
    parent: dict[str, str] = {n.name: n.name for n in topo.switches()}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    looped_roots: set[str] = set()
    for link in topo.links:
        a, b = link.nodes
        if a in parent and b in parent:
            ra, rb = find(a), find(b)
            if ra == rb:
                looped_roots.add(ra)
            else:
                parent[ra] = rb
    looped = {find(r) for r in looped_roots}
    out = set()
    for node in topo.switches():
        want = node.options.get("stp", "auto")
        if want is True or (want == "auto" and find(node.name) in looped):
            out.add(node.name)
    return out
