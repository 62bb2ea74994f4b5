"""Goal states as Alcor's test controller builds them: one GoalStateV2 per compute host.

Pure: VMs (ports) in, messages out. VPC and subnet go as INFO, the host's own ports as CREATE
with FULL updates, and an L2 neighbour entry for every port of the same subnets on other hosts;
`host_resources[host IP]` lists what the host must program (as Alcor's DPM writes it; ACA does not read it).
A subnet with a router: the host gets the router's state (its DVR MAC, one routing table per subnet, every
subnet of the router as INFO) and an L3 neighbour entry for every port of the router's other subnets,
on this host too, as DPM sends them and ACA's L3 programmer needs them.
"""

from __future__ import annotations

import functools
import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, resources_pb2

IDS = uuid.UUID("6f1f3c2e-5b7a-4c1e-9d3f-2a8b7c6d5e4f")  # namespace of our deterministic resource ids


def resource_id(*parts: str) -> str:
    return str(uuid.uuid5(IDS, "/".join(parts)))


@dataclass(frozen=True)
class Vpc:
    """A subnet of a VPC: a VPC of several subnets is several of these with the same name (and VNI)."""

    name: str
    vni: int
    cidr: str  # the subnet the VMs take addresses from
    router: str = ""  # the router connecting it to the VPC's other subnets of the same router (DVR), if any
    dhcp: bool = False  # dhcp_enable: its VMs with a DHCP entry take their address by DHCP
    dns: tuple[str, ...] = ()

    # Each is asked for once per port and neighbour entry (a million times for 10,000 ports): made once.
    @functools.cached_property
    def id(self) -> str:
        return resource_id("vpc", self.name)

    @functools.cached_property
    def subnet_id(self) -> str:
        return resource_id("subnet", self.name, self.cidr)

    @functools.cached_property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.cidr).hosts()))

    @functools.cached_property
    def gateway_mac(self) -> str:
        """The gateway port's MAC: fa:16:3f (VMs have OpenStack's fa:16:3e) and three bytes of the subnet's id."""
        return "fa:16:3f:" + ":".join(self.subnet_id[i:i + 2] for i in (0, 2, 4))

    @functools.cached_property
    def router_id(self) -> str:
        return resource_id("router", self.name, self.router) if self.router else ""


def dvr_mac(host_ip: str) -> str:
    """A host's DVR MAC, as Alcor's prefix (fe:16:11, which ACA's rules match) and the host address's last bytes."""
    return "fe:16:11:" + ":".join(f"{int(b):02x}" for b in host_ip.split(".")[1:])


@dataclass(frozen=True, eq=False)  # its rules are mappings: a group is itself, not its value
class SecurityGroup:
    """A group and its rules as a topology file gives them (schema.security_group): each a mapping of direction,
    protocol (tcp, udp, icmp or any), ports, remote and remote_group."""

    name: str
    rules: tuple = ()

    @functools.cached_property
    def id(self) -> str:
        return resource_id("security-group", self.name)


@dataclass(frozen=True)
class Port:
    """A VM's port: where it lives and what it is."""

    name: str
    vpc: Vpc
    host_ip: str  # the compute node's underlay address
    ip: str  # without prefix
    mac: str
    id: str = ""
    groups: tuple[SecurityGroup, ...] = ()
    dhcp: bool = False  # its host gets a DHCP entry for it (Alcor's DHCPState): the VM boots by DHCP

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", resource_id("port", self.vpc.name, self.name))


def vpc_state(vpc: Vpc, op: int = common.INFO) -> resources_pb2.VpcState:
    cfg = resources_pb2.VpcConfiguration(revision_number=1, id=vpc.id, update_type=common.FULL, name=vpc.name,
                                         cidr=vpc.cidr, tunnel_id=vpc.vni)
    return resources_pb2.VpcState(operation_type=op, configuration=cfg)


def subnet_state(vpc: Vpc, op: int = common.INFO) -> resources_pb2.SubnetState:
    cfg = resources_pb2.SubnetConfiguration(revision_number=1, id=vpc.subnet_id, update_type=common.FULL,
                                            network_type=common.VXLAN, vpc_id=vpc.id, name=f"{vpc.name}-subnet",
                                            cidr=vpc.cidr, tunnel_id=vpc.vni,
                                            gateway=resources_pb2.SubnetConfiguration.Gateway(
                                                ip_address=vpc.gateway, mac_address=vpc.gateway_mac),
                                            dhcp_enable=vpc.dhcp, dns_entry_list=[
                                                resources_pb2.SubnetConfiguration.DnsEntry(entry=d) for d in vpc.dns])
    return resources_pb2.SubnetState(operation_type=op, configuration=cfg)


def port_state(port: Port, op: int = common.CREATE) -> resources_pb2.PortState:
    cfg = resources_pb2.PortConfiguration(
        revision_number=1, id=port.id, update_type=common.FULL, vpc_id=port.vpc.id, name=port.name,
        device_id=port.name, device_owner="compute:nova", mac_address=port.mac, admin_state_up=True,
        host_info=resources_pb2.PortConfiguration.HostInfo(ip_address=port.host_ip),
        fixed_ips=[resources_pb2.PortConfiguration.FixedIp(subnet_id=port.vpc.subnet_id, ip_address=port.ip)],
        security_group_ids=[resources_pb2.PortConfiguration.SecurityGroupId(id=g.id) for g in port.groups])
    return resources_pb2.PortState(operation_type=op, configuration=cfg)


def dhcp_state(port: Port, op: int = common.CREATE) -> resources_pb2.DHCPState:
    cfg = resources_pb2.DHCPConfiguration(revision_number=1, id=resource_id("dhcp", port.id), update_type=common.FULL,
                                          subnet_id=port.vpc.subnet_id, mac_address=port.mac, ipv4_address=port.ip,
                                          port_host_name=port.name)
    return resources_pb2.DHCPState(operation_type=op, configuration=cfg)


_PROTOCOLS = {"tcp": [common.TCP], "udp": [common.UDP], "icmp": [common.ICMP], "any": [common.TCP, common.UDP, common.ICMP]}


def security_group_state(group: SecurityGroup, vpc: Vpc, op: int = common.CREATE) -> resources_pb2.SecurityGroupState:
    """The group with its rules in Alcor's form; `any` protocol is a rule per protocol (Alcor's enum has no "any")."""
    Cfg = resources_pb2.SecurityGroupConfiguration  # noqa: N806 - a class
    rules = []
    for i, rule in enumerate(group.rules):
        low, high = rule["ports"]
        for protocol in _PROTOCOLS[rule["protocol"]]:
            rules.append(Cfg.SecurityGroupRule(
                operation_type=common.CREATE, security_group_id=group.id, id=resource_id("rule", group.name, str(i),
                                                                                        str(protocol)),
                direction=Cfg.EGRESS if rule["direction"] == "egress" else Cfg.INGRESS, ethertype=common.IPV4,
                protocol=protocol, port_range_min=low, port_range_max=high, remote_ip_prefix=rule["remote"],
                remote_group_id=resource_id("security-group", rule["remote_group"]) if rule["remote_group"] else ""))
    cfg = Cfg(revision_number=1, id=group.id, update_type=common.FULL, vpc_id=vpc.id, name=group.name,
              security_group_rules=rules)
    return resources_pb2.SecurityGroupState(operation_type=op, configuration=cfg)


def router_state(subnets: Iterable[Vpc], host: str, op: int = common.CREATE) -> resources_pb2.RouterState:
    """The router of `subnets` (one router's) as `host` gets it: its DVR MAC and a routing table per subnet."""
    subnets = list(subnets)
    Cfg = resources_pb2.RouterConfiguration  # noqa: N806 - a class
    cfg = Cfg(revision_number=1, id=subnets[0].router_id, update_type=common.FULL, host_dvr_mac_address=dvr_mac(host),
              subnet_routing_tables=[Cfg.SubnetRoutingTable(subnet_id=s.subnet_id) for s in subnets])
    return resources_pb2.RouterState(operation_type=op, configuration=cfg)


def neighbor_state(port: Port, op: int = common.CREATE, *, l3: bool = False) -> resources_pb2.NeighborState:
    fixed = resources_pb2.NeighborConfiguration.FixedIp(neighbor_type=common.L3 if l3 else common.L2,
                                                        subnet_id=port.vpc.subnet_id,
                                                        ip_address=port.ip, tunnel_id=port.vpc.vni)
    cfg = resources_pb2.NeighborConfiguration(revision_number=1, id=port.id, update_type=common.FULL,
                                              vpc_id=port.vpc.id, name=port.name, mac_address=port.mac,
                                              host_ip_address=port.host_ip, fixed_ips=[fixed])
    return resources_pb2.NeighborState(operation_type=op, configuration=cfg)


def message_for(messages: dict[str, goalstate_pb2.GoalStateV2], host: str) -> goalstate_pb2.GoalStateV2:
    """The host's message in `messages`, made (with its host_resources entry) on first use."""
    gs = messages.get(host)
    if gs is None:
        gs = messages[host] = goalstate_pb2.GoalStateV2(format_version=1)
        gs.host_resources.get_or_create(host)
    return gs


def add_subnet(gs: goalstate_pb2.GoalStateV2, host: str, vpc: Vpc) -> None:
    """The subnet (and its VPC) into the host's message as INFO, once."""
    listed = gs.host_resources[host].resources
    if vpc.id not in gs.vpc_states:
        gs.vpc_states[vpc.id].CopyFrom(vpc_state(vpc))
        listed.add(type=common.VPC, id=vpc.id)
    if vpc.subnet_id not in gs.subnet_states:
        gs.subnet_states[vpc.subnet_id].CopyFrom(subnet_state(vpc))
        listed.add(type=common.SUBNET, id=vpc.subnet_id)


def add(gs: goalstate_pb2.GoalStateV2, host: str, port: Port, *, neighbor: bool = False, op: int = common.CREATE,
        made: dict[tuple[str, int, bool], resources_pb2.NeighborState] | None = None, l3: bool = False) -> None:
    """`port` into the host's message: as its own port or as a neighbour (an L3 one: `l3`), with its VPC and subnet
    as INFO.

    A port is a neighbour in every other host's message: `made` keeps its entry, built once, for the next."""
    listed = gs.host_resources[host].resources
    add_subnet(gs, host, port.vpc)
    if neighbor:
        made = {} if made is None else made
        state = made.get((port.id, op, l3))
        if state is None:
            state = made[(port.id, op, l3)] = neighbor_state(port, op, l3=l3)
        gs.neighbor_states[port.id].CopyFrom(state)
        listed.add(type=common.NEIGHBOR, id=port.id)
    else:
        for group in port.groups:  # before its first port, as DPM sends them; each once
            if group.id not in gs.security_group_states:
                gs.security_group_states[group.id].CopyFrom(security_group_state(group, port.vpc))
                listed.add(type=common.SECURITYGROUP, id=group.id)
        gs.port_states[port.id].CopyFrom(port_state(port, op))
        listed.add(type=common.PORT, id=port.id)
        if port.dhcp:
            entry = dhcp_state(port, op)
            gs.dhcp_states[entry.configuration.id].CopyFrom(entry)
            listed.add(type=common.DHCP, id=entry.configuration.id)


def without_neighbours(gs: goalstate_pb2.GoalStateV2, host: str) -> None:
    """The message as an on-demand host gets it: its neighbours come later, each when first needed."""
    gs.ClearField("neighbor_states")
    if host in gs.host_resources:
        kept = [r for r in gs.host_resources[host].resources if r.type != common.NEIGHBOR]
        del gs.host_resources[host].resources[:]
        gs.host_resources[host].resources.extend(kept)


def per_host(ports: Iterable[Port], *, op: int = common.CREATE) -> dict[str, goalstate_pb2.GoalStateV2]:
    """host IP -> the one message that host's agent gets (DELETE undoes what CREATE made).

    Neighbours: the ports of a host's VPCs on other hosts (L2) and, where one of its subnets has a router, every
    port of the router's subnets, on this host too (L3: an L3 entry is an L2 one plus the routes to it)."""
    ports = list(ports)
    by_vpc: dict[str, list[Port]] = defaultdict(list)
    routed: dict[str, dict[str, Vpc]] = defaultdict(dict)  # router id -> its subnets, by subnet id
    for p in ports:
        by_vpc[p.vpc.name].append(p)
        if p.vpc.router:
            routed[p.vpc.router_id][p.vpc.subnet_id] = p.vpc
    out: dict[str, goalstate_pb2.GoalStateV2] = {}
    own_subnets: dict[str, dict[str, Vpc]] = defaultdict(dict)  # host -> the subnets of its own ports
    for p in ports:
        add(message_for(out, p.host_ip), p.host_ip, p, op=op)
        own_subnets[p.host_ip][p.vpc.subnet_id] = p.vpc
    made: dict = {}
    for host, gs in out.items():
        subnets = own_subnets[host]
        routers = sorted({s.router_id for s in subnets.values() if s.router})
        for rid in routers:  # the router and every subnet it has (ACA reads them from the same message)
            for s in routed[rid].values():
                add_subnet(gs, host, s)
            gs.router_states[rid].CopyFrom(router_state(routed[rid].values(), host, op))
            gs.host_resources[host].resources.add(type=common.ROUTER, id=rid)
        for name in sorted({s.name for s in subnets.values()}):
            for p in by_vpc[name]:
                if p.vpc.router and p.vpc.router_id in routers:  # routed to, from here too
                    add(gs, host, p, neighbor=True, op=op, made=made, l3=True)
                elif p.host_ip != host:
                    add(gs, host, p, neighbor=True, op=op, made=made)
    return out


# -- one VPC's neighbour table, encoded once for all its hosts ------------------------------------------------
# A message's bytes are the concatenation of its fields, and a parser merges what it reads: map entries and
# repeated items add up. So a host's message is its own part, serialized as usual, followed by bytes shared
# by every host of the VPC (the table's neighbour entries) and its host_resources entry, whose list of
# resources is the host's own ids followed by the table's ids (again shared bytes).

_HOST_RESOURCES = goalstate_pb2.GoalStateV2.DESCRIPTOR.fields_by_name["host_resources"].number


@dataclass(frozen=True)
class Table:
    """A VPC's neighbour entries and their ids, as bytes."""

    states: bytes  # a GoalStateV2 holding only neighbor_states
    ids: bytes  # a HostResources listing them
    count: int


def table(ports: Iterable[Port], *, op: int = common.CREATE) -> Table:
    gs = goalstate_pb2.GoalStateV2()
    listed = goalstate_pb2.HostResources()
    n = 0
    for p in ports:
        gs.neighbor_states[p.id].CopyFrom(neighbor_state(p, op))
        listed.resources.add(type=common.NEIGHBOR, id=p.id)
        n += 1
    return Table(gs.SerializeToString(), listed.SerializeToString(), n)


def compose(own: goalstate_pb2.GoalStateV2, host: str, shared: list[Table]) -> bytes:
    """The host's message: `own` (its ports, VPCs and subnets; its host_resources entry, if any, is replaced),
    then the shared tables, then one host_resources entry for all."""
    mine = own.host_resources[host] if host in own.host_resources else goalstate_pb2.HostResources()
    rest = goalstate_pb2.GoalStateV2()
    rest.CopyFrom(own)
    rest.host_resources.clear()
    resources = mine.SerializeToString() + b"".join(t.ids for t in shared)
    key = host.encode()
    entry = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(len(resources)) + resources
    tag = _varint(_HOST_RESOURCES << 3 | 2)  # a length-delimited field
    return b"".join((rest.SerializeToString(), *(t.states for t in shared), tag, _varint(len(entry)), entry))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
