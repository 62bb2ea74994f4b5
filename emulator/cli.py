"""The command line: parse, call, print (a table, or JSON with -o json). Thin on purpose."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emulator.alcor.errors import AgentError
from emulator.api import Emulation
from emulator.checks import CheckResult, junit_xml, run_check
from emulator.compiler.compile import compile_cluster, compile_topology
from emulator.compiler.placement import ALGORITHMS
from emulator.compiler.shards import write_plan
from emulator.model import Cluster, Topology, TopologyError
from emulator.runtime import distributed, orchestrator
from emulator.runtime.distributed import ClusterError
from emulator.runtime.executor import CommandError
from emulator.runtime.hostinfo import reserved_networks
from emulator.runtime.journal import Journal
from emulator.runtime.ssh import MachineError
from emulator.runtime.state import ExperimentBusy, known_experiments
from emulator.runtime.workers import WorkerError
from emulator.topology.cluster import load_cluster
from emulator.topology.imports import from_mn_spec
from emulator.topology.loader import load_file
from emulator.topology.render import to_dot, to_mermaid
from provisioners import REGISTRY, PreflightError
from provisioners.base import NodeStartError
from provisioners.tokens import UnsafeToken

out = Console()
err = Console(stderr=True)
OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
                      help="table for people, json for programs")
MAX_TABLE_ROWS = 50
CUSTOM = click.option("--custom", type=click.Path(dir_okay=False), help="Mininet --custom file (with --topo NAME as SOURCE)")


class RichProgress:
    """Progress bars per phase on stderr, so that -o json on stdout stays clean."""

    def __init__(self, enabled: bool):
        self.progress = Progress(TextColumn("{task.description:<11}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeElapsedColumn(), console=err, transient=False, disable=not enabled)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, phase: str, total: int) -> None:
        self.tasks[phase] = self.progress.add_task(phase, total=total or 1)

    def advance(self, phase: str, amount: int) -> None:
        self.progress.advance(self.tasks[phase], amount)

    def finish(self, phase: str, seconds: float) -> None:
        task = self.tasks[phase]
        self.progress.update(task, completed=self.progress.tasks[task].total)


def table_of(title: str, *columns: str, **kwargs: Any) -> Table:
    table = Table(title=title, **kwargs)
    for col in columns:
        table.add_column(col)
    return table


def rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}


def emit(data: Any, output: str, table: Table | str | None = None) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif table is not None:
        out.print(table)


def fail(text: str, code: int, output: str = "table", **extra: Any) -> None:
    if output == "json":
        click.echo(json.dumps({"error": text, "exit_code": code, **extra}, indent=2, default=str))
    err.print("[bold red]error:[/] ", end="")
    err.print(text, highlight=False, markup=False, soft_wrap=True)
    sys.exit(code)


def load_source(source: str, custom: str | None) -> Topology:
    """A topology file, or a Mininet spec such as linear,4 or tree,2,3 (with --custom FILE)."""
    if custom or (not Path(source).exists() and "," in source or source in ("single", "minimal")):
        return from_mn_spec(source, custom)
    return load_file(source)


def guarded(fn):
    """Turn our known errors into a clear message and the right exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        output = kwargs.get("output", "table")
        try:
            return fn(*args, **kwargs)
        except TopologyError as exc:
            fail(str(exc), 2, output, **exc.to_dict())
        except (PreflightError, orchestrator.ExperimentError) as exc:
            fail(f"{exc} (nothing was created)" if isinstance(exc, PreflightError) else str(exc), 2, output)
        except CommandError as exc:
            removed = _bringing_up and not any(Journal(n).exists() for n in _bringing_up)
            fail(f"{exc}" + ("\nWhat had been made was removed; see the message above for the cause." if removed else ""),
                 1, output)
        except (ExperimentBusy, UnsafeToken) as exc:
            fail(str(exc), 2, output)
        except FileExistsError as exc:
            fail(str(exc), 2, output)
        except (ClusterError, MachineError, WorkerError) as exc:
            fail(str(exc), getattr(exc, "exit_code", 1), output, **getattr(exc, "report", {}))
        except KeyError as exc:
            fail(str(exc.args[0]) if exc.args else str(exc), 2, output)
        except (AgentError, NodeStartError) as exc:
            fail(str(exc), exc.exit_code, output)
        except KeyboardInterrupt:
            fail(_interrupted(), 130, output)
    return wrapper


#: Experiments this command started to bring up: what an interrupt message has to speak of.
_bringing_up: list[str] = []


def _interrupted() -> str:
    """Say only what happened: removed, or still there (and how to remove it)."""
    if not _bringing_up:
        return "interrupted"
    still = [name for name in _bringing_up if Journal(name).exists()]
    if still:
        return f"interrupted; {still[0]} may be partly up: 'cloudemu down {still[0]}' removes what was made"
    return "interrupted; what up had made was removed"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cloudemu")
def cli() -> None:
    """cloudemu: emulate networks of hosts, OVS switches and cloud nodes, and remove them without a trace."""


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    cli()


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends `up` as Ctrl-C does: through the clean-up path, not around it."""
    raise KeyboardInterrupt


# -- validate / plan / graph ------------------------------------------------------
@cli.command()
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


@cli.command()
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


@cli.command()
@click.argument("source")
@CUSTOM
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
@guarded
def graph(source: str, custom: str | None, fmt: str) -> None:
    """Draw the topology as Graphviz dot or Mermaid."""
    topo = load_source(source, custom)
    click.echo(to_dot(topo) if fmt == "dot" else to_mermaid(topo), nl=False)


# -- images ------------------------------------------------------------------------
@cli.group()
def image() -> None:
    """The node image for container engines, built from the Debian mirror (no registry needed)."""


@image.command("build")
@click.option("--engine", type=click.Choice(["docker", "lxd"]), multiple=True, default=["docker", "lxd"],
              show_default=True)
@OUTPUT
@guarded
def image_build(engine: tuple[str, ...], output: str) -> None:
    """debootstrap a root file system (cached), then import it as cloudemu/node:1."""
    from provisioners import images

    t0 = time.perf_counter()
    rootfs = images.build_rootfs(log=lambda text: err.print(text, highlight=False))
    built = {"rootfs": str(rootfs), "rootfs_seconds": round(time.perf_counter() - t0, 2), "images": []}
    for name in engine:
        t1 = time.perf_counter()
        image_id = images.import_docker(rootfs) if name == "docker" else images.import_lxd(rootfs)
        built["images"].append({"engine": name, "image": images.DEFAULT_IMAGE, "id": image_id,
                                "seconds": round(time.perf_counter() - t1, 2)})
    if output == "json":
        return emit(built, output)
    for row in built["images"]:
        out.print(f"{row['engine']}: {row['image']} ({row['id'][:19]}) in {row['seconds']} s")


@image.command("list")
@OUTPUT
@guarded
def image_list(output: str) -> None:
    """Node images present in the engines."""
    from provisioners import images

    rows = images.docker_images() + images.lxd_images()
    table = table_of("images", "engine", "image", "id", "rootfs", "size MB")
    for r in rows:
        table.add_row(r["engine"], r["image"], r["id"], r["rootfs"], r["size_mb"])
    emit(rows, output, table)


# -- up / down / status ---------------------------------------------------------
def _bring_up(emu: Emulation, output: str) -> Emulation:
    """up, with progress bars on a terminal (none under -o json)."""
    _bringing_up.append(emu.name)
    with RichProgress(enabled=output == "table") as progress:
        return emu.up(progress)


def _timings_table(title: str, timings: dict[str, float]) -> Table:
    table = table_of(title, "phase")
    table.add_column("seconds", justify="right")
    for phase, seconds in timings.items():
        table.add_row(phase, f"{seconds:.3f}")
    table.add_row("[bold]total", f"[bold]{sum(timings.values()):.3f}")
    return table


def cluster_options(fn):
    """Where to run: --cluster FILE spreads the experiment over its machines (SSH); default this machine."""
    for option in reversed([
        click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False),
                     help="cluster inventory (YAML): run across its machines over SSH"),
        click.option("--placement", type=click.Choice(ALGORITHMS), default="metis", show_default=True),
        click.option("--parallel", type=click.IntRange(1, 1024), default=16, show_default=True,
                     help="machines worked on at once"),
        click.option("--accept-new-host-keys", "accept_new", is_flag=True,
                     help="trust machines whose host key is not yet in known_hosts (and record it)")]):
        fn = option(fn)
    return fn


def _emulation(topo: Topology, name: str | None, provisioner: str | None, cluster_file: str | None, placement: str,
               parallel: int, accept_new: bool) -> Emulation:
    cluster = load_cluster(cluster_file) if cluster_file else None
    return Emulation(topo, name=name, provisioner=provisioner, cluster=cluster, placement=placement, parallel=parallel,
                     accept_new_host_keys=accept_new)


PROVISIONER = click.option("--provisioner", type=click.Choice(sorted(set(REGISTRY) - {"mixed"})), default=None,
                           help="engine for hosts that do not name one (default: the file's defaults.provisioner, else netns)")


@cli.command()
@click.argument("source")
@CUSTOM
@click.option("--name", help="experiment name (default: the topology's name)")
@PROVISIONER
@cluster_options
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


@cli.command()
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
        res = orchestrator.destroy(name, wait=wait)
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


@cli.command()
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
        table.add_row(s.node, s.kind, ("[green]" if s.state == "running" else "[red]") + s.state, s.detail)
    emit([vars(s) for s in states], output, table)
    if any(s.state != "running" for s in states):
        sys.exit(1)


@cli.command()
@click.option("--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="cluster inventory (YAML)")
@click.option("--parallel", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--accept-new-host-keys", "accept_new", is_flag=True, help="trust (and record) unknown host keys")
@OUTPUT
@guarded
def doctor(cluster_file: str, parallel: int, accept_new: bool, output: str) -> None:
    """Preflight every machine of a cluster, creating nothing: SSH, root, OVS, VXLAN port, MTU, addresses."""
    rows = distributed.doctor(load_cluster(cluster_file), accept_new=accept_new, parallel=parallel)
    table = table_of("doctor", "machine", "address", "result", "datapath", "problems")
    for r in rows:
        table.add_row(r["machine"], r["address"], "[green]ok" if r["ok"] else "[red]FAIL", r.get("datapath", "-"),
                      "; ".join(r["problems"]) or "-")
    emit(rows, output, table)
    if not all(r["ok"] for r in rows):
        sys.exit(1)


# -- exec / pingall / run ---------------------------------------------------------
@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
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


@cli.command()
@click.argument("experiment", required=False)
@click.option("--wait", default=0.0, show_default=True, help="retry failed pairs for this many seconds")
@OUTPUT
@guarded
def pingall(experiment: str | None, wait: float, output: str) -> None:
    """All hosts ping all hosts; exit 1 on any loss."""
    if experiment is None:
        names = known_experiments()
        if len(names) != 1:
            fail(f"name the experiment; up now: {', '.join(names) or 'none'}", 2, output)
        experiment = names[0]
    res = Emulation.attach(experiment).pingall(wait=wait)
    table = table_of(f"pingall {experiment}", "pairs", "failed", "loss %", "seconds")
    table.add_row(str(res.pairs), str(len(res.failed)), f"{res.loss_percent:.1f}", f"{res.seconds:.2f}")
    emit(res.to_dict(), output, table)
    if res.failed:
        if output == "table":
            err.print("failed pairs: " + ", ".join(f"{a}->{b}" for a, b in res.failed[:20]))
        sys.exit(1)


@cli.command()
@click.argument("source")
@CUSTOM
@click.option("--name", help="experiment name (default: the topology's name)")
@PROVISIONER
@cluster_options
@click.option("--junit", type=click.Path(dir_okay=False), help="write a JUnit XML report here")
@click.option("--wait", default=30.0, show_default=True, help="seconds pingall may retry while switches converge")
@OUTPUT
@guarded
def run(source: str, custom: str | None, name: str | None, provisioner: str, cluster_file: str | None, placement: str,
        parallel: int, accept_new: bool, junit: str | None, wait: float, output: str) -> None:
    """up, pingall, the file's checks, down. Exit 0 when everything passed, 1 otherwise."""
    topo = load_source(source, custom)
    results: list[CheckResult] = []
    t0 = time.perf_counter()
    emu = _emulation(topo, name, provisioner, cluster_file, placement, parallel, accept_new)
    try:
        _bring_up(emu, output)
        results.append(CheckResult("up", True, time.perf_counter() - t0,
                                   f"{len(emu.plan.nodes)} nodes, {len(emu.plan.links)} links"))
        ping = emu.pingall(wait=wait)
        results.append(CheckResult("pingall", not ping.failed, ping.seconds,
                                   f"{ping.pairs} pairs, {ping.loss_percent:.1f}% loss"
                                   + (f"; failed: {ping.failed[:10]}" if ping.failed else "")))
        for check in topo.checks:
            results.append(run_check(emu, check))
    except (CommandError, ClusterError, MachineError, WorkerError, AgentError, NodeStartError) as exc:
        results.append(CheckResult("up", False, time.perf_counter() - t0, str(exc)))
    finally:
        if emu.plan is not None:
            t1 = time.perf_counter()
            res = emu.down()
            results.append(CheckResult("down", res.clean, time.perf_counter() - t1,
                                       f"removed {res.removed}" + (f"; left {res.left}" if res.left else "")))
    passed = all(r.passed for r in results)
    if junit:
        Path(junit).write_text(junit_xml(f"cloudemu.{emu.name}", results))
    table = table_of(f"run {emu.name}: {'[green]PASS' if passed else '[red]FAIL'}", "step", "result", "seconds", "detail")
    for r in results:
        table.add_row(r.name, "[green]pass" if r.passed else "[red]fail", f"{r.seconds:.2f}", r.message)
    emit({"experiment": emu.name, "passed": passed, "results": [r.to_dict() for r in results],
          "timings": rounded(emu.timings)}, output, table)
    sys.exit(0 if passed else 1)


from emulator.cli_alcor import alcor  # noqa: E402 - registered last: it uses the helpers above

cli.add_command(alcor)
