"""A compiled plan on disk: `plan.json` (the index) and one shard per machine under `shards/`.

A shard is a Plan in its JSON form, so the machine that runs it needs nothing
else. Shards are written one at a time (a million-node plan never sits in
memory as rows) and swapped in whole, so a directory never mixes two plans.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

from emulator.compiler.compile import Compiled, gc_paused
from emulator.compiler.plan import Plan
from emulator.model import CloudemuError

INDEX = "plan.json"
SHARDS = "shards"
OPTIONS = orjson.OPT_SORT_KEYS
#: Below this many nodes one process writes faster than forking workers.
PARALLEL_FROM_NODES = 50_000
_JOB: tuple[Compiled, Path, list] | None = None  # what forked writers inherit


@gc_paused()
def _write_shards(machines: list[int]) -> list[dict[str, Any]]:
    """Write the shards of `machines`; runs in the parent or in a forked worker."""
    compiled, staging, members = _JOB
    out = []
    for m in machines:
        _, nodes, local, cut_a, cut_b = members[m]
        machine = compiled.cluster.machines[m]
        shard = compiled.shard(m, members[m])
        (staging / f"{machine.name}.json").write_bytes(orjson.dumps(shard, option=OPTIONS))
        out.append({"machine": machine.name, "address": machine.address, "tunnel_ip": machine.tunnel_address,
                    "provisioner": shard["provisioner"], "shard": f"{SHARDS}/{machine.name}.json", "nodes": len(nodes),
                    "links": len(local), "tunnels": len(cut_a) + len(cut_b)})
    return out


class PlanDirError(CloudemuError, FileExistsError):
    exit_code = 2


def write_plan(compiled: Compiled, out: str | Path, on_shard: Callable[[int], None] | None = None,
               workers: int | None = None) -> dict[str, Any]:
    """Write every shard (over forked workers for big plans), then the index; returns the index.

    `on_shard(n)` is told each time n more shards are on disk.
    """
    global _JOB
    out = Path(out)
    ours = {INDEX, SHARDS, f".{SHARDS}.new", f".{SHARDS}.old", f"{INDEX}.new"}  # a run cut short leaves only these
    if out.exists() and any(p.name not in ours for p in out.iterdir()):
        raise PlanDirError(f"{out} exists and holds something other than a plan; pick an empty or new directory")
    staging = out / f".{SHARDS}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    members = list(compiled.machine_members())
    k = len(members)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if compiled.graph.n_nodes >= PARALLEL_FROM_NODES else 1
    chunks = [list(range(start, min(k, start + max(1, k // (workers * 8)))))
              for start in range(0, k, max(1, k // (workers * 8)))]
    by_machine: dict[str, dict[str, Any]] = {}
    _JOB = (compiled, staging, members)
    try:
        if workers > 1 and k > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                for done in as_completed([pool.submit(_write_shards, chunk) for chunk in chunks]):
                    rows = done.result()
                    by_machine.update((r["machine"], r) for r in rows)
                    if on_shard:
                        on_shard(len(rows))
        else:
            for chunk in chunks:
                rows = _write_shards(chunk)
                by_machine.update((r["machine"], r) for r in rows)
                if on_shard:
                    on_shard(len(rows))
    finally:
        _JOB = None
    machines = [by_machine[m.name] for m in compiled.cluster.machines]
    index = {"format": 1, "experiment": compiled.experiment, "tag": compiled.tag, "subnet": compiled.topo.subnet,
             "cluster": compiled.cluster.name, "placement": compiled.metrics, "machines": machines,
             "summary": compiled.topo.summary()}
    _swap_in(out, staging, orjson.dumps(index, option=OPTIONS | orjson.OPT_INDENT_2))
    return index


def _swap_in(out: Path, staging: Path, index: bytes) -> None:
    """plan.json present means its shards are the ones beside it: the old index goes first, the new one comes
    last, and in between the shard directories are swapped by renames (a crash leaves no index, never a
    mismatched one; the next write_plan clears up)."""
    new_index, old = out / f"{INDEX}.new", out / f".{SHARDS}.old"
    new_index.write_bytes(index)
    (out / INDEX).unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    if (out / SHARDS).exists():
        (out / SHARDS).rename(old)
    staging.rename(out / SHARDS)
    new_index.rename(out / INDEX)
    shutil.rmtree(old, ignore_errors=True)


def read_shard(path: str | Path) -> Plan:
    return Plan.from_dict(orjson.loads(Path(path).read_bytes()))


def read_index(out: str | Path) -> dict[str, Any]:
    return orjson.loads((Path(out) / INDEX).read_bytes())
