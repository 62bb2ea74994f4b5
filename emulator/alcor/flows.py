"""How an ACA-compatible host lays out Open vSwitch: bridges, ports and flows as plain text.

Pure, so the layout is unit-tested without OVS. `br-int` switches VM ports by VLAN (one local
VLAN per VNI); `br-tun` turns VLANs into VXLAN keys and back:

    table 0   from patch-int -> 2, from vxlan-generic -> 4; routed packets (DVR, below) rewritten -> 2
    table 2   ARP requests -> 51 (answered here), ICMP echo requests -> 52, unicast -> 20, the rest dropped
    table 4   tun_id=VNI -> VLAN, to br-int (a routed packet's source MAC restored to its gateway's)
    table 20  dl_vlan + dl_dst of a remote VM -> VNI, tun_dst=its host, out vxlan-generic
    table 51  ARP requests for a known remote VM or a router's gateway: its MAC into a register -> 52
    table 52  the ARP reply, made once for all of them (eth and ARP addresses swapped, the MAC set);
              a gateway's echo reply; other ICMP -> 20

Routing between subnets is ACA's distributed router (DVR): a VM sends to its gateway's MAC; table 0
matches (VLAN, destination IP, gateway MAC) and rewrites the frame for the destination VM (its VLAN and
MAC, and this host's DVR MAC as source), which then leaves as any frame to that VM does. The receiving
host gives it back the gateway's MAC as source (table 4 here; ACA does it on br-int: one bridge keeps a
message's flows in one bundle). A destination on this host goes straight back to br-int.

Tables 20 and 51 get two flows per remote VM, so at 100,000 neighbours their length is the cost:
the reply's eight actions live once in table 52, and each table-51 flow carries only the MAC.
"""

from __future__ import annotations

import re

PATCH_INT_OFPORT = 1  # patch-int on br-tun
VXLAN_OFPORT = 100  # vxlan-generic on br-tun, as ACA numbers it
#: br-int's port where DHCP requests go to the agent (ACA punts them to its OpenFlow controller), and its answers come from.
DHCP_PORT, DHCP_OFPORT = "dhcp-punt", 65000
#: br-tun's port where, in on-demand mode, what no flow knows goes to the agent (ACA: to its OpenFlow controller).
DEMAND_PORT, DEMAND_OFPORT = "demand-punt", 65001
#: Marks every flow this agent installs, so a restart can find and replace them.
COOKIE = "0xace"
TAP_PREFIX = "tap"
#: A MAC as goal states give it, lower case. Checked with fullmatch: `$` would accept a trailing newline, and a
#: newline in batch text is a second command.
MAC_RE = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
IFNAME_MAX = 14  # ACA cuts "tap" + port id to 14 characters
#: Where a table-51 flow leaves the answering VM's MAC for table 52 (reg4 holds an address while swapping).
MAC_FIELD = "NXM_NX_XXREG0[0..47]"
MAC_REG = "move:" + MAC_FIELD + "->{}"


def tap_name(port_id: str) -> str:
    return (TAP_PREFIX + port_id)[:IFNAME_MAX]


def bridge_commands(datapath_type: str, *, on_demand: bool = False) -> list[list[str]]:
    """One ovs-vsctl transaction: br-int, br-tun, the patch pair, the flow-based VXLAN port, the punt ports."""
    demand = [["--may-exist", "add-port", "br-tun", DEMAND_PORT],
              ["set", "Interface", DEMAND_PORT, "type=internal", f"ofport_request={DEMAND_OFPORT}"]] if on_demand else []
    return [
        ["--may-exist", "add-br", "br-int"], ["set", "Bridge", "br-int", f"datapath_type={datapath_type}"],
        ["--may-exist", "add-br", "br-tun"], ["set", "Bridge", "br-tun", f"datapath_type={datapath_type}",
                                              "fail_mode=secure"],
        ["--may-exist", "add-port", "br-int", "patch-tun"],
        ["set", "Interface", "patch-tun", "type=patch", "options:peer=patch-int"],
        ["--may-exist", "add-port", "br-tun", "patch-int"],
        ["set", "Interface", "patch-int", "type=patch", "options:peer=patch-tun", f"ofport_request={PATCH_INT_OFPORT}"],
        ["--may-exist", "add-port", "br-tun", "vxlan-generic"],
        ["set", "Interface", "vxlan-generic", "type=vxlan", "options:remote_ip=flow", "options:key=flow",
         f"ofport_request={VXLAN_OFPORT}"],
        ["--may-exist", "add-port", "br-int", DHCP_PORT],  # a trunk: the answers carry the VM's VLAN
        ["set", "Interface", DHCP_PORT, "type=internal", f"ofport_request={DHCP_OFPORT}"],
        *demand,
    ]


def base_flows(*, on_demand: bool = False) -> list[str]:
    """br-tun's fixed pipeline (every table ends in a drop). On demand, an unknown destination (table 20) or ARP
    target (table 51) goes to the agent instead, which sends back ARP answers (to br-int) and held frames (to 2)."""
    c = f"cookie={COOKIE}"
    demand = [f"{c},table=0,priority=2,in_port={DEMAND_OFPORT},arp,arp_op=2,actions=output:{PATCH_INT_OFPORT}",
              f"{c},table=0,priority=1,in_port={DEMAND_OFPORT},actions=resubmit(,2)",
              f"{c},table=20,priority=0,actions=output:{DEMAND_OFPORT}",
              f"{c},table=51,priority=0,actions=output:{DEMAND_OFPORT}"]
    miss = "" if on_demand else "drop"
    out = [
        f"{c},table=0,priority=1,in_port={PATCH_INT_OFPORT},actions=resubmit(,2)",
        f"{c},table=0,priority=1,in_port={VXLAN_OFPORT},actions=resubmit(,4)",
        f"{c},table=0,priority=0,actions=drop",
        f"{c},table=2,priority=25,icmp,icmp_type=8,actions=resubmit(,52)",
        f"{c},table=2,priority=2,arp,arp_op=1,actions=resubmit(,51)",
        f"{c},table=2,priority=1,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00,actions=resubmit(,20)",
        f"{c},table=2,priority=0,actions=drop",
        f"{c},table=4,priority=0,actions=drop",
        *([f"{c},table=20,priority=0,actions=drop", f"{c},table=51,priority=0,actions=drop"] if miss else demand),
        f"{c},table=52,priority=1,arp,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],{MAC_REG.format('NXM_OF_ETH_SRC[]')},"
        "load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],"
        f"{MAC_REG.format('NXM_NX_ARP_SHA[]')},move:NXM_OF_ARP_TPA[]->NXM_NX_REG4[],"
        "move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],move:NXM_NX_REG4[]->NXM_OF_ARP_SPA[],in_port",
        f"{c},table=52,priority=1,icmp,actions=resubmit(,20)",
        f"{c},table=52,priority=0,actions=drop",
    ]
    return out


def vni_flow(vni: int, vlan: int) -> str:
    """Decapsulation: frames of this VNI enter br-int on the VPC's local VLAN."""
    return (f"add cookie={COOKIE},table=4,priority=1,tun_id={vni:#x},"
            f"actions=mod_vlan_vid:{vlan},output:{PATCH_INT_OFPORT}")


def vni_delete(vni: int) -> str:
    return f"delete_strict table=4,priority=1,tun_id={vni:#x}"


def neighbor_flows(vni: int, vlan: int, mac: str, ip: str | None, host_ip: str) -> list[str]:
    """Encapsulation towards a remote VM, and the ARP answer for its address."""
    out = [f"add cookie={COOKIE},table=20,priority=1,dl_vlan={vlan},dl_dst={mac},"
           f"actions=strip_vlan,load:{vni:#x}->NXM_NX_TUN_ID[],set_field:{host_ip}->tun_dst,output:{VXLAN_OFPORT}"]
    if ip:
        out.append(f"add cookie={COOKIE},table=51,priority=1,arp,dl_vlan={vlan},arp_tpa={ip},"
                   f"actions=load:0x{mac.replace(':', '')}->{MAC_FIELD},resubmit(,52)")
    return out


def neighbor_delete(vlan: int, mac: str, ip: str | None) -> list[str]:
    out = [f"delete_strict table=20,priority=1,dl_vlan={vlan},dl_dst={mac}"]
    if ip:
        out.append(f"delete_strict table=51,priority=1,arp,dl_vlan={vlan},arp_tpa={ip}")
    return out


def port_commands(tap: str, vlan: int, port_id: str, mac: str) -> list[list[str]]:
    """A VM's port on br-int, on its VPC's VLAN, named as ACA and Neutron name it."""
    return [["--may-exist", "add-port", "br-int", tap, f"tag={vlan}"],
            ["set", "Interface", tap, f"external_ids:iface-id={port_id}", f"external_ids:attached-mac={mac}"]]


# -- routers (DVR) ------------------------------------------------------------------------------------------------
#: The DVR MACs Alcor gives hosts share this prefix: a frame from one is a routed frame (ACA's HOST_DVR_MAC_MATCH).
DVR_MAC_MATCH = "fe:16:11:00:00:00/ff:ff:ff:00:00:00"


def _hex_mac(mac: str) -> str:
    return "0x" + mac.replace(":", "")


def gateway_flows(vni: int, vlan: int, cidr: str, gateway_ip: str, gateway_mac: str) -> list[tuple[str, str]]:
    """A router's interface in one subnet: ARP and ping of the gateway answered, and routed frames arriving for
    the subnet given the gateway's MAC as source. Each flow as (add line, its strict delete)."""
    c = f"cookie={COOKIE}"
    arp = f"table=51,priority=50,arp,dl_vlan={vlan},arp_tpa={gateway_ip}"
    echo = f"table=52,priority=50,icmp,icmp_type=8,dl_vlan={vlan},nw_dst={gateway_ip}"
    restore = f"table=4,priority=2,tun_id={vni:#x},ip,nw_dst={cidr},dl_src={DVR_MAC_MATCH}"
    return [
        (f"add {c},{arp},actions=load:{_hex_mac(gateway_mac)}->{MAC_FIELD},resubmit(,52)", f"delete_strict {arp}"),
        (f"add {c},{echo},actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{gateway_mac},"
         f"move:NXM_OF_IP_SRC[]->NXM_OF_IP_DST[],mod_nw_src:{gateway_ip},load:0xff->NXM_NX_IP_TTL[],"
         "load:0->NXM_OF_ICMP_TYPE[],in_port", f"delete_strict {echo}"),
        (f"add {c},{restore},actions=mod_dl_src:{gateway_mac},mod_vlan_vid:{vlan},output:{PATCH_INT_OFPORT}",
         f"delete_strict {restore}"),
    ]


def route_flow(from_vlan: int, from_gateway_mac: str, vlan: int, mac: str, ip: str, *,
               dvr_mac: str | None, gateway_mac: str) -> tuple[str, str]:
    """A VM `ip` reached from another subnet of its router (VLAN `from_vlan`, whose gateway MAC the sender used):
    remote, the frame leaves with this host's DVR MAC as source (`dvr_mac`); local (`dvr_mac` None), it goes back
    to br-int at once, from the destination subnet's gateway MAC as a router's frame would be (ACA keeps the
    sender's MAC, which br-int then learns on its patch port when both subnets share a VLAN)."""
    match = f"table=0,priority=50,ip,dl_vlan={from_vlan},nw_dst={ip},dl_dst={from_gateway_mac}"
    if dvr_mac is None:
        actions = f"mod_vlan_vid:{vlan},mod_dl_src:{gateway_mac},mod_dl_dst:{mac},in_port"
    else:
        actions = f"mod_vlan_vid:{vlan},mod_dl_src:{dvr_mac},mod_dl_dst:{mac},resubmit(,2)"
    return f"add cookie={COOKIE},{match},actions={actions}", f"delete_strict {match}"


# -- security groups, enforced on br-int with conntrack (ACA only logs them) ---------------------------------------
# Each filtered port has a conntrack zone of its own, used for both its directions: what it sent and was allowed is
# committed there, so the answers come back as established; what comes to it is checked in the same zone.
#   table 0   a filtered port's IP -> conntrack (its zone) -> 71; any other IP -> 72; the rest NORMAL
#   table 71  egress: established or related -> 72; new and allowed by a rule -> committed -> 72; else dropped
#   table 72  IP for a filtered port on this host -> conntrack (its zone) -> 73; else NORMAL
#   table 73  ingress: established or related -> NORMAL; new and allowed by a rule -> committed -> NORMAL; else dropped
EGRESS_TABLE, DELIVER_TABLE, INGRESS_TABLE = 71, 72, 73
UNTAGGED = "vlan_tci=0x0000/0x1fff"  # as it arrives from a VM's access port


def int_base_flows() -> list[str]:
    """br-int's fixed pipeline: NORMAL switching as before, with IP passing the filter tables."""
    c = f"cookie={COOKIE}"
    out = [f"{c},table=0,priority=0,actions=NORMAL", f"{c},table=0,priority=20,ip,actions=resubmit(,{DELIVER_TABLE})",
           f"{c},table={DELIVER_TABLE},priority=0,actions=NORMAL",
           # DHCP to the agent, whatever a port's groups (as Neutron lets it through), and its answers back unfiltered
           f"{c},table=0,priority=50,udp,{UNTAGGED},tp_src=68,tp_dst=67,actions=output:{DHCP_OFPORT}",
           f"{c},table=0,priority=50,in_port={DHCP_OFPORT},actions=NORMAL"]
    for table, then in ((EGRESS_TABLE, f"resubmit(,{DELIVER_TABLE})"), (INGRESS_TABLE, "NORMAL")):
        out += [f"{c},table={table},priority=100,ct_state=-new+est-inv+trk,actions={then}",
                f"{c},table={table},priority=100,ct_state=-new+rel-inv+trk,actions={then}",
                f"{c},table={table},priority=0,actions=drop"]
    return out


def filter_port_flows(mac: str, vlan: int, zone: int) -> list[tuple[str, str]]:
    """A filtered port's way into conntrack: what it sends (untagged, from its MAC), what comes to it (from br-tun on
    its VLAN, or from a port here). Each as (add line, its strict delete)."""
    c = f"cookie={COOKIE}"
    out = []
    for match, table in ((f"table=0,priority=40,ip,{UNTAGGED},dl_src={mac}", EGRESS_TABLE),
                         (f"table={DELIVER_TABLE},priority=40,ip,dl_vlan={vlan},dl_dst={mac}", INGRESS_TABLE),
                         (f"table={DELIVER_TABLE},priority=40,ip,{UNTAGGED},dl_dst={mac}", INGRESS_TABLE)):
        out.append((f"add {c},{match},actions=ct(table={table},zone={zone})", f"delete_strict {match}"))
    return out


def allow_flow(zone: int, egress: bool, match: str) -> tuple[str, str]:
    """A new connection of the port in `zone` that a rule allows (`match`: protocol, remote address, ports)."""
    table, then = (EGRESS_TABLE, f"resubmit(,{DELIVER_TABLE})") if egress else (INGRESS_TABLE, "NORMAL")
    head = f"table={table},priority=70,ct_state=+new-est+trk,ct_zone={zone},{match}"
    return f"add cookie={COOKIE},{head},actions=ct(commit,zone={zone}),{then}", f"delete_strict {head}"
