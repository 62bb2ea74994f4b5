"""Cluster inventory file (version 1) to Cluster: as strict and line-numbered as the topology file.

    version: 1
    name: lab
    defaults: {user: root, key: ~/.ssh/id_ed25519, provisioner: netns, max_nodes: 2000}
    machines:
      w1: {address: 10.10.0.1, underlay: eth1, tunnel_ip: 10.10.0.1, cpu: 16, memory: 65536}
      w2: {address: w2.lab.example, tunnel_ip: 10.10.0.2}
    lxd: {endpoint: https://10.10.0.1:8443, cert: client.crt, key: client.key, server_cert: cluster.crt}

`lxd:` says the machines are the members of an LXD cluster (member name = machine name): `provisioner: lxd` nodes are
created through its API on the member the placement chose. `socket:` (a member's unix socket) may replace the
endpoint and certificates. Relative paths are taken from the inventory's directory.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from emulator.engines import ENGINES
from emulator.model import Cluster, LxdCluster, Machine, TopologyError, check_name
from emulator.topology import schema
from emulator.topology.yamlsource import Located, load_yaml, read_yaml_file

TOP_KEYS = {"version", "name", "defaults", "machines", "known_hosts", "lxd"}
LXD_KEYS = {"endpoint", "cert", "key", "server_cert", "socket"}
ENDPOINT_RE = re.compile(r"https://[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}")
MACHINE_KEYS = {"address", "user", "key", "port", "provisioner", "cpu", "memory", "max_nodes", "underlay", "tunnel_ip",
                "mtu", "python"}
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
IFACE_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def load_cluster(path: str | Path) -> Cluster:
    return cluster_from(read_yaml_file(path))


def load_cluster_text(text: str, file: str | None = None) -> Cluster:
    return cluster_from(load_yaml(text, file))


def cluster_from(doc: Located) -> Cluster:
    data, w = doc.data, doc.where
    schema.require_mapping(data, w(), "", "a mapping at the top (version, name, machines)")
    schema.unknown_keys(data, TOP_KEYS, lambda k: w(k), "")
    if data.get("version") != 1:
        raise schema.fail("expected 'version: 1'", w("version"), "version")
    name = check_name(str(data.get("name") or (Path(doc.file).stem if doc.file else "cluster")).replace("-", "_"),
                      "cluster", w("name"))
    defaults = schema.require_mapping(data.get("defaults") or {}, w("defaults"), "defaults")
    schema.unknown_keys(defaults, MACHINE_KEYS - {"address", "tunnel_ip"}, lambda k: w("defaults", k), "defaults")
    base = _machine_fields(defaults, lambda k: w("defaults", k), "defaults")
    raw_machines = data.get("machines")
    if not raw_machines:
        raise schema.fail("missing key 'machines' (a mapping of machine name to its address and limits)",
                          w(), "machines")
    schema.require_mapping(raw_machines, w("machines"), "machines", "a mapping of machine name to its settings")
    machines = []
    tunnel_ips: dict[str, str] = {}
    for mname, raw in raw_machines.items():
        where = w("machines", mname)
        check_name(mname, "machine", where)
        raw = schema.require_mapping(raw or {}, where, f"machines.{mname}")
        schema.unknown_keys(raw, MACHINE_KEYS, lambda k, m=mname: w("machines", m, k), f"machines.{mname}")
        if "address" not in raw:
            raise schema.fail("missing key 'address' (how to reach the machine over SSH)", where,
                              f"machines.{mname}.address")
        fields = {**base, **_machine_fields(raw, lambda k, m=mname: w("machines", m, k), f"machines.{mname}")}
        machine = Machine(mname, where=where, **fields)
        if "tunnel_ip" not in fields and not _is_ip(machine.address):
            raise schema.fail(f"address {machine.address} is a host name: give tunnel_ip, the underlay address VXLAN "
                              "binds to", where, f"machines.{mname}.tunnel_ip")
        other = tunnel_ips.get(machine.tunnel_address)
        if other:
            raise schema.fail(f"tunnel address {machine.tunnel_address} is also {other}'s", where,
                              f"machines.{mname}.tunnel_ip")
        tunnel_ips[machine.tunnel_address] = mname
        machines.append(machine)
    known_hosts = data.get("known_hosts")
    if known_hosts is not None and (not isinstance(known_hosts, str) or not known_hosts):
        raise schema.fail(f"expected the path of a known_hosts file, got {known_hosts!r}", w("known_hosts"), "known_hosts")
    if known_hosts and doc.file and not Path(known_hosts).expanduser().is_absolute():
        known_hosts = str(Path(doc.file).parent / known_hosts)
    lxd = _lxd(data["lxd"], w, doc.file) if "lxd" in data else None
    return Cluster(name, machines, doc.file, known_hosts, lxd)


def _lxd(raw: Any, w, file: str | None) -> LxdCluster:
    schema.require_mapping(raw, w("lxd"), "lxd", "a mapping: endpoint, cert, key, server_cert (or socket)")
    schema.unknown_keys(raw, LXD_KEYS, lambda k: w("lxd", k), "lxd")
    fields: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str) or not value:
            raise schema.fail(f"expected {'a URL' if key == 'endpoint' else 'a path'}, got {value!r}", w("lxd", key),
                              f"lxd.{key}")
        if key == "endpoint":
            if not ENDPOINT_RE.fullmatch(value):
                raise schema.fail(f"expected https://HOST:PORT (LXD's core.https_address), got {value!r}",
                                  w("lxd", key), "lxd.endpoint")
        elif file and not Path(value).expanduser().is_absolute():
            value = str(Path(file).parent / value)
        fields[key] = value
    if "endpoint" in fields:
        missing = [k for k in ("cert", "key", "server_cert") if k not in fields]
        if missing:
            raise schema.fail(f"missing key '{missing[0]}' (the endpoint needs the client certificate and key the "
                              "cluster trusts, and the cluster's certificate to pin)", w("lxd"), f"lxd.{missing[0]}")
    elif "socket" not in fields:
        raise schema.fail("missing key 'endpoint' (https://HOST:PORT) or 'socket' (a member's unix socket)", w("lxd"),
                          "lxd.endpoint")
    return LxdCluster(**fields)


def _machine_fields(raw: dict, where_of, field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        f, where = f"{field}.{key}", where_of(key)
        if key == "address":
            out[key] = _address(value, where, f, hostname_ok=True)
        elif key == "tunnel_ip":
            out[key] = _address(value, where, f, hostname_ok=False)
        elif key == "user":
            if not isinstance(value, str) or not USER_RE.fullmatch(value):
                raise schema.fail(f"expected a user name, got {value!r}", where, f)
            out[key] = value
        elif key == "python":
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise schema.fail(f"expected the path or name of a Python 3.11+ interpreter, got {value!r}", where, f)
            out[key] = value
        elif key == "key":
            if not isinstance(value, str) or not value:
                raise schema.fail(f"expected the path of an SSH private key, got {value!r}", where, f)
            out[key] = value
        elif key == "port":
            out[key] = schema.number(value, where, f, minimum=1, maximum=65535, integer=True)
        elif key == "provisioner":
            if value not in ENGINES:
                raise schema.fail(f"expected one of: {', '.join(ENGINES)}, got {value!r}", where, f)
            out[key] = value
        elif key == "cpu":
            out[key] = schema.number(value, where, f, minimum=0, strict_min=True)
        elif key in ("memory", "max_nodes"):
            out[key] = schema.number(value, where, f, minimum=1, integer=True)
        elif key == "mtu":
            out[key] = schema.number(value, where, f, minimum=576, maximum=65535, integer=True)
        elif key == "underlay":
            if not isinstance(value, str) or not IFACE_NAME_RE.fullmatch(value):
                raise schema.fail(f"expected an interface name such as eth1, got {value!r}", where, f)
            out[key] = value
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _address(value: Any, where, field: str, *, hostname_ok: bool) -> str:
    text = str(value) if isinstance(value, (str, int)) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if hostname_ok and HOSTNAME_RE.fullmatch(text) and not text.replace(".", "").isdigit():
        return text
    what = "an IP address or host name" if hostname_ok else "an IP address"
    raise TopologyError(f"expected {what}, got {value!r}", where=where, field=field)
