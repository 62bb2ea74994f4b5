"""Topologies from elsewhere: networkx graphs, node-link JSON, GraphML/GML, Mininet.

Every route ends in the same Topology checks as the YAML loader, so a graph
from Topology Zoo gets the same errors as a hand-written file.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from emulator.model import Topology, TopologyError, Where, check_name
from emulator.topology import schema
from emulator.topology.generators import GENERATORS

MN_SPEC_RE = re.compile(r"(linear|tree|single|minimal|torus|reversed)(,\d+)*")


def _clean_name(raw: Any) -> str:
    """Graph files often carry names like "New York" or 17: make them node names."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(raw))
    return text if text[:1].isalpha() else f"n{text}"


def topology_from_networkx(graph: Any, name: str | None = None, source: str | None = None) -> Topology:
    """Node attribute `kind` (host, switch, bridge; default host); edge attributes bw/delay/loss/mtu."""
    topo = Topology(name=_clean_name(name or graph.graph.get("name") or "graph"), source=source)
    where = Where(source)
    names: dict[Any, str] = {}
    for raw, attrs in graph.nodes(data=True):
        node_name = _clean_name(raw)
        kind = attrs.get("kind", "host")
        opts = {k: v for k, v in attrs.items() if k in schema.NODE_KEYS.get(kind, set()) and k != "kind"}
        opts = schema.node_options(kind, opts, lambda k: where, f"nodes.{node_name}") if kind in schema.NODE_KEYS else opts
        topo.add_node(node_name, kind, where=where, **opts)
        names[raw] = node_name
    for a, b, attrs in graph.edges(data=True):
        params = schema.link_params({k: v for k, v in attrs.items() if k in schema.LINK_PARAM_KEYS}, lambda k: where,
                                    f"links[{a}-{b}]")
        topo.add_link(names[a], names[b], where=where, **params)
    return topo


def load_graph_file(path: str | Path) -> Topology:
    """Node-link JSON (.json), GraphML (.graphml) or GML (.gml)."""
    import networkx as nx

    from emulator.topology.generators import MAX_LINKS, MAX_NODES
    from emulator.topology.yamlsource import MAX_FILE_BYTES

    p = Path(path)
    where = Where(str(p))
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TopologyError(f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}", where=where)
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
            edges_key = "links" if "links" in data else "edges"
            graph = nx.node_link_graph(data, edges=edges_key)
        elif p.suffix.lower() == ".graphml":
            graph = nx.read_graphml(p)
        else:
            graph = nx.read_gml(p, label="label")
    except FileNotFoundError:
        raise TopologyError("no such file", where=where) from None
    except json.JSONDecodeError as exc:
        raise TopologyError(f"not valid JSON: {exc.msg}", where=Where(str(p), exc.lineno)) from None
    except RecursionError:
        raise TopologyError("nested too deeply to be a graph", where=where) from None
    except TopologyError:
        raise
    except Exception as exc:  # networkx raises many kinds for a broken file
        raise TopologyError(f"cannot read graph: {exc}", where=where) from None
    if graph.number_of_nodes() > MAX_NODES or graph.number_of_edges() > MAX_LINKS:
        raise TopologyError(f"the graph has {graph.number_of_nodes():,} nodes and {graph.number_of_edges():,} edges; "
                            f"one topology holds at most {MAX_NODES:,} and {MAX_LINKS:,}", where=where)
    return _with_hosts_kind(topology_from_networkx(graph, p.stem, str(p)))


def _with_hosts_kind(topo: Topology) -> Topology:
    """A graph without kinds (Topology Zoo) is a network of switches: give each one a host."""
    if any(n.kind != "host" for n in topo.nodes.values()) or not topo.links:
        return topo
    out = Topology(name=topo.name, source=topo.source, subnet=topo.subnet)
    for n in list(topo.nodes.values()):
        out.add_node(n.name, "switch", where=n.where)
    for n in list(topo.nodes.values()):
        host = f"h_{n.name}"[:32]
        out.add_node(host, "host", where=n.where)
        out.add_link(host, n.name, where=n.where)
    for link in topo.links:
        out.add_link(link.a, link.b, where=link.where, **link.params.to_dict())
    return out


def from_mininet(topo_obj: Any, name: str = "mininet") -> Topology:
    """A mininet.topo.Topo object: switches by `isSwitch`, link options bw/delay/loss."""
    topo = Topology(name=_clean_name(name))
    for node in topo_obj.nodes():
        kind = "switch" if topo_obj.isSwitch(node) else "host"
        topo.add_node(check_name(_clean_name(node), "node"), kind)
    for a, b, info in topo_obj.links(withInfo=True):
        params = {k: info[k] for k in ("bw", "delay", "jitter", "loss") if info.get(k) is not None}
        topo.add_link(_clean_name(a), _clean_name(b), **schema.link_params(params, lambda k: Where(), f"links[{a}-{b}]"))
    return topo


def from_mn_spec(spec: str, custom: str | None = None) -> Topology:
    """Mininet's `--topo` strings: linear,4 · tree,2,3 · single,3 · torus,3,3 · or a --custom file's topo."""
    name, *raw_args = spec.split(",")
    try:
        args = [int(a) for a in raw_args]
    except ValueError:
        raise TopologyError(f"topology arguments must be integers: {spec!r}", field="topo") from None
    if custom:
        return _from_custom(custom, name, args)
    if not MN_SPEC_RE.fullmatch(spec):
        raise TopologyError(f"unknown Mininet topology {spec!r}; expected linear,N · tree,D,F · single,N · torus,R,C",
                            field="topo")
    label = spec.replace(",", "_")
    try:
        if name in ("single", "minimal"):  # a linear chain of one switch
            nodes, links = GENERATORS["linear"].make(switches=1, hosts_per_switch=args[0] if args else
                                                     (2 if name == "minimal" else 1))
        elif name in ("linear", "reversed"):
            nodes, links = GENERATORS["linear"].make(switches=args[0] if args else 2,
                                                     hosts_per_switch=args[1] if len(args) > 1 else 1)
        elif name == "tree":
            nodes, links = GENERATORS["tree"].make(depth=args[0] if args else 1, fanout=args[1] if len(args) > 1 else 2)
        else:
            nodes, links = GENERATORS["torus"].make(rows=args[0], cols=args[1], hosts_per_switch=1)
    except (ValueError, IndexError) as exc:
        raise TopologyError(f"Mininet topology {spec!r}: {exc or 'missing arguments'}", field="topo") from None
    topo = Topology(name=_clean_name(label))
    for n, kind in nodes:
        topo.add_node(n, kind)
    for a, b in links:
        topo.add_link(a, b)
    return topo


def _from_custom(path: str, name: str, args: list[int]) -> Topology:
    """Mininet's --custom FILE --topo NAME: the file's `topos` dict maps names to constructors."""
    where = Where(path)
    if not Path(path).is_file():
        raise TopologyError("no such file", where=where, field="custom")
    mod_spec = importlib.util.spec_from_file_location("cloudemu_custom_topo", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)  # the user's own code, as Mininet's --custom runs it
    except Exception as exc:
        raise TopologyError(f"the custom topology failed to load: {exc}", where=where, field="custom") from None
    topos = getattr(module, "topos", None)
    if not isinstance(topos, dict) or name not in topos:
        known = ", ".join(topos) if isinstance(topos, dict) else "none (the file defines no 'topos' dict)"
        raise TopologyError(f"topology {name!r} not in the file's topos; known: {known}", where=where, field="topo")
    return from_mininet(topos[name](*args), name)
