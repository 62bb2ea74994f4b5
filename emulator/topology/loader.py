"""Topology file (version 1) to Topology: strict, line-numbered, pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emulator.kinds import KINDS
from emulator.model import DEFAULT_SUBNET, Check, LinkParams, Topology, TopologyError, Vpc, check_name
from emulator.topology import schema
from emulator.topology.generators import GENERATORS, as_bulk
from emulator.topology.yamlsource import Located, load_yaml, read_yaml_file

SUPPORTED_VERSIONS = (1,)


def load_file(path: str | Path) -> Topology:
    """Any supported topology file, chosen by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".graphml", ".gml"):
        from emulator.topology.imports import load_graph_file

        return load_graph_file(path)
    return from_located(read_yaml_file(path))


def load_text(text: str, file: str | None = None) -> Topology:
    return from_located(load_yaml(text, file))


def from_located(doc: Located) -> Topology:
    data, w = doc.data, doc.where
    schema.require_mapping(data, w(), "", "a mapping at the top (version, name, nodes, links)")
    schema.unknown_keys(data, schema.TOP_KEYS, lambda k: w(k), "")
    if "version" not in data:
        raise schema.fail("missing key 'version' (add 'version: 1')", w(), "version")
    if data["version"] not in SUPPORTED_VERSIONS:
        raise schema.fail(f"unsupported version {data['version']!r}; this cloudemu reads version 1", w("version"), "version")
    name = data.get("name") or (Path(doc.file).stem if doc.file else "topology")
    name = check_name(str(name).replace("-", "_"), "experiment", w("name"))
    if not any(k in data for k in ("nodes", "topology")):
        raise schema.fail("missing key 'nodes' (or 'topology' with a generator)", w(), "nodes")

    defaults = schema.require_mapping(data.get("defaults") or {}, w("defaults"), "defaults")
    schema.unknown_keys(defaults, schema.DEFAULTS_KEYS, lambda k: w("defaults", k), "defaults")
    link_defaults_raw = schema.require_mapping(defaults.get("link") or {}, w("defaults", "link"), "defaults.link")
    schema.unknown_keys(link_defaults_raw, schema.LINK_PARAM_KEYS, lambda k: w("defaults", "link", k), "defaults.link")
    link_defaults = LinkParams(**schema.link_params(link_defaults_raw, lambda k: w("defaults", "link", k), "defaults.link"))
    subnet = DEFAULT_SUBNET
    if "subnet" in defaults:
        subnet = schema.ip_network(defaults["subnet"], w("defaults", "subnet"), "defaults.subnet")

    topo = Topology(name=name, subnet=subnet, link_defaults=link_defaults, source=doc.file,
                    subnet_where=w("defaults", "subnet"))
    for key in ("provisioner", "image"):
        if key in defaults:
            topo.node_defaults[key] = schema.container_option(key, defaults[key], w("defaults", key), f"defaults.{key}")
    if "topology" in data:
        _generate(topo, doc)
    _vpcs(topo, doc)
    _security_groups(topo, doc)
    _nodes(topo, doc)
    topo.check_vms()
    topo.check_services()
    _links(topo, doc)
    topo.checks = _checks(topo, doc)
    return topo


def _vpcs(topo: Topology, doc: Located) -> None:
    w = doc.where
    raw = schema.require_mapping(doc.data.get("vpcs") or {}, w("vpcs"), "vpcs", "a mapping of VPC name to vni and cidr")
    seen: dict[int, str] = {}
    for name, spec in raw.items():
        check_name(str(name), "VPC", w("vpcs", name))
        fields = schema.vpc(spec, lambda k, n=name: w("vpcs", n, *([k] if k else [])), f"vpcs.{name}")
        vni = fields.get("vni")
        if vni in seen:
            raise schema.fail(f"VNI {vni} is already VPC {seen[vni]}'s", w("vpcs", name, "vni"), f"vpcs.{name}.vni")
        if vni:
            seen[vni] = name
        topo.vpcs[name] = Vpc(name, vni, fields.get("cidr"), w("vpcs", name), subnets=fields.get("subnets", {}),
                              router=fields.get("router", False), dns=fields.get("dns", []))


def _security_groups(topo: Topology, doc: Located) -> None:
    w = doc.where
    raw = schema.require_mapping(doc.data.get("security_groups") or {}, w("security_groups"), "security_groups",
                                 "a mapping of group name to its list of rules")
    for name, rules in raw.items():
        check_name(str(name), "security group", w("security_groups", name))
        topo.security_groups[str(name)] = schema.security_group(
            rules, lambda *path, n=name: w("security_groups", n, *path), f"security_groups.{name}")
    for name, rules in topo.security_groups.items():
        for i, rule in enumerate(rules):
            if rule["remote_group"] and rule["remote_group"] not in topo.security_groups:
                raise schema.fail(f"remote_group {rule['remote_group']!r} is not a declared security group",
                                  w("security_groups", name, i), f"security_groups.{name}[{i}].remote_group")


def _generate(topo: Topology, doc: Located) -> None:
    w = doc.where
    spec = schema.require_mapping(doc.data["topology"], w("topology"), "topology")
    gen_name = spec.get("generator")
    if gen_name not in GENERATORS:
        raise schema.fail(
            f"unknown generator {gen_name!r}; expected one of: {', '.join(GENERATORS)}",
            w("topology", "generator"),
            "topology.generator",
        )
    gen = GENERATORS[gen_name]
    allowed = {"generator"} | {p.name for p in gen.params}
    schema.unknown_keys(spec, allowed, lambda k: w("topology", k), "topology")
    kwargs: dict[str, Any] = {}
    for p in gen.params:
        f = f"topology.{p.name}"
        if p.name not in spec:
            if p.required:
                raise schema.fail(f"missing parameter {p.name!r} ({p.help})", w("topology"), f)
            kwargs[p.name] = p.default
            continue
        value = spec[p.name]
        if p.words and isinstance(value, str) and value in p.words:
            value = p.words.index(value)
        kwargs[p.name] = schema.number(value, w("topology", p.name), f, minimum=p.minimum, maximum=p.maximum,
                                       integer=True)
    try:
        generated = gen.make(**kwargs)
    except ValueError as exc:
        raise schema.fail(str(exc), w("topology"), "topology") from None
    bulk = as_bulk(generated)
    bulk.where = w("topology")
    topo.add_bulk(bulk)


def _nodes(topo: Topology, doc: Located) -> None:
    w = doc.where
    raw_nodes = doc.data.get("nodes") or {}
    schema.require_mapping(raw_nodes, w("nodes"), "nodes", "a mapping of node name to its settings")
    for name, raw in raw_nodes.items():
        where = w("nodes", name)
        check_name(name, "node", where)
        raw = schema.require_mapping(raw if raw is not None else {}, where, f"nodes.{name}")
        kind = raw.get("kind", "host")
        known = schema.node_keys()
        if kind not in known:
            raise schema.fail(
                f"unknown kind {kind!r}; expected one of: {', '.join(known)}",
                w("nodes", name, "kind"),
                f"nodes.{name}.kind",
            )
        yaml_on = True in raw  # YAML 1.1 reads a bare `on:` key as the boolean true
        if yaml_on:
            raw = {("on" if k is True else k): v for k, v in raw.items()}

        def where_of(k, n=name, yaml_on=yaml_on):
            return w("nodes", n, True if (k == "on" and yaml_on) else k)
        schema.unknown_keys(raw, known[kind], where_of, f"nodes.{name}")
        opts = schema.node_options(kind, raw, where_of, f"nodes.{name}")
        if kind == "vm":
            for key in ("on", "vpc"):
                if key not in opts:
                    raise schema.fail(f"missing key {key!r} (a vm names its compute node and its VPC)", where,
                                      f"nodes.{name}.{key}")
            vm = topo.add_vm(name, opts["on"], opts["vpc"], ip=opts.get("ip"), mac=opts.get("mac"), where=where,
                             subnet=opts.get("subnet"), security_groups=opts.get("security_groups", ()),
                             dhcp=opts.get("dhcp", False))
            vm.where = where_of("on")
        elif kind == "compute":
            topo.add_node(name, "host", where=where, role="compute", **{"agent": "builtin", **opts})
        elif kind == "service":
            node = topo.add_node(name, "host", where=where, role="service",
                                 **{"provisioner": topo.node_defaults.get("provisioner", "docker"), **opts})
            if "depends_on" in opts:
                node.options["depends_on_where"] = where_of("depends_on")
        elif kind in KINDS:  # a host whose handler (emulator/kinds.py) reads its own keys
            topo.add_node(name, "host", where=where, role=kind, **opts)
        else:
            topo.add_node(name, kind, where=where, **opts)


def _links(topo: Topology, doc: Located) -> None:
    w = doc.where
    raw_links = doc.data.get("links") or []
    if not isinstance(raw_links, list):
        raise schema.fail("expected a list of links", w("links"), "links")
    for i, raw in enumerate(raw_links):
        where = w("links", i)
        f = f"links[{i}]"
        raw = schema.require_mapping(raw, where, f)
        schema.unknown_keys(raw, schema.LINK_KEYS, lambda k, i=i: w("links", i, k), f)
        eps = raw.get("endpoints")
        if eps is None:
            raise schema.fail("missing key 'endpoints' (two node names, e.g. [h1, s1])", where, f"{f}.endpoints")
        if not isinstance(eps, list) or len(eps) != 2 or not all(isinstance(e, str) for e in eps):
            raise schema.fail(f"expected two endpoints such as [h1, s1] or [h1:eth0, s1], got {eps!r}",
                              w("links", i, "endpoints"), f"{f}.endpoints")
        params = schema.link_params(raw, lambda k, i=i: w("links", i, k), f)
        try:
            topo.add_link(eps[0], eps[1], where=w("links", i, "endpoints"), **params)
        except TopologyError as exc:
            exc.field = f"{f}.endpoints"
            raise


def _checks(topo: Topology, doc: Located) -> list[Check]:
    w = doc.where
    raw_checks = doc.data.get("checks") or []
    if not isinstance(raw_checks, list):
        raise schema.fail("expected a list of checks", w("checks"), "checks")
    checks = []
    for i, raw in enumerate(raw_checks):
        where = w("checks", i)
        if not isinstance(raw, dict) or len(raw) != 1:
            raise schema.fail(f"each check is a mapping with one key: {', '.join(schema.CHECK_KEYS)}", where, f"checks[{i}]")
        (kind, args), = raw.items()
        if kind not in schema.CHECK_KEYS:
            raise schema.fail(f"unknown check {kind!r}; expected one of: {', '.join(schema.CHECK_KEYS)}", where, f"checks[{i}]")
        args = schema.require_mapping(args, where, f"checks[{i}].{kind}")
        required, optional = schema.CHECK_KEYS[kind]
        schema.unknown_keys(args, required | optional, lambda k, i=i, kd=kind: w("checks", i, kd, k), f"checks[{i}].{kind}")
        for key in sorted(required - args.keys()):
            raise schema.fail(f"missing key {key!r}", where, f"checks[{i}].{kind}.{key}")
        for key in ("from", "to", "node", "client", "server"):
            # makes objects of generated nodes: checks are for small runs
            if key in args and args[key] not in topo.nodes and args[key] not in topo.vms:
                raise schema.fail(f"unknown node {args[key]!r}", w("checks", i, kind, key), f"checks[{i}].{kind}.{key}")
        for key in ("count", "seconds", "expect_rc"):
            if key in args:
                schema.number(args[key], w("checks", i, kind, key), f"checks[{i}].{kind}.{key}", integer=True)
        for key in ("min_mbps", "max_mbps"):
            if key in args:
                schema.number(args[key], w("checks", i, kind, key), f"checks[{i}].{kind}.{key}")
        if kind == "exec" and not isinstance(args["cmd"], (str, list)):
            raise schema.fail("cmd is a string or a list of arguments", w("checks", i, kind, "cmd"), f"checks[{i}].exec.cmd")
        checks.append(Check(kind, dict(args), where))
    return checks
