"""Deterministic IPv4 addresses and MACs, and the check against the host's routes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from emulator.model import Topology, TopologyError

Reserved = tuple[ipaddress.IPv4Network, str]  # a network the machine uses, and what it is


def assign_host_addresses(topo: Topology) -> dict[str, str]:
    """Each host's primary address: its own `ip`, or the next free one in the subnet."""
    subnet = ipaddress.ip_network(topo.subnet)
    taken: dict[ipaddress.IPv4Address, str] = {}
    out: dict[str, str] = {}
    for node in topo.hosts():
        if node.ip:
            ip = ipaddress.ip_interface(node.ip).ip
            if ip in taken:
                raise TopologyError(f"address clash: {ip} is also {taken[ip]}'s address", where=node.where,
                                    field=f"nodes.{node.name}.ip")
            taken[ip] = node.name
            out[node.name] = node.ip
    free = _free_addresses(subnet, taken)
    for node in topo.hosts():
        if node.name in out:
            continue
        ip = next(free, None)
        if ip is None:
            raise TopologyError(f"subnet {subnet} has no free address left for {node.name}", where=topo.subnet_where,
                                field="defaults.subnet")
        taken[ip] = node.name
        out[node.name] = f"{ip}/{subnet.prefixlen}"
    return out


def _free_addresses(subnet: ipaddress.IPv4Network, taken: dict) -> Iterator[ipaddress.IPv4Address]:
    for ip in subnet.hosts():
        if ip not in taken:
            yield ip


def host_mac(host_index: int, iface_index: int) -> str:
    """Locally administered, unicast, unique per (host, interface) within an experiment."""
    h = f"{host_index & 0xFFFFFF:06x}"
    return f"02:ce:{h[:2]}:{h[2:4]}:{h[4:]}:{iface_index & 0xFF:02x}"


def check_reserved(topo: Topology, addresses: dict[str, str], reserved: Iterable[Reserved], *,
                   subnet_only: bool = False) -> None:
    """Refuse an address plan that overlaps a route of the machine (its LAN, Docker's bridge...).

    `subnet_only`: every host is addressed from the subnet, so checking the subnet is enough.
    """
    reserved = [(net, what) for net, what in reserved if net.prefixlen > 0]
    if not reserved:
        return
    subnet = ipaddress.ip_network(topo.subnet)
    for net, what in reserved:
        if subnet.overlaps(net) and (subnet_only or any(n.ip is None for n in topo.hosts())):
            raise TopologyError(
                f"the address plan {subnet} overlaps the machine's route {net} ({what}); "
                "pick another defaults.subnet, e.g. 10.0.0.0/8 or 100.64.0.0/10",
                where=topo.subnet_where, field="defaults.subnet")
    if subnet_only:
        return
    for node in topo.hosts():
        net_of_host = ipaddress.ip_interface(addresses[node.name]).network
        for net, what in reserved:
            if net_of_host.overlaps(net):
                raise TopologyError(
                    f"address {addresses[node.name]} overlaps the machine's route {net} ({what}); pick an address "
                    "outside the machine's own networks",
                    where=node.where, field=f"nodes.{node.name}.ip")
