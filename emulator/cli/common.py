"""What every command shares: output (tables or -o json), errors to exit codes, progress, options."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from emulator.api import Emulation
from emulator.compiler.placement import ALGORITHMS
from emulator.engines import ENGINES
from emulator.model import CloudemuError, Topology
from emulator.runtime.executor import CommandError
from emulator.runtime.journal import Journal
from emulator.topology.cluster import load_cluster
from emulator.topology.imports import from_mn_spec
from emulator.topology.loader import load_file

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


#: Past this many rows a table prints as plain aligned text: rich lays out 10,200 status rows in about 6 s.
PLAIN_ROWS = 500


def emit(data: Any, output: str, table: Table | str | None = None) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif isinstance(table, Table) and table.row_count > PLAIN_ROWS:
        click.echo(plain(table))
    elif table is not None:
        out.print(table)


def plain(table: Table) -> str:
    """The table as aligned text, its cells' markup (a colour prefix such as "[green]") dropped."""
    def text(cell: Any) -> str:
        cell = str(cell)
        return Text.from_markup(cell).plain if cell.startswith("[") else cell
    columns = [[str(c.header), *map(text, c.cells)] for c in table.columns]
    widths = [max(map(len, col)) for col in columns]
    rows = ["  ".join(col[i].ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()
            for i in range(table.row_count + 1)]
    return "\n".join(([str(table.title)] if table.title else []) + rows)


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
        except CloudemuError as exc:
            hint = exc.hint
            if isinstance(exc, CommandError) and _bringing_up and not _still_up():
                hint = "\nWhat had been made was removed; see the message above for the cause."
            fail(f"{exc}{hint}", exc.exit_code, output, **exc.details())
        except KeyboardInterrupt:
            fail(_interrupted(), 130, output)
    return wrapper


#: Experiments this command started to bring up: what an interrupt message has to speak of.
_bringing_up: list[str] = []


def _still_up() -> list[str]:
    """Of the experiments this command began to bring up, those whose journal is still there."""
    return [name for name in _bringing_up if Journal(name).exists()]


def _interrupted() -> str:
    """Say only what happened: removed, or still there (and how to remove it)."""
    if not _bringing_up:
        return "interrupted"
    still = _still_up()
    if still:
        return f"interrupted; {still[0]} may be partly up: 'cloudemu down {still[0]}' removes what was made"
    return "interrupted; what up had made was removed"


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


PROVISIONER = click.option("--provisioner", type=click.Choice(sorted(ENGINES)), default=None,
                           help="engine for hosts that do not name one (default: the file's defaults.provisioner, else netns)")


def deploy_options(fn):
    """What `up` and `run` both take: the topology, its name, the default engine and where to run."""
    for option in reversed([click.argument("source"), CUSTOM,
                            click.option("--name", help="experiment name (default: the topology's name)"),
                            PROVISIONER]):
        fn = option(fn)
    return cluster_options(fn)
