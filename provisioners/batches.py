"""A plan as the netns engine's batches: `ip -batch` lines, ovs-vsctl commands, journal entries and
per-namespace settings. Pure (no system calls), so the text is unit-tested without a kernel."""

from __future__ import annotations

from dataclasses import replace

from emulator.compiler.plan import MARKER_KEY, Plan, PlanEnd, PlanLink, PlanNode, PlanTunnel
from emulator.runtime.journal import Resource
from provisioners import nsconfig


def veth_resource(link: PlanLink) -> Resource:
    end = link.root_end or link.a
    return Resource("veth", end.dev, end.netns or "")


def tunnel_resource(t: PlanTunnel) -> Resource:
    return Resource("vxlan", t.end.dev, t.end.netns or "")


def needs_netem(link: PlanLink) -> bool:
    return any(link.params.get(k) for k in ("delay", "jitter", "loss"))


def veths(links: list[PlanLink]) -> list[PlanLink]:
    """The links made as veth pairs (not patch ports: see patched)."""
    return [link for link in links if link.kind == "veth"]


def veth_lines(links: list[PlanLink], mark: str) -> list[str]:
    lines, marks = [], []
    for link in veths(links):
        first, second = (link.a, link.b) if link.a.netns is None or link.b.netns is not None else (link.b, link.a)
        mtu = f" mtu {link.params['mtu']}" if link.params.get("mtu") else ""
        lines.append(f"link add {veth_side(first, mtu)} type veth peer name {veth_side(second, mtu)}")
        marks += [f"link set dev {e.dev} alias {mark} addrgenmode none up" for e in (first, second) if e.netns is None]
    return lines + marks


def veth_side(end: PlanEnd, mtu: str) -> str:
    return (f"{end.dev}{mtu}" + (f" address {end.mac}" if end.mac else "")
            + (f" netns {end.netns}" if end.netns else ""))


#: OVS learns 2,048 MACs per bridge by default; past that it forgets, and floods what it forgot to every port.
MAC_TABLE_MIN = 2048


def ovs_bridge_commands(node: PlanNode, experiment: str, userspace: bool, hosts: int = 0) -> list[list[str]]:
    """`hosts`: how many the experiment has. Each bridge of a flat network learns every one of their MACs: its MAC
    table holds them all (10,000 hosts on 200 userspace switches at the default size: nearly every ping lost)."""
    o = node.options
    datapath = {"user": "netdev", "kernel": "system"}.get(o.get("datapath", "auto"), "netdev" if userspace else "system")
    settings = [f"datapath_type={datapath}", f"external_ids:{MARKER_KEY}={experiment}",
                f"external_ids:cloudemu-node={node.name}", f"fail_mode={o.get('fail_mode', 'standalone')}",
                f"other_config:datapath-id={o['dpid']}"]
    if hosts * 2 > MAC_TABLE_MIN:
        settings.append(f"other_config:mac-table-size={hosts * 2}")
    if o.get("stp"):
        settings.append("rstp_enable=true")
    cmds = [["add-br", node.device], ["set", "Bridge", node.device, *settings]]
    if o.get("controller"):
        cmds.append(["set-controller", node.device, o["controller"]])
    return cmds


def ovs_port(bridge: str, dev: str, experiment: str) -> list[str]:
    """The marker on the Port row, in the add-port itself: a separate `set Interface` looks the row
    up by name among all interfaces, which costs ovs-vsctl 0.3 s per 1,000 ports."""
    return ["add-port", bridge, dev, f"external_ids:{MARKER_KEY}={experiment}"]


def ovs_patch_port(bridge: str, end: PlanEnd, peer: PlanEnd, experiment: str) -> list[list[str]]:
    return [ovs_port(bridge, end.dev, experiment),
            ["set", "Interface", end.dev, "type=patch", f"options:peer={peer.dev}"]]


#: Switches one chain of patch ports may join: OVS follows patch ports within one lookup, to a depth of 64 bridges
#: at most (a frame through 200 patched switches in a row was dropped); veths between groups reset it.
PATCH_GROUP_MAX = 32


def patched(plan: Plan, ovs_of: dict[str, object]) -> Plan:
    """The plan with each unshaped link between two switches of one OVS (`ovs_of`: switch -> its instance; empty
    when all are on the machine's) realised as patch ports (see provisioners.switchd), in groups of at most
    PATCH_GROUP_MAX switches joined by patch ports."""
    # RSTP over a patch port aborts ovs-vswitchd 3.1 (a BPDU handed to the peer bridge retakes the RSTP lock): a
    # switch that runs it keeps veths
    switches = {n.name for n in plan.nodes if n.kind == "switch" and not n.options.get("stp")}
    group = {name: {name} for name in switches}  # switch -> the switches patched to it, itself included

    def patch(link: PlanLink) -> bool:
        a, b = link.a.node, link.b.node
        if (a not in switches or b not in switches or link.params or ovs_of.get(a) != ovs_of.get(b)
                or group[a] is group[b] or len(group[a]) + len(group[b]) > PATCH_GROUP_MAX):
            return False  # a loop closed inside a group would be one lookup's loop: a veth, like the rest
        joined = group[a] | group[b]
        for name in joined:
            group[name] = joined
        return True
    return replace(plan, links=[replace(link, kind="patch") if patch(link) else link for link in plan.links])


def root_shaping(links: list[PlanLink | PlanTunnel]) -> list[str]:
    lines = []
    for link in links:
        bw = link.params.get("bw")
        if not bw:
            continue
        for end in (link.end,) if isinstance(link, PlanTunnel) else (link.a, link.b):
            if end.netns is None:
                lines += [f"qdisc add dev {end.dev} root handle 1: htb default 1",
                          f"class add dev {end.dev} parent 1: classid 1:1 htb rate {bw:g}mbit "
                          f"burst {nsconfig.htb_burst(bw)}"]
    return lines


def namespace_configs(plan: Plan, tx_csum_off: bool) -> list[nsconfig.NamespaceConfig]:
    """Per namespace: hosts' (addresses, checksums), and the switches' when they have one (ports up, shaping)."""
    hosts = {n.netns for n in plan.nodes if n.kind == "host"}
    # Hosts have IPv4 addresses only, and no IPv6 at all: every new link's duplicate address detection, router
    # solicitations and MLD reports are multicast, flooded by every switch to every port; at 500 hosts on 10
    # userspace switches that kept ovs-vswitchd busy for 5 s after `up`, and the first pings across switches failed.
    configs = {ns: nsconfig.NamespaceConfig(ns, ipv6=False) for ns in sorted(hosts)}
    ends = [(end, link.params) for link in veths(plan.links) for end in (link.a, link.b)]
    ends += [(t.end, t.params) for t in plan.tunnels]
    for end, params in ends:
        if end.netns:
            configs.setdefault(end.netns, nsconfig.NamespaceConfig(end.netns)).ifaces.append(
                nsconfig.IfaceConfig(end.dev, end.ip, params.get("bw"), tx_csum_off and end.netns in hosts))
    return list(configs.values())


def ends_of_switches_in(plan: Plan, netns: dict[str, str]) -> Plan:
    """The plan with each switch's link ends in the namespace given for it (its OVS instance's)."""
    def move(end: PlanEnd) -> PlanEnd:
        return replace(end, netns=netns[end.node]) if end.node in netns else end

    return replace(plan, links=[replace(link, a=move(link.a), b=move(link.b)) for link in plan.links],
                   tunnels=[replace(t, end=move(t.end)) for t in plan.tunnels])
