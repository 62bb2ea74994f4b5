"""Drawings of a topology: Graphviz dot and Mermaid text."""

from __future__ import annotations

from emulator.model import Topology

SHAPES_DOT = {"host": "box", "switch": "ellipse", "bridge": "hexagon"}
SHAPES_MERMAID = {"host": ("[", "]"), "switch": ("((", "))"), "bridge": ("{{", "}}")}


def _label(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def to_dot(topo: Topology) -> str:
    lines = [f'graph "{topo.name}" {{', "  node [fontname=Helvetica];"]
    for n in topo.nodes.values():
        extra = f"\\n{n.ip}" if n.ip else ""
        lines.append(f'  "{n.name}" [shape={SHAPES_DOT.get(n.kind, "box")} label="{n.name}{extra}"];')
    for link in topo.links:
        label = _label(link.params.merged_over(topo.link_defaults).to_dict())
        lines.append(f'  "{link.a.node}" -- "{link.b.node}"' + (f' [label="{label}"]' if label else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(topo: Topology) -> str:
    lines = ["graph LR"]
    for n in topo.nodes.values():
        left, right = SHAPES_MERMAID.get(n.kind, ("[", "]"))
        lines.append(f'  {n.name}{left}"{n.name}"{right}')
    for link in topo.links:
        label = _label(link.params.merged_over(topo.link_defaults).to_dict())
        lines.append(f"  {link.a.node} ---" + (f"|{label}|" if label else "") + f" {link.b.node}")
    return "\n".join(lines) + "\n"
