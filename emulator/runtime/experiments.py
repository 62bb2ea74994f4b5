"""What both ways of running an experiment share (this machine, machines over SSH): its errors, what
`down` returns, the tags in use, refusing one that exists, and the metadata its journal keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.model import CloudemuError, Topology
from emulator.runtime.journal import Journal, Resource
from emulator.runtime.state import known_experiments

#: The provisioner name a cluster experiment's controller journal carries.
CLUSTER = "cluster"


class ExperimentError(CloudemuError, RuntimeError):
    """The experiment is in the wrong state for what was asked (exists already, unknown)."""

    exit_code = 2


@dataclass
class DownResult:
    experiment: str
    removed: int
    left: list[Resource] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def clean(self) -> bool:
        return not self.left


def tags_in_use() -> set[str]:
    tags = set()
    for name in known_experiments():
        tag = Journal(name).meta().get("tag")
        if tag:
            tags.add(tag)
    return tags


def refuse_existing(name: str) -> None:
    if Journal(name).exists():
        raise ExperimentError(f"experiment {name!r} is already up; 'cloudemu down {name}' first, or pick another --name")


def topology_meta(topo: Topology) -> dict[str, Any]:
    return {"source": topo.source, "checks": [{"kind": c.kind, "args": c.args} for c in topo.checks]}

