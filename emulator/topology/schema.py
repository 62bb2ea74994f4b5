"""Checks of field values: one place that knows what each field may hold."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from emulator.engines import ENGINES
from emulator.kinds import KINDS
from emulator.model import CONTAINER_KEYS, TopologyError, Where, check_name

TIME_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s)?\s*")
MAC_RE = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")
CONTROLLER_RE = re.compile(r"(tcp|ssl|ptcp|pssl|unix):[^\s]+")

TOP_KEYS = {"version", "name", "defaults", "nodes", "links", "topology", "checks", "vpcs", "security_groups"}
SG_RULE_KEYS = {"direction", "protocol", "ports", "remote", "remote_group"}
VPC_KEYS = {"vni", "cidr", "subnets", "router", "dns"}
DEFAULTS_KEYS = {"link", "subnet", "provisioner", "image"}
CAP_RE = re.compile(r"[A-Z_]{2,32}")
IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?")
LINK_PARAM_KEYS = {"bw", "delay", "jitter", "loss", "mtu"}
LINK_KEYS = {"endpoints"} | LINK_PARAM_KEYS
#: Placement keys every node kind accepts: pin to a machine, and what the node needs of it.
PLACEMENT_KEYS = {"machine", "cpu", "memory"}
HOST_KEYS = {"kind", "ip", "mac"} | PLACEMENT_KEYS | CONTAINER_KEYS
NODE_KEYS: dict[str, set[str]] = {
    "host": HOST_KEYS,
    "switch": {"kind", "datapath", "controller", "fail_mode", "stp"} | PLACEMENT_KEYS,
    "bridge": {"kind", "stp"} | PLACEMENT_KEYS,
    "vm": {"kind", "on", "vpc", "subnet", "ip", "mac", "security_groups"},
}


def node_keys() -> dict[str, set[str]]:
    """Every kind a topology file may name, with its keys: the fabric's own and those of emulator/kinds.py."""
    return {**NODE_KEYS, **{name: HOST_KEYS | kind.keys for name, kind in KINDS.items() if kind.declared}}


HEALTH_KINDS = ("tcp", "http", "command")
HEALTH_KEYS = {*HEALTH_KINDS, "port", "timeout", "interval"}
CHECK_KEYS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required, optional)
    "ping": ({"from", "to"}, {"count"}),
    "exec": ({"node", "cmd"}, {"expect_rc", "expect_output"}),
    "iperf": ({"client", "server"}, {"seconds", "min_mbps", "max_mbps"}),
}


def fail(message: str, where: Where, field: str) -> TopologyError:
    return TopologyError(message, where=where, field=field)


def require_mapping(value: Any, where: Where, field: str, what: str = "a mapping") -> dict:
    if not isinstance(value, dict):
        raise fail(f"expected {what}, got {type(value).__name__}", where, field)
    return value


def unknown_keys(mapping: dict, allowed: set[str], where_of, field: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise fail(
                f"unknown key {key!r}; expected one of: {', '.join(sorted(allowed))}",
                where_of(key),
                f"{field}.{key}" if field else str(key),
            )


def number(value: Any, where: Where, field: str, *, minimum: float = 0, maximum: float | None = None,
           integer: bool = False, strict_min: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"expected a number, got {value!r}", where, field)
    if integer and not float(value).is_integer():
        raise fail(f"expected a whole number, got {value!r}", where, field)
    if value < minimum or (strict_min and value == minimum):
        rel = "greater than" if strict_min else "at least"
        raise fail(f"must be {rel} {minimum:g}, got {value!r}", where, field)
    if maximum is not None and value > maximum:
        raise fail(f"must be at most {maximum:g}, got {value!r}", where, field)
    return int(value) if integer else value


def duration(value: Any, where: Where, field: str) -> str:
    """A time such as 5ms, 100us or 0.5s (a bare number means milliseconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number(value, where, field)
        return f"{value:g}ms"
    m = TIME_RE.fullmatch(str(value)) if isinstance(value, str) else None
    if not m:
        raise fail(f"expected a duration such as 5ms, 100us or 0.5s, got {value!r}", where, field)
    return f"{m.group(1)}{m.group(2) or 'ms'}"


def link_params(raw: dict, where_of, field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in LINK_PARAM_KEYS & raw.keys():
        value, where = raw[key], where_of(key)
        f = f"{field}.{key}"
        if key == "bw":
            out[key] = number(value, where, f, minimum=0, strict_min=True, maximum=100_000)
        elif key in ("delay", "jitter"):
            out[key] = duration(value, where, f)
        elif key == "loss":
            out[key] = number(value, where, f, maximum=100)
        elif key == "mtu":
            out[key] = number(value, where, f, minimum=68, maximum=65535, integer=True)
    return out


def ip_interface(value: Any, where: Where, field: str) -> str:
    if not isinstance(value, str):
        raise fail(f"expected an address with prefix such as 10.0.0.1/24, got {value!r}", where, field)
    try:
        iface = ipaddress.ip_interface(value if "/" in value else value + "/8")
    except ValueError:
        raise fail(f"not an IP address: {value!r}", where, field) from None
    if iface.version != 4:
        raise fail("only IPv4 addresses are supported for now", where, field)
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and iface.network.prefixlen < 31:
        raise fail(f"{value} is the network or broadcast address of its subnet", where, field)
    return str(iface)


def ip_network(value: Any, where: Where, field: str) -> str:
    try:
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise fail(f"not a subnet: {exc}", where, field) from None
    if net.version != 4 or net.prefixlen > 30:
        raise fail(f"expected an IPv4 subnet of /30 or larger, got {value}", where, field)
    return str(net)


def mac(value: Any, where: Where, field: str) -> str:
    if not isinstance(value, str) or not MAC_RE.fullmatch(value):
        raise fail(f"expected a MAC address such as 02:00:00:00:00:01, got {value!r}", where, field)
    if int(value[:2], 16) & 1:
        raise fail(f"{value} is a multicast MAC address", where, field)
    return value.lower()


PORT_RE = re.compile(r"(?:([0-9.]{7,15}):)?(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp))?")
#: Where a published port listens unless the file says otherwise: this machine only (Docker's default, 0.0.0.0,
#: would make a service bound to a node's localhost reachable from the machine's network).
PUBLISH_HOST = "127.0.0.1"


def ports(value: Any, where: Where, f: str) -> list[list[Any]]:
    """["8080:80", 9000, "0.0.0.0:5000:5000/tcp"] -> [[machine port, node port, machine address], ...] (TCP)."""
    if not isinstance(value, list) or not value:
        raise fail("expected a list of [ADDRESS:]MACHINE_PORT:NODE_PORT such as [\"8080:80\"]", where, f)
    out, seen = [], set()
    for item in value:
        m = PORT_RE.fullmatch(str(item)) if isinstance(item, (str, int)) else None
        if not m:
            raise fail(f"expected [ADDRESS:]MACHINE_PORT:NODE_PORT (TCP), got {item!r}", where, f)
        host, outer, inner = m.group(1) or PUBLISH_HOST, int(m.group(2) or m.group(3)), int(m.group(3))
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise fail(f"expected an IPv4 address to listen on, got {host!r} in {item!r}", where, f) from None
        if not (1 <= outer <= 65535 and 1 <= inner <= 65535):
            raise fail(f"port numbers run from 1 to 65535, got {item!r}", where, f)
        if outer in seen:
            raise fail(f"machine port {outer} is published twice", where, f)
        seen.add(outer)
        out.append([outer, inner, host])
    return out


def container_option(key: str, value: Any, where: Where, f: str) -> Any:
    """provisioner, image, env, command, volumes, caps, ports: checked here, used by the engines."""
    if key == "provisioner":
        if value not in ENGINES:
            raise fail(f"expected one of: {', '.join(ENGINES)}, got {value!r}", where, f)
        return value
    if key == "image":
        if not isinstance(value, str) or not IMAGE_RE.fullmatch(value):
            raise fail(f"expected an image name such as cloudemu/node:1, got {value!r}", where, f)
        return value
    if key == "env":
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise fail("expected a mapping of variable name to value", where, f)
        return {k: str(v) for k, v in value.items()}
    if key == "command":
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(a, (str, int, float)) for a in value):
            return [str(a) for a in value]
        raise fail("expected a command: a string (run by /bin/sh -c) or a list of arguments", where, f)
    if key == "volumes":
        if not isinstance(value, list) or not all(isinstance(v, str) and ":" in v and v.startswith("/") for v in value):
            raise fail("expected a list of HOST_PATH:CONTAINER_PATH[:ro]", where, f)
        return list(value)
    if key == "ports":
        return ports(value, where, f)
    if key == "caps":
        if not isinstance(value, list) or not all(isinstance(c, str) and CAP_RE.fullmatch(c) for c in value):
            raise fail("expected a list of capabilities such as [NET_ADMIN, SYS_ADMIN]", where, f)
        return list(value)
    raise fail(f"unknown container option {key!r}", where, f)


def node_options(kind: str, raw: dict, where_of, field: str) -> dict[str, Any]:
    """Kind-specific options, checked; `ip` and `mac` included for hosts."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        f, where = f"{field}.{key}", where_of(key)
        if key == "kind":
            continue
        if key == "ip" and kind == "vm" and value == "dhcp":
            out["dhcp"] = True  # its address, given by the compiler, reaches it by DHCP from its compute node
        elif key == "ip":
            out[key] = ip_interface(value, where, f)
        elif key == "mac":
            out[key] = mac(value, where, f)
        elif key == "datapath":
            if value not in ("user", "kernel", "auto"):
                raise fail(f"expected user, kernel or auto, got {value!r}", where, f)
            out[key] = value
        elif key == "controller":
            if not isinstance(value, str) or not CONTROLLER_RE.fullmatch(value):
                raise fail(f"expected a controller target such as tcp:127.0.0.1:6653, got {value!r}", where, f)
            out[key] = value
        elif key == "fail_mode":
            if value not in ("standalone", "secure"):
                raise fail(f"expected standalone or secure, got {value!r}", where, f)
            out[key] = value
        elif key == "machine":
            if not isinstance(value, str) or not value:
                raise fail(f"expected a machine name from the cluster file, got {value!r}", where, f)
            out[key] = value
        elif key == "cpu":
            out[key] = number(value, where, f, minimum=0, strict_min=True, maximum=4096)
        elif key == "memory":
            out[key] = number(value, where, f, minimum=1, integer=True)
        elif key in CONTAINER_KEYS:
            out[key] = container_option(key, value, where, f)
        elif key == "agent":
            if value not in ("builtin", "external", "hollow"):
                raise fail("expected builtin (cloudemu's agent), external (your ACA image) or hollow (the agent's "
                           f"control plane alone, many to a process), got {value!r}", where, f)
            out[key] = value
        elif key == "on_demand":
            if not isinstance(value, bool):
                raise fail(f"expected true (neighbours learned on a VM's first packet, from cloudemu's controller) or "
                           f"false, got {value!r}", where, f)
            out[key] = value
        elif key == "agent_listen":
            if value not in ("any", "underlay"):
                raise fail(f"expected any (0.0.0.0, as ACA listens) or underlay (the node's own address), got {value!r}",
                           where, f)
            out[key] = value
        elif key == "depends_on":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise fail("expected a list of service names", where, f)
            out[key] = list(value)
        elif key == "healthcheck":
            out[key] = healthcheck(value, where, f)
        elif key in ("on", "vpc", "subnet"):
            if not isinstance(value, str) or not value:
                what = {"on": "compute node", "vpc": "VPC", "subnet": "subnet (of the VM's VPC)"}[key]
                raise fail(f"expected a {what} name, got {value!r}", where, f)
            out[key] = value
        elif key == "security_groups":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise fail("expected a list of security group names (from the file's security_groups)", where, f)
            out[key] = tuple(dict.fromkeys(value))
        elif key == "stp":
            if value not in (True, False, "auto"):
                raise fail(f"expected true, false or auto, got {value!r}", where, f)
            out[key] = value
        else:  # a key of a kind from emulator/kinds.py: a plain value, its handler reads it
            if not isinstance(value, (str, int, float, bool)) or (isinstance(value, str) and len(value) > 4096):
                raise fail(f"expected a number, a string or true/false, got {type(value).__name__}", where, f)
            out[key] = value
    return out


def vpc(raw: Any, where_of, field: str) -> dict[str, Any]:
    """vni (1..16777215), cidr (the one subnet; with `subnets`, the VPC's range), subnets (name: cidr, apart from
    each other and inside cidr) and router (true: one router connects the subnets), all optional."""
    raw = require_mapping(raw if raw is not None else {}, where_of(None), field)
    unknown_keys(raw, VPC_KEYS, where_of, field)
    out: dict[str, Any] = {}
    if "vni" in raw:
        out["vni"] = number(raw["vni"], where_of("vni"), f"{field}.vni", minimum=1, maximum=(1 << 24) - 1, integer=True)
    if "cidr" in raw:
        out["cidr"] = ip_network(raw["cidr"], where_of("cidr"), f"{field}.cidr")
    if "subnets" in raw:
        subnets = require_mapping(raw["subnets"], where_of("subnets"), f"{field}.subnets", "a mapping of subnet name to cidr")
        out["subnets"] = {}
        for name, cidr in subnets.items():
            f = f"{field}.subnets.{name}"
            check_name(str(name), "subnet", where_of("subnets"))
            net = ipaddress.ip_network(ip_network(cidr, where_of("subnets"), f))
            if "cidr" in out and not net.subnet_of(ipaddress.ip_network(out["cidr"])):
                raise fail(f"subnet {net} is outside the VPC's cidr {out['cidr']}", where_of("subnets"), f)
            clash = next((n for n, c in out["subnets"].items() if net.overlaps(ipaddress.ip_network(c))), None)
            if clash:
                raise fail(f"subnet {net} overlaps subnet {clash} ({out['subnets'][clash]})", where_of("subnets"), f)
            out["subnets"][str(name)] = str(net)
        if not out["subnets"]:
            raise fail("expected at least one subnet (name: cidr)", where_of("subnets"), f"{field}.subnets")
    if "dns" in raw:
        servers = raw["dns"] if isinstance(raw["dns"], list) else [raw["dns"]]
        try:
            out["dns"] = [str(ipaddress.IPv4Address(str(s))) for s in servers]
        except ValueError:
            raise fail(f"expected IPv4 DNS server addresses (dns: [10.1.0.53]), got {raw['dns']!r}", where_of("dns"),
                       f"{field}.dns") from None
    if "router" in raw:
        if not isinstance(raw["router"], bool):
            raise fail(f"expected true (a router connects the VPC's subnets) or false, got {raw['router']!r}",
                       where_of("router"), f"{field}.router")
        out["router"] = raw["router"]
    return out


def security_group(raw: Any, where_of, field: str) -> list[dict[str, Any]]:
    """A list of rules: direction (ingress or egress), protocol (tcp, udp, icmp or any; default any), ports (N or
    "N-M", tcp and udp), remote (a CIDR) or remote_group (a group's name). A group with no egress rule lets every
    egress through, as a new Neutron group does."""
    if not isinstance(raw, list):
        raise fail(f"expected a list of rules, got {type(raw).__name__}", where_of(), field)
    rules = [security_group_rule(r, lambda k, i=i: where_of(i) if k is None else where_of(i, k), f"{field}[{i}]")
             for i, r in enumerate(raw)]
    if not any(r["direction"] == "egress" for r in rules):
        rules.append({"direction": "egress", "protocol": "any", "ports": (0, 0), "remote": "", "remote_group": ""})
    return rules


def security_group_rule(raw: Any, where_of, field: str) -> dict[str, Any]:
    raw = require_mapping(raw, where_of(None), field, "a rule ({direction: ingress, protocol: tcp, ports: 80})")
    unknown_keys(raw, SG_RULE_KEYS, where_of, field)
    if raw.get("direction") not in ("ingress", "egress"):
        raise fail(f"expected direction ingress or egress, got {raw.get('direction')!r}", where_of("direction"),
                   f"{field}.direction")
    protocol = raw.get("protocol", "any")
    if protocol not in ("tcp", "udp", "icmp", "any"):
        raise fail(f"expected protocol tcp, udp, icmp or any, got {protocol!r}", where_of("protocol"), f"{field}.protocol")
    ports = (0, 0)
    if "ports" in raw:
        if protocol not in ("tcp", "udp"):
            raise fail(f"ports apply to tcp and udp, not {protocol}", where_of("ports"), f"{field}.ports")
        text = str(raw["ports"])
        low, _, high = text.partition("-")
        if not (low.isdigit() and (high or low).isdigit()) or not 1 <= int(low) <= int(high or low) <= 65535:
            raise fail(f"expected a port (80) or a range (8000-8080) within 1-65535, got {raw['ports']!r}",
                       where_of("ports"), f"{field}.ports")
        ports = (int(low), int(high or low))
    remote = ""
    if "remote" in raw:
        try:
            net = ipaddress.ip_network(str(raw["remote"]), strict=True)
        except ValueError as exc:
            raise fail(f"expected a remote CIDR such as 10.1.1.0/24: {exc}", where_of("remote"), f"{field}.remote") from None
        if net.version != 4:
            raise fail("expected an IPv4 CIDR (the VMs have no IPv6)", where_of("remote"), f"{field}.remote")
        remote = str(net)
    group = raw.get("remote_group", "")
    if "remote_group" in raw and (not isinstance(group, str) or not group):
        raise fail(f"expected a security group name, got {group!r}", where_of("remote_group"), f"{field}.remote_group")
    if remote and group:
        raise fail("a rule names a remote CIDR or a remote group, not both", where_of("remote_group"),
                   f"{field}.remote_group")
    return {"direction": raw["direction"], "protocol": protocol, "ports": ports, "remote": remote, "remote_group": group}


def healthcheck(value: Any, where: Where, f: str) -> dict[str, Any]:
    """{tcp: PORT} | {http: PATH, port: PORT} | {command: CMD}, with timeout (s, default 60) and interval (s)."""
    if not isinstance(value, dict) or sum(k in value for k in HEALTH_KINDS) != 1:
        raise fail("expected one of {tcp: PORT}, {http: /PATH, port: PORT} or {command: CMD}", where, f)
    unknown = set(value) - HEALTH_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r}; expected one of: {', '.join(sorted(HEALTH_KEYS))}", where, f)
    out: dict[str, Any] = {"timeout": number(value.get("timeout", 60), where, f"{f}.timeout", minimum=0.1, maximum=3600),
                           "interval": number(value.get("interval", 0.5), where, f"{f}.interval", minimum=0.05, maximum=60)}
    if "tcp" in value:
        out["tcp"] = int(number(value["tcp"], where, f"{f}.tcp", minimum=1, maximum=65535, integer=True))
    elif "http" in value:
        path = value["http"]
        if not isinstance(path, str) or not path.startswith("/"):
            raise fail(f"expected an HTTP path such as /health, got {path!r}", where, f"{f}.http")
        if "port" not in value:
            raise fail("an http check needs the port to ask on (port: 8080)", where, f"{f}.port")
        out["http"] = path
        out["port"] = int(number(value["port"], where, f"{f}.port", minimum=1, maximum=65535, integer=True))
    else:
        cmd = value["command"]
        if not (isinstance(cmd, str) and cmd.strip()) and not (isinstance(cmd, list) and cmd):
            raise fail("expected a command: a string (run by /bin/sh -c) or a list of arguments", where, f"{f}.command")
        out["command"] = cmd if isinstance(cmd, str) else [str(a) for a in cmd]
    return out
