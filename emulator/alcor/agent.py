"""The goal-state agent's core: what ACA does with a goal state, minus the gRPC plumbing.

A message is applied in ACA's order (VPC and subnet lookups, routers, ports, neighbours, DHCP).
The agent decides (validation, statuses, VLANs, which flows); its `Dataplane` (dataplane.py) carries
the decisions out in one batch per kind of work: the message's flows as one bundle (first:
ovs-vswitchd polls every port between each 50 OpenFlow messages, so it is cheaper before the new
ports join), then the new VMs, then their configuration. Each operation gets its own status and the
time its batch took; none says SUCCESS for what the data plane did not do.
"""

from __future__ import annotations

import functools
import gc
import heapq
import ipaddress
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from emulator.alcor import dhcp, flows
from emulator.alcor.dataplane import Dataplane, DataplaneError, FlowSink, LocalPort, NewVm
from emulator.alcor.flows import MAC_RE
from emulator.alcor.routers import Routed, RouterRefused, Routers, read_subnet
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2, goalstateprovisioner_pb2, resources_pb2
from emulator.alcor.secgroups import Bound, Firewall, read_group
from emulator.alcor.wire import NeighborEntry
from emulator.runtime import tokens

log = logging.getLogger("cloudemu.agent")
Reply = goalstateprovisioner_pb2.GoalStateOperationReply
Status = Reply.GoalStateOperationStatus
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
DHCP_SERVER_MAC = "fa:16:3f:ff:ff:fe"  # the answers' source when the subnet names no gateway MAC
VLAN_MAX = 4094
VNI_LIMIT = 1 << 24  # a VXLAN network identifier has 24 bits
#: The kinds ACA's V2 path (PushGoalStatesStream) gives a status in its reply; its V1 path and `all_statuses`
#: give every resource one. The others are still checked, counted (Agent.failures) and logged.
V2_REPORTED = frozenset({common.PORT, common.ROUTER, common.DHCP})
ALL_KINDS = frozenset(common.ResourceType.values())


class Neighbor(NamedTuple):
    """A remote port as this host's flows need it. Immutable, so one object serves every node of a pack that
    learns the same neighbour (see NeighborIntake)."""

    vni: int
    mac: str
    ip: str
    host_ip: str
    more: tuple[str, ...] = ()  # its other IPv4 fixed IPs: ACA answers ARP for every one


class DhcpEntry(NamedTuple):
    ip: str
    hostname: str
    subnet_id: str


class Reading(NamedTuple):
    """What a NeighborState says, checked as far as it can be without a host's own state (read_neighbor)."""

    op: int
    id: str
    ok: bool  # an IPv4 fixed IP, a unicast-shaped MAC and an IPv4 host address
    mac: str
    ip: str
    host_ip: str
    tunnel_id: int
    subnet_id: str
    neighbor: Neighbor | None  # made once when the VNI is the message's own (fixed IP's tunnel id)
    l3: bool = False  # routed to from the other subnets of its subnet's router (its fixed IP's neighbor_type)
    more: tuple[str, ...] = ()  # its other IPv4 fixed IPs


def read_neighbor(state: resources_pb2.NeighborState) -> Reading:
    """The one reading of a neighbour state, for every agent (full or hollow, V1 or V2, cached or not)."""
    cfg = state.configuration
    fixed = _first_ipv4(cfg.fixed_ips)
    mac = cfg.mac_address.lower()
    remote = cfg.host_ip_address
    ok = fixed is not None and MAC_RE.fullmatch(mac) is not None and _ipv4(remote)
    if fixed is None:
        return Reading(state.operation_type, cfg.id, False, mac, "", remote, 0, "", None)
    tunnel_id, ip = fixed.tunnel_id, fixed.ip_address
    more = tuple(dict.fromkeys(f.ip_address for f in cfg.fixed_ips if f.ip_address != ip and _ipv4(f.ip_address))) \
        if len(cfg.fixed_ips) > 1 else ()
    made = Neighbor(tunnel_id, mac, ip, remote, more) if ok and 0 < tunnel_id < VNI_LIMIT else None
    return Reading(state.operation_type, cfg.id, ok, mac, ip, remote, tunnel_id, fixed.subnet_id, made,
                   fixed.neighbor_type == common.L3, more)


class NeighborIntake:
    """Neighbour entries known again by their bytes: a VPC's table reaches every host of the VPC, so a pack of
    hollow nodes reads each distinct entry once (3 us), then finds it (0.2 us); the same id, Reading and
    Neighbor serve all of the pack's nodes, which is what lets 10^8 neighbour entries fit in memory."""

    LIMIT = 2_000_000  # distinct entries kept; past it the cache starts again

    def __init__(self) -> None:
        self.known: dict[bytes, tuple[str, Reading]] = {}

    def read(self, raw: bytes) -> tuple[str, Reading]:
        found = self.known.get(raw)
        if found is None:
            if len(self.known) >= self.LIMIT:
                self.known.clear()
            entry = NeighborEntry.FromString(raw)
            found = self.known[raw] = (entry.key, read_neighbor(entry.value))
        return found

    def entries(self, entries: list[bytes]) -> Iterable[tuple[str, Reading]]:
        """(id, Reading) of a lean message's neighbour entries: the last entry of an id wins, as in a map."""
        get, read = self.known.get, self.read
        return dict(get(raw) or read(raw) for raw in entries).items()


@dataclass
class _Work:
    """What one message asks of the data plane, gathered before anything runs."""

    #: The reply, its statuses made in place (100,000 statuses copied into a reply cost 50 ms).
    reply: Reply = field(default_factory=lambda: Reply(format_version=1))
    new_ports: list[tuple[Status, NewVm]] = field(default_factory=list)
    gone_ports: list[tuple[Status, LocalPort]] = field(default_factory=list)
    flow_ops: list[Status] = field(default_factory=list)
    flows: FlowSink | None = None
    #: What the flows of this message change in the agent's tables, to undo if the bundle is not applied.
    new_vnis: list[int] = field(default_factory=list)
    new_decap: list[int] = field(default_factory=list)  # VNIs whose table-4 flow this message adds
    dropped_decap: list[int] = field(default_factory=list)  # ... and removes (their last local port went)
    freed_vlans: list[tuple[int, int]] = field(default_factory=list)  # (VNI, VLAN) no longer used at all
    neighbors_before: dict[str, Neighbor | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for the log
    reported: frozenset[int] = ALL_KINDS  # the kinds whose statuses go in the reply
    unreported: list[Status] = field(default_factory=list)  # the others' (few: VPCs, subnets, ...)
    #: Neighbours have no status object unless reported (100,000 a message): their failures are counted.
    silent_failures: int = 0
    silent_flow_ops: int = 0  # unreported neighbour operations waiting on the flow bundle
    #: The message's own subnet states given as INFO: where a router reads its subnets, as ACA's does.
    subnets: dict[str, resources_pb2.SubnetConfiguration] = field(default_factory=dict)
    subnet_vnis: dict[str, int] = field(default_factory=dict)  # the VNI of each subnet state in the message
    routers_before: Routers | None = None  # the host's routers before this message changed them
    firewall_before: Firewall | None = None
    filters_changed: set[str] = field(default_factory=set)  # ports whose security group flows are made again

    def status(self, rid: str, kind: int, op: int) -> Status:
        if kind in self.reported:
            return self.reply.operation_statuses.add(resource_id=rid, resource_type=kind, operation_type=op,
                                                     operation_status=common.SUCCESS)
        status = Status(resource_id=rid, resource_type=kind, operation_type=op, operation_status=common.SUCCESS)
        self.unreported.append(status)
        return status


def _collecting_after(method):
    """A message makes hundreds of thousands of short-lived objects, none in a cycle; Python's cyclic
    collector, run every 700 allocations meanwhile, took a quarter of the agent's time at 100,000
    neighbours. It runs once the message is done."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return method(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return wrapper


class Agent:
    """Goal states in, data plane programmed, one status per operation out."""

    def __init__(self, dataplane: Dataplane, host_ip: str, vm_prefix: str, *, all_statuses: bool = False,
                 intake: NeighborIntake | None = None):
        """`all_statuses`: a V2 reply lists every resource's status, not only ACA's kinds (see V2_REPORTED).
        `intake`: where lean messages' neighbour states are read (a pack's nodes share one)."""
        self.dp, self.host_ip, self.vm_prefix = dataplane, host_ip, vm_prefix
        self.intake = intake or NeighborIntake()
        self.v2_reported = ALL_KINDS if all_statuses else V2_REPORTED
        self.failures = 0  # operations that did not succeed, reported in a reply or not
        self.vpcs: dict[str, resources_pb2.VpcConfiguration] = {}
        self.subnets: dict[str, resources_pb2.SubnetConfiguration] = {}
        self.vlans: dict[int, int] = {}  # VNI -> local VLAN
        self.free_vlans: list[int] = []  # freed, taken again lowest first (a heap)
        self.decap: set[int] = set()  # VNIs with a table-4 flow: those with a port here
        self.ports: dict[str, LocalPort] = {}
        self.neighbors: dict[str, Neighbor] = {}
        self.routers = Routers()
        self.firewall = Firewall()
        self.dhcp: dict[str, DhcpEntry] = {}  # MAC -> what ACA's DHCP responder gives it
        self.port_by_mac: dict[str, LocalPort] = {}  # read by the DHCP thread: each lookup one atomic get
        self.names: set[str] = set()  # the taps and VM namespaces of self.ports: two ports never share one
        self.lock = threading.Lock()  # one message at a time, as ACA's per-host queue

    # -- entry points --------------------------------------------------------
    @_collecting_after
    def push_v2(self, gs: goalstate_pb2.GoalStateV2) -> Reply:
        started = time.perf_counter()  # reading the neighbours below counts in the message's time

        def pick(states):  # a map's items() iterates in Python (collections.abc); its keys do not
            return ((rid, states[rid]) for rid in states)  # lazily: each entry's wrapper dies after use
        # host_resources is not read, as ACA does not read it: a host takes every resource of its message
        if isinstance(gs, goalstate_pb2.GoalStateV2):
            neighbors = ((rid, read_neighbor(state)) for rid, state in pick(gs.neighbor_states))
        else:  # wire.LeanGoalStateV2: the same message, its neighbour states as bytes
            neighbors = self.intake.entries(list(gs.neighbor_states))
        return self._apply(pick(gs.vpc_states), pick(gs.subnet_states), pick(gs.port_states),
                           neighbors, pick(gs.router_states), pick(gs.dhcp_states),
                           pick(gs.security_group_states), pick(gs.gateway_states), reported=self.v2_reported,
                           started=started)

    @_collecting_after
    def push_v1(self, gs: goalstate_pb2.GoalState) -> Reply:
        started = time.perf_counter()

        def ids(states):
            return [(s.configuration.id, s) for s in states]
        neighbors = [(s.configuration.id, read_neighbor(s)) for s in gs.neighbor_states]
        return self._apply(ids(gs.vpc_states), ids(gs.subnet_states), ids(gs.port_states), neighbors,
                           ids(gs.router_states), ids(gs.dhcp_states), ids(gs.security_group_states),
                           ids(gs.gateway_states), started=started)

    # -- one message -----------------------------------------------------------
    def _apply(self, vpcs, subnets, ports, neighbors, routers, dhcps, security_groups, gateways, *,
               reported: frozenset[int] = ALL_KINDS, started: float) -> Reply:
        with self.lock:
            work = _Work(flows=self.dp.flow_sink(), reported=reported)
            try:
                for rid, s in vpcs:
                    self._lookup(self.vpcs, rid, s, common.VPC, work)
                for rid, s in subnets:
                    kept = self._lookup(self.subnets, rid, s, common.SUBNET, work)
                    if s.operation_type == common.INFO:
                        work.subnets[kept.id] = kept
                    if s.operation_type != common.DELETE and 0 < kept.tunnel_id < VNI_LIMIT:
                        work.subnet_vnis[kept.id] = int(kept.tunnel_id)
                for rid, s in routers:
                    self._router(rid, s, work)
                for rid, s in security_groups:  # before the ports: a port's filter reads its groups' rules
                    self._security_group(rid, s, work)
                for rid, s in ports:
                    self._port(rid, s, work)
                self._neighbors(neighbors, work)
                if work.gone_ports:
                    self._release(work)
                for rid, s in dhcps:
                    self._dhcp_entry(rid, s, work)
                self._not_emulated(common.GATEWAY, gateways, work)
                if work.filters_changed:
                    try:
                        work.flows.add_int(self.firewall.flush(work.filters_changed))
                    except ValueError as exc:  # out of conntrack zones: the ports that needed one fail
                        log.warning("security groups: %s", exc)
                        for status, vm in work.new_ports:
                            if vm.port.id in work.filters_changed:
                                status.operation_status = common.FAILURE
                work.seconds["read"] = time.perf_counter() - started
                self._program(work, started)
            finally:
                work.flows.abort()  # a no-op once committed
        reply = work.reply
        reply.message_total_operation_time = _us(time.perf_counter() - started)
        log.info("message: %d new ports, %d gone, %d flow lines; %s; total %.3f s", len(work.new_ports),
                 len(work.gone_ports), len(work.flows.lines), ", ".join(f"{k} {v:.3f} s" for k, v in work.seconds.items()),
                 time.perf_counter() - started)
        return reply

    @staticmethod
    def _not_emulated(kind: int, states, work: _Work) -> None:
        """Gateways (Zeta, Arion) are not emulated: each answers FAILURE, never a SUCCESS for work not done."""
        names = []
        for rid, s in states:
            work.status(rid, kind, s.operation_type).operation_status = common.FAILURE
            names.append(rid)
        if names:
            log.warning("%d %s state(s) not emulated, answered FAILURE: %s", len(names), common.ResourceType.Name(kind),
                        ", ".join(names[:5]))

    def _lookup(self, table: dict, rid: str, state, kind: int, work: _Work):
        """VPC and subnet states only feed the lookup tables later ports and neighbours need; returns the copy kept."""
        rid = rid or state.configuration.id
        # a copy: a part of the message would keep the whole message's memory (tens of MB) alive
        kept = type(state.configuration)()
        kept.CopyFrom(state.configuration)
        if state.operation_type == common.DELETE:
            table.pop(rid, None)
        else:
            table[rid] = kept
        work.status(rid, kind, state.operation_type)
        return kept

    def _dhcp_entry(self, rid: str, state: resources_pb2.DHCPState, work: _Work) -> None:
        """As ACA's DHCP state handler: CREATE adds an entry (FAILURE if its MAC has one), UPDATE replaces one (FAILURE
        if there is none), DELETE removes it; INFO adds or replaces (ACA does not read it)."""
        cfg = state.configuration
        rid = cfg.id or rid
        op = state.operation_type
        status = work.status(rid, common.DHCP, op)
        mac = cfg.mac_address.lower().replace("-", ":")
        hostname = cfg.port_host_name if HOSTNAME_RE.fullmatch(cfg.port_host_name) else ""
        if (not MAC_RE.fullmatch(mac) or (cfg.ipv4_address and not _ipv4(cfg.ipv4_address))
                or (op != common.DELETE and not cfg.ipv4_address)):
            status.operation_status = common.INVALID_ARG
            return
        known = mac in self.dhcp
        if op == common.DELETE:
            self.dhcp.pop(mac, None)
        elif op in (common.GET,) or (op == common.CREATE and known) or (op == common.UPDATE and not known):
            status.operation_status = common.FAILURE
        else:
            self.dhcp[mac] = DhcpEntry(cfg.ipv4_address, hostname, cfg.subnet_id)

    def answer_dhcp(self, frame: bytes) -> bytes | None:
        """ACA's DHCP responder: a request from a VM of this host with a DHCP entry gets its lease. Runs on the data
        plane's thread, beside messages being applied: it only reads, one dict lookup at a time."""
        request = dhcp.parse(frame)
        if request is None:
            return None
        entry, port = self.dhcp.get(request.mac), self.port_by_mac.get(request.mac)
        if entry is None or port is None:
            log.info("DHCP %s from %s: no entry or no port here, not answered", request.kind, request.mac)
            return None
        subnet = self.subnets.get(entry.subnet_id)
        cidr = subnet.cidr if subnet is not None else port.ip
        gateway = subnet.gateway.ip_address if subnet is not None and _ipv4(subnet.gateway.ip_address) else ""
        dns = tuple(d.entry for d in subnet.dns_entry_list if _ipv4(d.entry))[:8] if subnet is not None else ()
        server_mac = subnet.gateway.mac_address.lower() if subnet is not None else ""
        vlan = self.vlans.get(port.vni)
        if vlan is None:
            return None
        lease = dhcp.Lease(entry.ip, ipaddress.IPv4Network(cidr, strict=False).prefixlen, gateway, dns, entry.hostname,
                           server_mac if MAC_RE.fullmatch(server_mac) else DHCP_SERVER_MAC, vlan)
        return dhcp.answer(request, lease)

    # -- what the on-demand engine asks, from its own threads (each a copy made in one C call, or one get) -----------
    def vni_of_vlan(self, vlan: int) -> int | None:
        return next((vni for vni, v in list(self.vlans.items()) if v == vlan), None)

    def neighbour_mac(self, vni: int, ip: str) -> str | None:
        return next((n.mac for n in list(self.neighbors.values()) if n.vni == vni and (n.ip == ip or ip in n.more)),
                    None)

    def has_local(self, vni: int, ip: str) -> bool:
        return any(p.vni == vni and p.ip.split("/")[0] == ip for p in list(self.ports.values()))

    def _firewall_changing(self, work: _Work) -> Firewall:
        if work.firewall_before is None:
            work.firewall_before = self.firewall.copy()
        return self.firewall

    def _security_group(self, rid: str, state: resources_pb2.SecurityGroupState, work: _Work) -> None:
        """Beyond ACA (which only logs them): a group's rules, enforced on every port of this host in it."""
        cfg = state.configuration
        rid = cfg.id or rid
        op = state.operation_type
        status = work.status(rid, common.SECURITYGROUP, op)
        if not tokens.IDENTIFIER_RE.fullmatch(rid):
            status.operation_status = common.INVALID_ARG
            return
        if op == common.GET:
            status.operation_status = common.FAILURE
            return
        rules = None
        if op != common.DELETE:
            try:
                rules = read_group(cfg)
            except ValueError as exc:
                log.warning("security group %s: %s", rid, exc)
                status.operation_status = common.INVALID_ARG
                return
        work.filters_changed |= self._firewall_changing(work).set_group(rid, rules)
        work.flow_ops.append(status)

    def _filter(self, port: LocalPort | None, pid: str, vlan: int, groups, work: _Work) -> None:
        """The port's security groups (none: unfiltered, or gone with `port` None)."""
        bound = Bound(port.mac, port.ip.split("/")[0], vlan, tuple(groups)) if port is not None else None
        if bound is None and pid not in self.firewall.ports:
            return
        if bound is not None and self.firewall.ports.get(pid) == bound:
            return
        work.filters_changed |= self._firewall_changing(work).bind(pid, bound)

    def _routers_changing(self, work: _Work) -> Routers:
        if work.routers_before is None:
            work.routers_before = self.routers.copy()
        return self.routers

    def _router(self, rid: str, state: resources_pb2.RouterState, work: _Work) -> None:
        """As ACA's L3 programmer: CREATE, UPDATE and INFO make the router (a FULL one anew, a DELTA one merged
        into what it was), DELETE removes it; its subnets must be INFO subnet states of the same message. Unlike
        ACA's, a removed router's routes go with it (ACA leaves them in table 0)."""
        cfg = state.configuration
        rid = cfg.id or rid
        op = state.operation_type
        status = work.status(rid, common.ROUTER, op)
        try:
            if not tokens.IDENTIFIER_RE.fullmatch(rid) or cfg.revision_number <= 0:
                raise RouterRefused(f"router {rid!r}: no valid id or revision")
            if op == common.DELETE:
                lines = self._routers_changing(work).remove(rid)
                if lines is None:
                    raise RouterRefused(f"router {rid}: not on this host", common.FAILURE)
            elif op in (common.CREATE, common.UPDATE, common.INFO):
                dvr_mac = cfg.host_dvr_mac_address.lower()
                if not MAC_RE.fullmatch(dvr_mac):
                    raise RouterRefused(f"router {rid}: host DVR MAC {cfg.host_dvr_mac_address!r} is not a MAC")
                subnets = {}
                for table in cfg.subnet_routing_tables:
                    found = work.subnets.get(table.subnet_id)
                    if found is None:
                        raise RouterRefused(f"router {rid}: subnet {table.subnet_id} is not an INFO subnet state of "
                                            "the message", common.FAILURE)
                    subnets[found.id] = read_subnet(found)
                old = self.routers.routers.get(rid)
                if old is not None and cfg.update_type == common.DELTA:
                    subnets = {**old.subnets, **subnets}
                lines = self._routers_changing(work).set(rid, subnets, dvr_mac, lambda vni: self._vlan(vni, work))
            else:
                raise RouterRefused(f"router {rid}: operation {common.OperationType.Name(op)} is not router work",
                                    common.FAILURE)
        except (RouterRefused, DataplaneError) as exc:
            log.warning("%s", exc)
            status.operation_status = exc.status if isinstance(exc, RouterRefused) else common.FAILURE
            return
        work.flows.add(lines)
        work.flow_ops.append(status)

    def _vni_of_subnet(self, subnet_id: str) -> int | None:
        subnet = self.subnets.get(subnet_id)
        if subnet is None:
            return None
        if subnet.tunnel_id:
            return int(subnet.tunnel_id)
        vpc = self.vpcs.get(subnet.vpc_id)
        return int(vpc.tunnel_id) if vpc is not None and vpc.tunnel_id else None

    def _vlan(self, vni: int, work: _Work) -> int:
        """The VNI's local VLAN, allocated on first use (the lowest free one)."""
        vlan = self.vlans.get(vni)
        if vlan is None:
            vlan = heapq.heappop(self.free_vlans) if self.free_vlans else len(self.vlans) + 1
            if vlan > VLAN_MAX:
                raise DataplaneError(f"more than {VLAN_MAX} VNIs on one host")
            self.vlans[vni] = vlan
            work.new_vnis.append(vni)
        return vlan

    def _decapsulate(self, vni: int, vlan: int, work: _Work) -> None:
        """Table 4's flow for the VNI, as ACA adds it: with the first port of the VNI on this host."""
        if vni not in self.decap:
            self.decap.add(vni)
            work.new_decap.append(vni)
            work.flows.add([flows.vni_flow(vni, vlan)])

    def _release(self, work: _Work) -> None:
        """As ACA: a VNI's table-4 flow goes when its last port here goes. Its VLAN is free again once nothing here
        uses it (no port, neighbour or router subnet)."""
        gone = {p.vni for _, p in work.gone_ports} & self.decap
        for vni in gone - {p.vni for p in self.ports.values()}:
            self.decap.discard(vni)
            work.dropped_decap.append(vni)
            work.flows.add([flows.vni_delete(vni)])
            used = any(n.vni == vni for n in self.neighbors.values()) or any(
                s.vni == vni for r in self.routers.routers.values() for s in r.subnets.values()) or any(
                n.vni == vni for n in self.routers.routed.values())
            if not used:
                vlan = self.vlans.pop(vni)
                work.freed_vlans.append((vni, vlan))
                heapq.heappush(self.free_vlans, vlan)

    def _port(self, rid: str, state: resources_pb2.PortState, work: _Work) -> None:
        """As ACA: CREATE makes the port (again, if what it says changed), DELETE removes it, UPDATE removes it when
        it no longer names a device (Nova's unbind) and is refused otherwise; INFO and GET are not port work."""
        cfg = state.configuration
        rid = rid or cfg.id
        op = state.operation_type
        status = work.status(rid, common.PORT, op)
        if op in (common.INFO, common.GET):
            status.operation_status = common.FAILURE  # ACA's answer: a port is programmed, never only described
            return
        if op == common.UPDATE:
            if cfg.device_id or cfg.device_owner:
                status.operation_status = common.INVALID_ARG  # ACA changes a port by CREATE, unbinds by UPDATE
                return
            op = common.DELETE
        if op == common.DELETE:
            port = self.ports.get(rid)
            if port is not None:
                self._forget([port])
                work.gone_ports.append((status, port))
                self._filter(None, rid, 0, (), work)
            return
        groups = [g.id for g in cfg.security_group_ids]
        if not all(tokens.IDENTIFIER_RE.fullmatch(g) for g in groups):
            status.operation_status = common.INVALID_ARG
            return
        old = self.ports.get(rid)
        if old is not None:
            self._forget([old])  # its tap and namespace are free for what it becomes
        made = self._local_port(rid, cfg)
        if made is None:
            if old is not None:
                self._remember(old)
            status.operation_status = common.INVALID_ARG
            return
        port, gateway = made
        if old is not None:
            if old == port:
                self._remember(old)
                self._filter(old, rid, self.vlans[old.vni], groups, work)  # its groups may have changed
                return  # the same port again: nothing changes on the data plane
            work.gone_ports.append((status, old))  # changed (MAC, address, VPC): the old VM goes, the new one comes
        try:
            vlan = self._vlan(port.vni, work)
        except DataplaneError as exc:
            log.warning("port %s: %s", rid, exc)
            status.operation_status = common.FAILURE
            return
        self._decapsulate(port.vni, vlan, work)
        self._remember(port)
        work.new_ports.append((status, NewVm(port, vlan, gateway)))
        self._filter(port, rid, vlan, groups, work)

    def _local_port(self, rid: str, cfg: resources_pb2.PortConfiguration) -> tuple[LocalPort, str] | None:
        """The port as this host would make it, or None when the message does not allow it (INVALID_ARG).

        Every word that reaches a command comes from here, checked: the tap and the namespace are named from
        the id (or a plain name), never from anything that could hold a separator."""
        if not tokens.IDENTIFIER_RE.fullmatch(rid):
            return None
        fixed = _first_ipv4(cfg.fixed_ips)
        mac = cfg.mac_address.lower()
        if (cfg.update_type != common.FULL or cfg.revision_number <= 0 or not cfg.admin_state_up or fixed is None
                or not MAC_RE.fullmatch(mac) or int(mac[:2], 16) & 1):
            return None
        subnet = self.subnets.get(fixed.subnet_id)
        vni = self._vni_of_subnet(fixed.subnet_id)
        if subnet is None or vni is None or not 0 < vni < VNI_LIMIT:
            return None
        try:
            prefix = ipaddress.IPv4Network(subnet.cidr, strict=False).prefixlen if subnet.cidr else 32
        except ValueError:
            return None
        gateway = subnet.gateway.ip_address
        if gateway and not _ipv4(gateway):
            return None
        name = cfg.name if NAME_RE.fullmatch(cfg.name or "") else rid[:12]
        port = LocalPort(rid, flows.tap_name(rid), self.vm_prefix + name, vni, mac, f"{fixed.ip_address}/{prefix}")
        if port.tap in self.names or port.netns in self.names:
            log.warning("port %s: its tap %s or namespace %s belongs to another port", rid, port.tap, port.netns)
            return None
        return port, gateway

    def _remember(self, port: LocalPort) -> None:
        self.ports[port.id] = port
        self.port_by_mac[port.mac] = port
        self.names |= {port.tap, port.netns}

    def _forget(self, ports: Iterable[LocalPort]) -> None:
        for port in ports:
            if self.ports.get(port.id) is port:
                del self.ports[port.id]
                if self.port_by_mac.get(port.mac) is port:
                    del self.port_by_mac[port.mac]
                self.names -= {port.tap, port.netns}

    def _neighbors(self, items: Iterable[tuple[str, Reading]], work: _Work) -> None:
        """All of a message's neighbours in one tight loop: at 100,000 per message every attribute access counts."""
        reply_status = work.reply.operation_statuses.add if common.NEIGHBOR in work.reported else None
        flow_ops, known, host_ip, vlans = work.flow_ops, self.neighbors, self.host_ip, self.vlans
        routed = self.routers.routed
        message_vnis = work.subnet_vnis
        before, chunk = work.neighbors_before, self.dp.CHUNK
        lines: list = []
        encap, delete = work.flows.encap, work.flows.delete
        skip_ops, delete_op, neighbor = (common.GET,), common.DELETE, common.NEIGHBOR  # INFO is programmed (ACA)
        silent_flow_ops = 0

        def refuse(status: Status | None, outcome: int) -> None:  # rare: a status when reported, else a count
            if status is None:
                work.silent_failures += 1
            else:
                status.operation_status = outcome
        for rid, r in items:
            rid = rid or r.id
            op = r.op
            status = reply_status(resource_id=rid, resource_type=neighbor, operation_type=op) if reply_status else None
            if op in skip_ops:
                continue
            old = known.pop(rid, None)
            if rid not in before:
                before[rid] = old
            if routed and rid in routed:
                lines += self._routers_changing(work).remove_neighbor(rid)
            if old is not None:
                lines += delete(vlans[old.vni], old.mac, old.ip)
                for extra in old.more:  # rare: its other addresses' ARP answers
                    lines.append(flows.neighbor_delete(vlans[old.vni], old.mac, extra)[1])
                if status is None:
                    silent_flow_ops += 1
                else:
                    flow_ops.append(status)
            if op == delete_op:
                continue
            made = r.neighbor
            own = message_vnis.get(r.subnet_id) if message_vnis else None  # ACA's: its subnet's, in this message
            if made is not None and own is not None and own != made.vni:
                made = None
            if made is None:  # refused, or its VNI is not its fixed IP's: the message's subnet's, else an earlier one's
                vni = (own or r.tunnel_id or self._vni_of_subnet(r.subnet_id)) if r.ok else None
                if not (vni and vni < VNI_LIMIT):
                    refuse(status, common.INVALID_ARG)
                    continue
                made = Neighbor(vni, r.mac, r.ip, r.host_ip, r.more)
            carried = True
            if r.l3:  # its routes first; as ACA, its L2 flows whether a router carries it or not
                try:
                    more, carried = self._routers_changing(work).add_neighbor(
                        rid, Routed(r.subnet_id, made.vni, made.mac, made.ip, made.host_ip == host_ip),
                        lambda v: self._vlan(v, work))
                except DataplaneError as exc:
                    log.warning("neighbour %s: %s", rid, exc)
                    refuse(status, common.FAILURE)
                    continue
                lines += more
                if not carried:  # kept: a router that comes later routes it; failed now, as ACA fails it
                    log.warning("neighbour %s: no router on this host has its subnet %s", rid, r.subnet_id)
                    refuse(status, common.FAILURE)
                elif made.host_ip == host_ip:
                    if status is None:
                        silent_flow_ops += 1
                    else:
                        flow_ops.append(status)
            if made.host_ip == host_ip:
                continue  # a port on this host: br-int switches it locally
            vlan = vlans.get(made.vni)
            if vlan is None:
                try:
                    vlan = self._vlan(made.vni, work)
                except DataplaneError as exc:
                    log.warning("neighbour %s: %s", rid, exc)
                    refuse(status, common.FAILURE)
                    continue
            known[rid] = made
            lines += encap(made.vni, vlan, made.mac, made.ip, made.host_ip)
            for extra in made.more:
                lines.append(flows.neighbor_flows(made.vni, vlan, made.mac, extra, made.host_ip)[1])
            if not carried:
                pass  # already failed
            elif status is None:
                silent_flow_ops += 1
            else:
                flow_ops.append(status)
            if len(lines) >= chunk:
                work.flows.add(lines)
                lines = []
        work.flows.add(lines)
        work.silent_flow_ops += silent_flow_ops
        if work.silent_failures:
            log.warning("%d neighbour(s) refused (not in the reply, as ACA's)", work.silent_failures)

    # -- the data plane, batched -------------------------------------------------------
    def _program(self, work: _Work, started: float) -> None:
        """Gone ports, the flow bundle, new ports; a status says SUCCESS only for what is on the data plane."""
        if work.gone_ports:
            gone = [p for _, p in work.gone_ports]
            if not self._stage(work, "ports gone", [s for s, _ in work.gone_ports], lambda: self.dp.remove_vms(gone)):
                for port in gone:  # still there: a retried DELETE tries again
                    self._remember(port)
        flows_applied = (not work.flows.lines and not work.flows.int_lines
                         or self._stage(work, "flows", work.flow_ops, work.flows.commit))
        if not flows_applied:
            self._undo_tables(work)
            work.silent_failures += work.silent_flow_ops
        if work.new_ports:  # after the flows (see the module's docstring)
            vms = [vm for _, vm in work.new_ports]
            created = [vm.port for vm in vms]
            statuses = [s for s, _ in work.new_ports]
            if not flows_applied:  # their VLAN's decapsulation may be missing: nothing of them is made
                for s in statuses:
                    s.operation_status = common.FAILURE
                self._forget(created)
            elif not self._stage(work, "ports", statuses, lambda: self.dp.make_vms(vms)):
                self._forget(created)
                self._undo_vms(created)  # half-made namespaces would block every retry
        # remote hosts' tunnel endpoints resolved now, not on a VM's first packet (the data plane says how)
        self.dp.prime_tunnels(self.neighbors.values())
        if work.new_ports:
            self._configure_vms(work, started)
        done = _us(time.perf_counter() - started)
        failed = work.silent_failures + sum(1 for s in work.unreported if s.operation_status != common.SUCCESS)
        for s in work.reply.operation_statuses:
            s.state_elapse_time = done
            if s.operation_status:  # SUCCESS is 0
                failed += 1
        self.failures += failed

    def _stage(self, work: _Work, stage: str, statuses: list[Status], action) -> bool:
        """Run one batch; on failure its operations say FAILURE. Either way they carry its time."""
        t0 = time.perf_counter()
        ok = True
        try:
            action()
        except (DataplaneError, subprocess.TimeoutExpired, tokens.UnsafeToken) as exc:
            log.warning("%s: %d operation(s) failed: %s", stage, len(statuses), exc)
            ok = False
            for s in statuses:
                s.operation_status = common.FAILURE
        work.seconds[stage] = time.perf_counter() - t0
        spent = _us(work.seconds[stage])
        for s in statuses:
            s.dataplane_programming_time += spent
        return ok

    def _undo_tables(self, work: _Work) -> None:
        """The bundle was not applied: the agent's tables go back to what the data plane still has."""
        for vni in work.new_vnis:
            vlan = self.vlans.pop(vni, None)
            if vlan is not None:
                heapq.heappush(self.free_vlans, vlan)
        self.decap.difference_update(work.new_decap)
        self.decap.update(work.dropped_decap)
        for vni, vlan in work.freed_vlans:
            self.vlans[vni] = vlan
            self.free_vlans.remove(vlan)
        heapq.heapify(self.free_vlans)
        if work.routers_before is not None:
            self.routers = work.routers_before
        if work.firewall_before is not None:
            self.firewall = work.firewall_before
        for rid, old in work.neighbors_before.items():
            if old is None:
                self.neighbors.pop(rid, None)
            else:
                self.neighbors[rid] = old

    def _undo_vms(self, ports: list[LocalPort]) -> None:
        try:
            self.dp.remove_vms(ports, force=True)
        except DataplaneError as exc:
            log.warning("removing %d VM(s) that failed: %s", len(ports), exc)

    def _configure_vms(self, work: _Work, started: float) -> None:
        """Addresses, link state and default route inside each new VM; a failure fails them and removes them
        (a retry makes them afresh)."""
        ready = [(s, vm) for s, vm in work.new_ports if s.operation_status == common.SUCCESS]
        for _, vm in ready:  # its MAC has a DHCP entry (given after the ports, as ACA reads a message): it boots by DHCP
            vm.dhcp = vm.port.mac in self.dhcp
        t0 = time.perf_counter()
        try:
            self.dp.configure_vms([vm for _, vm in ready])
        except DataplaneError as exc:
            log.warning("configuring %d VM(s) failed: %s", len(ready), exc)
            for s, _ in ready:
                s.operation_status = common.FAILURE
            ports = [vm.port for _, vm in ready]
            self._forget(ports)
            self._undo_vms(ports)
        work.seconds["vms"] = time.perf_counter() - t0
        spent = _us(work.seconds["vms"])
        for s, _ in ready:
            s.network_configuration_time = spent


def _first_ipv4(fixed_ips):
    """The first IPv4 fixed IP; nearly always the first of one, so no generator is made for it."""
    if fixed_ips and _ipv4(fixed_ips[0].ip_address):
        return fixed_ips[0]
    return next((f for f in fixed_ips if _ipv4(f.ip_address)), None)


def _ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)  # strict dotted quad, 20x cheaper than ipaddress
        return True
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return False


def _us(seconds: float) -> int:
    return min(int(seconds * 1e6), 2**32 - 1)
