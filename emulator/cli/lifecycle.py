"""up, down, status, doctor, exec, pingall, run: an experiment's life."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from emulator.api import Emulation
from emulator.checks import junit_xml, run_all
from emulator.cli.common import (
    OUTPUT,
    _bring_up,
    _emulation,
    _timings_table,
    deploy_options,
    emit,
    err,
    fail,
    guarded,
    load_source,
    rounded,
    table_of,
)
from emulator.runtime import distributed, targets
from emulator.runtime.journal import Journal
from emulator.runtime.state import known_experiments
from emulator.topology.cluster import load_cluster


@click.command()
@deploy_options
@OUTPUT
@guarded
def up(source: str, custom: str | None, name: str | None, provisioner: str, cluster_file: str | None, placement: str,
       parallel: int, accept_new: bool, output: str) -> None:
    """Deploy a topology on this machine, or across a cluster's machines (--cluster)."""
    emu = _bring_up(_emulation(load_source(source, custom), name, provisioner, cluster_file, placement, parallel,
                               accept_new), output)
    summary = {"experiment": emu.name, **emu.plan.summary(), "timings": rounded(emu.timings)}
    if emu.deployment:
        summary.update(machines=emu.deployment.machine_timings, round_trips=emu.deployment.round_trips)
    emit(summary, output, _timings_table(f"{emu.name} is up: {len(emu.plan.nodes)} nodes, {len(emu.plan.links)} links",
                                         emu.timings))


@click.command()
@click.argument("experiment", required=False)
@click.option("--all", "all_", is_flag=True, help="every experiment this machine's state directory knows")
@click.option("--wait", type=click.FloatRange(0), default=600.0, show_default=True,
              help="seconds to wait for an up or down of the same experiment to finish first")
@OUTPUT
@guarded
def down(experiment: str | None, all_: bool, wait: float, output: str) -> None:
    """Remove exactly what `up` made (and, without a journal, what carries the experiment's markers).
    Idempotent: an unknown experiment is not an error. Exit 1 when something is left or could not be checked."""
    names = known_experiments() if all_ else ([experiment] if experiment else [])
    if not names and not all_:
        fail("name an experiment, or pass --all", 2, output)
    results = []
    for name in names:
        res = targets.destroy(name, wait=wait)
        results.append({"experiment": name, "removed": res.removed, "left": [vars(r) for r in res.left],
                        "note": res.note, "timings": rounded(res.timings)})
    table = table_of("down", "experiment", "removed", "left")
    for r in results:
        table.add_row(r["experiment"], str(r["removed"]), str(len(r["left"])) if r["left"] else r["note"] or "nothing")
    emit(results, output, table)
    left = [item for r in results for item in r["left"]]
    if left:
        if output == "table":
            unasked = [item["name"] for item in left if item["kind"] == "unchecked"]
            err.print("[bold red]partial:[/] ", end="")
            err.print((f"could not check {'; '.join(unasked)}. " if unasked else "") + f"{len(left)} item(s) left; "
                      "the journal is kept: run 'cloudemu down' again once that is fixed", highlight=False, markup=False)
        sys.exit(1)


#: States that are as they should be: running, or a VM that a hollow compute node holds as a port of its model.
FINE = ("running", "modelled")


@click.command()
@click.argument("experiment", required=False)
@OUTPUT
@guarded
def status(experiment: str | None, output: str) -> None:
    """What is running: every experiment, or one experiment per node."""
    if experiment is None:
        rows = []
        for name in known_experiments():
            meta = Journal(name).meta()
            shards = meta.get("shards") or {"local": meta.get("plan", {})}
            rows.append({"experiment": name, "status": meta.get("status"), "provisioner": meta.get("provisioner"),
                         "nodes": sum(len(p.get("nodes", [])) for p in shards.values()),
                         "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta.get("created", 0)))})
        table = table_of("experiments", "experiment", "status", "provisioner", "nodes", "created")
        for r in rows:
            table.add_row(*(str(r[c]) for c in ("experiment", "status", "provisioner", "nodes", "created")))
        emit(rows, output, table)
        return
    states = Emulation.attach(experiment).status()
    table = table_of(f"{experiment}", "node", "kind", "state", "detail")
    for s in states:
        table.add_row(s.node, s.kind, ("[green]" if s.state in FINE else "[red]") + s.state, s.detail)
    emit([vars(s) for s in states], output, table)
    if any(s.state not in FINE for s in states):
        sys.exit(1)


@click.command()
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="cluster inventory (YAML)")
@click.option("--parallel", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--accept-new-host-keys", "accept_new", is_flag=True, help="trust (and record) unknown host keys")
@OUTPUT
@guarded
def doctor(cluster_file: str, parallel: int, accept_new: bool, output: str) -> None:
    """Preflight every machine of a cluster, creating nothing: SSH, root, OVS, VXLAN port, MTU, addresses; with
    the inventory's lxd:, each LXD member too (online, trusted, version, storage pool, node image)."""
    rows = distributed.doctor(load_cluster(cluster_file), accept_new=accept_new, parallel=parallel)
    table = table_of("doctor", "machine", "address", "result", "datapath", "LXD member", "problems")
    for r in rows:
        lxd = r.get("lxd")
        table.add_row(r["machine"], r["address"], "[green]ok" if r["ok"] else "[red]FAIL", r.get("datapath", "-"),
                      f"{lxd['status'].lower()} {lxd['version'] or ''}".strip() if lxd else "-",
                      "; ".join(r["problems"]) or "-")
    emit(rows, output, table)
    if not all(r["ok"] for r in rows):
        sys.exit(1)


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("experiment")
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@guarded
def exec_(experiment: str, node: str, command: tuple[str, ...]) -> None:
    """Run a command in a node: cloudemu exec EXP h1 -- ping -c1 10.0.0.2"""
    import os

    emu = Emulation.attach(experiment)
    handle = emu.node(node)
    if emu.cluster is not None:  # on another machine: over its SSH session, output when it ends
        done = handle.run(list(command), timeout=None)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        sys.exit(done.returncode if done.returncode >= 0 else 255)
    argv = handle.argv(list(command))
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@click.command()
@click.argument("experiment", required=False)
@click.option("--wait", default=0.0, show_default=True, help="retry failed pairs for this many seconds")
@click.option("--all", "every_pair", is_flag=True,
              help="every ordered pair even past 100 hosts (by default each then pings two others: 2N pairs, not N^2)")
@click.option("--sample", type=click.IntRange(1, None), help="pairs to sample at most past 100 hosts  [default: 2,000]")
@OUTPUT
@guarded
def pingall(experiment: str | None, wait: float, every_pair: bool, sample: int | None, output: str) -> None:
    """All hosts ping all hosts (past 100 hosts, a sample: two each); exit 1 on any loss."""
    if experiment is None:
        names = known_experiments()
        if len(names) != 1:
            fail(f"name the experiment; up now: {', '.join(names) or 'none'}", 2, output)
        experiment = names[0]
    res = Emulation.attach(experiment).pingall(wait=wait, every_pair=every_pair, sample=sample)
    sampled = f" (sampled from {res.of_pairs:,})" if res.of_pairs else ""
    table = table_of(f"pingall {experiment}", "pairs", "failed", "loss %", "seconds")
    table.add_row(f"{res.pairs}{sampled}", str(len(res.failed)), f"{res.loss_percent:.1f}", f"{res.seconds:.2f}")
    emit(res.to_dict(), output, table)
    if res.failed:
        if output == "table":
            err.print("failed pairs: " + ", ".join(f"{a}->{b}" for a, b in res.failed[:20]))
        sys.exit(1)


@click.command()
@deploy_options
@click.option("--junit", type=click.Path(dir_okay=False), help="write a JUnit XML report here")
@click.option("--wait", default=30.0, show_default=True, help="seconds pingall may retry while switches converge")
@OUTPUT
@guarded
def run(source: str, custom: str | None, name: str | None, provisioner: str, cluster_file: str | None, placement: str,
        parallel: int, accept_new: bool, junit: str | None, wait: float, output: str) -> None:
    """up, pingall, the file's checks, down. Exit 0 when everything passed, 1 otherwise."""
    topo = load_source(source, custom)
    emu = _emulation(topo, name, provisioner, cluster_file, placement, parallel, accept_new)
    results = run_all(emu, topo.checks, wait=wait, bring_up=lambda: _bring_up(emu, output))
    passed = all(r.passed for r in results)
    if junit:
        Path(junit).write_text(junit_xml(f"cloudemu.{emu.name}", results))
    table = table_of(f"run {emu.name}: {'[green]PASS' if passed else '[red]FAIL'}", "step", "result", "seconds", "detail")
    for r in results:
        table.add_row(r.name, "[green]pass" if r.passed else "[red]fail", f"{r.seconds:.2f}", r.message)
    emit({"experiment": emu.name, "passed": passed, "results": [r.to_dict() for r in results],
          "timings": rounded(emu.timings)}, output, table)
    sys.exit(0 if passed else 1)
