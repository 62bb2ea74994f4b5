"""The command line: parse, call, print (a table, or JSON with -o json). Thin on purpose.

One module per family of commands (topology, images, lifecycle, alcor) on the helpers of `common`; this
module only puts them together."""

from __future__ import annotations

import signal
from typing import Any

import click

from emulator.cli import alcor, images, lifecycle, topology


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


for command in (topology.validate, topology.plan, topology.graph, images.image, lifecycle.up, lifecycle.down,
                lifecycle.status, lifecycle.doctor, lifecycle.exec_, lifecycle.pingall, lifecycle.run, alcor.alcor):
    cli.add_command(command)
