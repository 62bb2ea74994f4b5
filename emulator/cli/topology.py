"""validate, plan, graph: the pure commands (they never touch the machine)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from emulator.cli.common import (
    CUSTOM,
    MAX_TABLE_ROWS,
    OUTPUT,
    RichProgress,
    _timings_table,
    emit,
    err,
    guarded,
    load_source,
    out,
    rounded,
    table_of,
)
from emulator.compiler.compile import compile_cluster, compile_topology
from emulator.compiler.placement import ALGORITHMS
from emulator.compiler.shards import write_plan
from emulator.model import Cluster, Topology
from emulator.runtime.hostinfo import reserved_networks
from emulator.topology.cluster import load_cluster
from emulator.topology.render import to_dot, to_mermaid


@click.command()
@click.argument("source")
@CUSTOM
@OUTPUT
@guarded
def validate(source: str, custom: str | None, output: str) -> None:
    """Load and check a topology; print a summary. Exit 2 on bad input."""
    topo = load_source(source, custom)
    plan = compile_topology(topo, reserved=reserved_networks())
    summary = {**topo.summary(), "valid": True, "shaped_links": plan.summary()["shaped_links"]}
    table = Table(title=f"{topo.name}: valid", show_header=False)
    for key, value in summary.items():
        table.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
    emit(summary, output, table)


@click.command()
@click.argument("source")
@CUSTOM
@click.option("--name", help="experiment name (default: the topology's name)")
@click.option("--cluster", "cluster_file", type=click.Path(dir_okay=False), help="cluster inventory (YAML) to place on")
@click.option("--machines", type=click.IntRange(1, 100_000), help="plan for N identical local machines")
@click.option("--placement", type=click.Choice(ALGORITHMS), default="metis", show_default=True)
@click.option("--compare", is_flag=True, help="compare every placement algorithm side by side")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="write plan.json and one shard per machine here")
@OUTPUT
@guarded
def plan(source: str, custom: str | None, name: str | None, cluster_file: str | None, machines: int | None,
         placement: str, compare: bool, out_dir: str | None, output: str) -> None:
    """Compile without touching the machine; print what `up` would create (per machine with --cluster/--machines)."""
    if cluster_file and machines:
        raise click.UsageError("give --cluster or --machines, not both")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    topo = load_source(source, custom)
    cluster = load_cluster(cluster_file) if cluster_file else (Cluster.local(machines) if machines else None)
    timings["load"] = time.perf_counter() - t0
    if cluster is None and not (compare or out_dir):
        return _single_plan(topo, name, output, timings)
    cluster = cluster or Cluster.local(1)
    if compare:
        return _compare_placements(topo, cluster, name, output)
    t1 = time.perf_counter()
    compiled = compile_cluster(topo, cluster, placement=placement, experiment=name, reserved=reserved_networks())
    timings["compile"] = time.perf_counter() - t1
    if out_dir:
        t2 = time.perf_counter()
        with RichProgress(enabled=output == "table") as progress:
            progress.start("shards", len(cluster.machines))
            index = write_plan(compiled, out_dir, on_shard=lambda n: progress.advance("shards", n))
        timings["write"] = time.perf_counter() - t2
    else:
        index = {"experiment": compiled.experiment, "placement": compiled.metrics,
                 "machines": compiled.machines_summary(), "summary": topo.summary()}
    index = {**index, "timings": rounded(timings), "total_seconds": round(time.perf_counter() - t0, 4)}
    if output == "json":
        return emit(index, output)
    table = table_of(f"plan for {compiled.experiment} on {len(cluster.machines)} machines", "machine", "nodes",
                     "links", "tunnels")
    for row in index["machines"][:MAX_TABLE_ROWS]:
        table.add_row(row["machine"], str(row["nodes"]), str(row["links"]), str(row["tunnels"]))
    if len(index["machines"]) > MAX_TABLE_ROWS:
        table.add_row(f"... {len(index['machines']) - MAX_TABLE_ROWS} more (-o json lists all)", "", "", "")
    out.print(table)
    out.print(_metrics_table([compiled.metrics]))
    out.print(_timings_table("timings", rounded(timings)))
    if out_dir:
        err.print(f"wrote {out_dir}/plan.json and {len(cluster.machines)} shards under {out_dir}/shards/")


def _single_plan(topo: Topology, name: str | None, output: str, timings: dict[str, float]) -> None:
    t0 = time.perf_counter()
    p = compile_topology(topo, experiment=name, reserved=reserved_networks())
    seconds = time.perf_counter() - t0
    if output == "json":
        emit({**p.to_dict(), "summary": p.summary(), "compile_seconds": round(seconds, 4)}, output)
        return
    title = f"plan for {p.experiment}: {len(p.nodes)} nodes, {len(p.links)} links ({seconds * 1000:.0f} ms)"
    nodes = table_of(title, "node", "kind", "creates", "address")
    for n in p.nodes:
        nodes.add_row(n.name, n.kind, n.netns or n.device or "", n.ip or "")
    links = table_of("links", "#", "end a", "end b", "kind", "params")
    for lk in p.links:
        links.add_row(str(lk.id), f"{lk.a.node}:{lk.a.dev}", f"{lk.b.node}:{lk.b.dev}", lk.kind,
                      " ".join(f"{k}={v}" for k, v in lk.params.items()))
    out.print(nodes)
    out.print(links)
    err.print(f"device names use the tag {p.tag!r} here; `up` picks a free tag of the same length")


def _compare_placements(topo: Topology, cluster: Cluster, name: str | None, output: str) -> None:
    rows = []
    for algorithm in ALGORITHMS:
        compiled = compile_cluster(topo, cluster, placement=algorithm, experiment=name, reserved=reserved_networks())
        rows.append(compiled.metrics)
    if output == "json":
        return emit(rows, output)
    out.print(_metrics_table(rows, f"placement of {topo.name} on {len(cluster.machines)} machines"))


def _metrics_table(rows: list[dict[str, Any]], title: str = "placement") -> Table:
    table = table_of(title, "algorithm")
    for col in ("links cut", "crossing Mbit/s", "max load / mean", "compile s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["algorithm"], str(r["links_cut"]), f"{r['crossing_bw']:,.0f}", f"{r['max_load_ratio']:.3f}",
                      f"{r['compile_seconds']:.3f}")
    return table


@click.command()
@click.argument("source")
@CUSTOM
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
@guarded
def graph(source: str, custom: str | None, fmt: str) -> None:
    """Draw the topology as Graphviz dot or Mermaid."""
    topo = load_source(source, custom)
    click.echo(to_dot(topo) if fmt == "dot" else to_mermaid(topo), nl=False)
