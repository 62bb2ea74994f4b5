"""A host's routers as ACA's L3 programmer keeps them (DVR): what each connects, and the flows that follow.

A router state names subnets (its subnet routing tables); each subnet's VNI, CIDR and gateway come from the
same message's subnet states (INFO), as ACA reads them. A router gives each of its subnets a gateway (ARP and
ping answered on br-tun, routed frames restored to the gateway's MAC) and, for every L3 neighbour in one of
its subnets, a route from each of its other subnets. Pure: flow text in, flow text out, so the agent puts a
router's flows in the message's one bundle and the unit tests read them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from emulator.alcor import flows
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import resources_pb2

VNI_LIMIT = 1 << 24


class RouterSubnet(NamedTuple):
    id: str
    vni: int
    cidr: str
    gateway_ip: str
    gateway_mac: str


class Routed(NamedTuple):
    """An L3 neighbour: a VM that routers carry traffic to."""

    subnet_id: str
    vni: int
    mac: str
    ip: str
    local: bool  # on this host


@dataclass
class Router:
    id: str
    subnets: dict[str, RouterSubnet]
    gateway_deletes: list[str] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)  # neighbour id -> its routes' deletes


class RouterRefused(ValueError):
    """A router state that cannot be programmed; `status` is what ACA answers for it."""

    def __init__(self, why: str, status: int = common.INVALID_ARG):
        super().__init__(why)
        self.status = status


def read_subnet(cfg: resources_pb2.SubnetConfiguration) -> RouterSubnet:
    """A router's subnet as ACA checks it: a CIDR with its prefix, a VXLAN VNI, an IPv4 gateway with a MAC."""
    if "/" not in cfg.cidr:
        raise RouterRefused(f"subnet {cfg.id}: cidr {cfg.cidr!r} has no prefix length")
    try:
        cidr = str(ipaddress.IPv4Network(cfg.cidr, strict=False))
        ipaddress.IPv4Address(cfg.gateway.ip_address)
    except ValueError as exc:
        raise RouterRefused(f"subnet {cfg.id}: {exc}") from None
    if not 0 < cfg.tunnel_id < VNI_LIMIT:
        raise RouterRefused(f"subnet {cfg.id}: tunnel id {cfg.tunnel_id} is not a VXLAN VNI")
    mac = cfg.gateway.mac_address.lower()
    if not flows.MAC_RE.fullmatch(mac):
        raise RouterRefused(f"subnet {cfg.id}: gateway MAC {cfg.gateway.mac_address!r} is not a MAC")
    return RouterSubnet(cfg.id, int(cfg.tunnel_id), cidr, cfg.gateway.ip_address, mac)


class Routers:
    """The routers of one host, its L3 neighbours, and its DVR MAC (one per host: ACA refuses a second)."""

    def __init__(self) -> None:
        self.routers: dict[str, Router] = {}
        self.routed: dict[str, Routed] = {}  # L3 neighbour id ->
        self.dvr_mac: str | None = None

    def copy(self) -> Routers:
        """What to go back to when a message's flows are not applied."""
        out = Routers()
        out.routers = {rid: Router(r.id, r.subnets, r.gateway_deletes, dict(r.routes)) for rid, r in self.routers.items()}
        out.routed = dict(self.routed)
        out.dvr_mac = self.dvr_mac
        return out

    def set(self, rid: str, subnets: dict[str, RouterSubnet], dvr_mac: str, vlan_of: Callable[[int], int]) -> list[str]:
        """The router made (again) with these subnets: the lines that remove what it had, then its new flows, with
        routes for the L3 neighbours already known in its subnets."""
        if self.dvr_mac is not None and dvr_mac != self.dvr_mac:
            raise RouterRefused(f"host DVR MAC {dvr_mac} differs from the one this host has, {self.dvr_mac}")
        vlans = {s.vni: vlan_of(s.vni) for s in subnets.values()}  # first: it may refuse (too many VLANs)
        lines = self.remove(rid) or []
        self.dvr_mac = dvr_mac
        router = self.routers[rid] = Router(rid, subnets)
        for s in subnets.values():
            for add, delete in flows.gateway_flows(s.vni, vlans[s.vni], s.cidr, s.gateway_ip, s.gateway_mac):
                lines.append(add)
                router.gateway_deletes.append(delete)
        for nid, n in self.routed.items():
            if n.subnet_id in subnets and self.router_of(n.subnet_id) is router:
                lines += self._routes(router, nid, n, vlan_of)
        return lines

    def remove(self, rid: str) -> list[str] | None:
        """The lines that take the router's flows away (routes included), or None when there is no such router."""
        router = self.routers.pop(rid, None)
        if router is None:
            return None
        return router.gateway_deletes + [d for deletes in router.routes.values() for d in deletes]

    def router_of(self, subnet_id: str) -> Router | None:
        """The router a subnet's gateway belongs to (the first found, as ACA looks: a gateway has one router)."""
        return next((r for r in self.routers.values() if subnet_id in r.subnets), None)

    def add_neighbor(self, nid: str, n: Routed, vlan_of: Callable[[int], int]) -> tuple[list[str], bool]:
        """An L3 neighbour's routes, and whether a router carries it (ACA fails one no router has; it is kept, so
        a router that comes later routes it)."""
        lines = self.remove_neighbor(nid)
        self.routed[nid] = n
        router = self.router_of(n.subnet_id)
        if router is None:
            return lines, False
        return lines + self._routes(router, nid, n, vlan_of), True

    def remove_neighbor(self, nid: str) -> list[str]:
        n = self.routed.pop(nid, None)
        if n is None:
            return []
        router = self.router_of(n.subnet_id)
        return (router.routes.pop(nid, None) or []) if router is not None else []

    def _routes(self, router: Router, nid: str, n: Routed, vlan_of: Callable[[int], int]) -> list[str]:
        own = router.subnets[n.subnet_id]
        vlan = vlan_of(n.vni)
        dvr = None if n.local else self.dvr_mac
        adds, deletes = [], []
        for s in router.subnets.values():
            if s.id == n.subnet_id:
                continue
            add, delete = flows.route_flow(vlan_of(s.vni), s.gateway_mac, vlan, n.mac, n.ip, dvr_mac=dvr,
                                           gateway_mac=own.gateway_mac)
            adds.append(add)
            deletes.append(delete)
        router.routes[nid] = deletes
        return adds
