"""Security groups, enforced: a port's groups become conntrack flows on br-int (flows.py has the pipeline).

ACA only logs security groups; cloudemu enforces them as Neutron's OVS firewall does: a port with groups
drops what no rule of them allows, in both directions, and lets established and related traffic through.
Rules are read from Alcor's SecurityGroupConfiguration: direction, ethertype (IPv4 only: the VMs have no IPv6),
protocol (TCP, UDP, ICMP; HTTP as TCP 80; ARP is never filtered), a port range (for ICMP: type and code; 0 is
any), a remote IP prefix or a remote group (its members known here: this host's ports in it). Pure: the agent
puts the lines in its message's br-int bundle.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import NamedTuple

from emulator.alcor import flows
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import resources_pb2

Direction = resources_pb2.SecurityGroupConfiguration.Direction
ZONE_MAX = 65535
PROTOCOLS = {common.TCP: "tcp", common.UDP: "udp", common.ICMP: "icmp", common.HTTP: "tcp"}


class Rule(NamedTuple):
    egress: bool
    protocol: str  # tcp, udp or icmp
    port_min: int
    port_max: int
    remote_prefix: str  # "" for any
    remote_group: str  # "" for none


def read_group(cfg: resources_pb2.SecurityGroupConfiguration) -> list[Rule]:
    """The rules the data plane can hold; ValueError (INVALID_ARG) for one that names something impossible."""
    out = []
    for r in cfg.security_group_rules:
        if r.operation_type == common.DELETE or r.ethertype != common.IPV4 or r.protocol == common.ARP:
            continue  # a removed rule; IPv6 (no VM has it); ARP (always let through, as Neutron's)
        if r.protocol not in PROTOCOLS:
            raise ValueError(f"rule {r.id}: protocol {r.protocol} is not one Alcor declares")
        if r.direction not in (Direction.EGRESS, Direction.INGRESS):
            raise ValueError(f"rule {r.id}: direction {r.direction} is neither EGRESS nor INGRESS")
        low, high = r.port_range_min, r.port_range_max
        if r.protocol == common.HTTP:
            low, high = 80, 80
        if r.protocol == common.ICMP:
            if low > 255 or high > 255:
                raise ValueError(f"rule {r.id}: ICMP type {low} or code {high} is above 255")
        elif high > 65535 or low > (high or 65535):
            raise ValueError(f"rule {r.id}: port range {low}-{high} is not one")
        prefix = ""
        if r.remote_ip_prefix:
            prefix = str(ipaddress.IPv4Network(r.remote_ip_prefix, strict=False))  # ValueError when it is not one
        if r.remote_group_id and not r.remote_group_id.replace("-", "").isalnum():
            raise ValueError(f"rule {r.id}: remote group {r.remote_group_id!r} is not an id")
        out.append(Rule(r.direction == Direction.EGRESS, PROTOCOLS[r.protocol], low, high, prefix, r.remote_group_id))
    return out


def port_masks(low: int, high: int) -> list[str]:
    """A port range as value/mask matches (OVS matches no ranges): 80-81 is 0x50/0xfffe. 0-0 is any."""
    if low == 0 and high in (0, 65535):
        return [""]
    high = high or low
    out = []
    while low <= high:
        size = (low & -low) or 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append(f"{low:#x}/{0xffff & ~(size - 1):#x}")
        low += size
    return out


def rule_matches(rule: Rule, remotes: list[str]) -> list[str]:
    """The matches of one rule: protocol, each remote address, each port block."""
    address = "nw_dst" if rule.egress else "nw_src"
    base = rule.protocol
    if rule.protocol == "icmp":
        ports = [",".join(f"{k}={v}" for k, v in (("icmp_type", rule.port_min), ("icmp_code", rule.port_max)) if v)]
    else:
        ports = [f"tp_dst={m}" if m else "" for m in port_masks(rule.port_min, rule.port_max)]
    return [",".join(p for p in (base, f"{address}={r}" if r else "", port) if p) for r in remotes for port in ports]


class Bound(NamedTuple):
    mac: str
    ip: str
    vlan: int
    groups: tuple[str, ...]


@dataclass
class Firewall:
    """The groups this host knows, its ports bound to them, and the flows each port has."""

    groups: dict[str, list[Rule]] = field(default_factory=dict)
    ports: dict[str, Bound] = field(default_factory=dict)  # filtered ports (at least one group)
    zones: dict[str, int] = field(default_factory=dict)
    installed: dict[str, dict[str, str]] = field(default_factory=dict)  # port id -> its flows, delete line -> add

    def copy(self) -> Firewall:
        return Firewall(dict(self.groups), dict(self.ports), dict(self.zones), dict(self.installed))

    def set_group(self, gid: str, rules: list[Rule] | None) -> set[str]:
        """The group's rules (None: the group is gone); the ports whose flows change."""
        if rules is None:
            self.groups.pop(gid, None)
        else:
            self.groups[gid] = rules
        return {pid for pid, b in self.ports.items() if gid in b.groups} | self._remote_users({gid})

    def bind(self, pid: str, bound: Bound | None) -> set[str]:
        """The port's groups (None or none: it is not filtered); the ports whose flows change."""
        old = self.ports.pop(pid, None)
        if bound is not None and bound.groups:
            self.ports[pid] = bound
        touched = set(old.groups if old else ()) | set(bound.groups if bound else ())
        return {pid} | self._remote_users(touched)

    def flush(self, pids: set[str]) -> list[str]:
        """Each port's flows brought to what its groups say: the flows it no longer has removed, then the new ones
        added (those it keeps stay, with their counters). A removed rule stops new connections; those it let in
        live on in conntrack until they end, as a tracked connection does in AWS's security groups."""
        deletes, adds = [], []
        for pid in sorted(pids):
            old = self.installed.pop(pid, {})
            bound = self.ports.get(pid)
            if bound is None:
                self.zones.pop(pid, None)
                deletes += old
                continue
            zone = self._zone(pid)
            made = flows.filter_port_flows(bound.mac, bound.vlan, zone)
            for gid in bound.groups:
                for rule in self.groups.get(gid, ()):  # an unknown group allows nothing (yet)
                    remotes = self._remotes(rule)
                    if remotes:
                        made += [flows.allow_flow(zone, rule.egress, m) for m in rule_matches(rule, remotes)]
            new = {delete: add for add, delete in made}  # keyed by match: a rule given twice makes its flow once
            deletes += [d for d in old if d not in new]
            adds += [a for d, a in new.items() if old.get(d) != a]
            self.installed[pid] = new
        return deletes + adds

    def _remotes(self, rule: Rule) -> list[str]:
        if rule.remote_group:
            return sorted({b.ip for b in self.ports.values() if rule.remote_group in b.groups})
        return [rule.remote_prefix]

    def _remote_users(self, gids: set[str]) -> set[str]:
        """Ports with a rule naming one of these groups as its remote: their flows follow its members."""
        users = {g for g, rules in self.groups.items() if any(r.remote_group in gids for r in rules)}
        return {pid for pid, b in self.ports.items() if users & set(b.groups)}

    def _zone(self, pid: str) -> int:
        """The port's conntrack zone: the lowest free one (a removed port's zone is taken again)."""
        zone = self.zones.get(pid)
        if zone is None:
            if len(self.zones) >= ZONE_MAX:
                raise ValueError(f"more than {ZONE_MAX} filtered ports on one host")
            used = set(self.zones.values())
            zone = len(self.zones) + 1 if len(self.zones) + 1 not in used else min(set(range(1, len(used) + 2)) - used)
            self.zones[pid] = zone
        return zone
