"""Bring a Plan up and down on this machine: tag allocation, journal, preflight, the provisioner, clean-up on failure.

A cluster's controller (distributed.py) and each of its machines' workers build on the same steps."""

from __future__ import annotations

from typing import Any

from emulator.compiler.compile import compile_topology
from emulator.compiler.plan import Plan
from emulator.model import Topology
from emulator.runtime.events import Phases
from emulator.runtime.experiments import CLUSTER, DownResult, ExperimentError, refuse_existing, tags_in_use, topology_meta
from emulator.runtime.hostinfo import reserved_networks
from emulator.runtime.journal import Journal
from emulator.runtime.state import experiment_lock, locked, tag_candidates
from provisioners import Provisioner
from provisioners import devices as net_devices
from provisioners import get as get_provisioner


def _free_tag(experiment: str) -> str:
    used = tags_in_use()
    devices = net_devices.names()
    for tag in tag_candidates(experiment):
        if tag not in used and not any(d.startswith(tag + "-") for d in devices):
            return tag
    raise ExperimentError("no free experiment tag left; run 'cloudemu down --all'")


def deploy(topo: Topology, *, experiment: str | None = None, provisioner: str | None = None,
           phases: Phases | None = None) -> Plan:
    """Compile, preflight, journal, create. On any failure, remove what was made and re-raise."""
    phases = phases or Phases()
    name = experiment or topo.name
    with experiment_lock(name, wait=0, doing="up"):
        with locked():
            refuse_existing(name)
            with phases.phase("compile"):
                plan = compile_topology(topo, experiment=name, tag=_free_tag(name), reserved=reserved_networks(),
                                        provisioner=provisioner)
            _preflight_and_journal(plan, topology_meta(topo), phases)
        return _create(plan, phases)


def deploy_plan(plan: Plan, meta: dict[str, Any], phases: Phases | None = None) -> Plan:
    """A plan compiled elsewhere (one machine's shard of a cluster experiment): the same steps from preflight on."""
    phases = phases or Phases()
    with experiment_lock(plan.experiment, wait=0, doing="up"):
        with locked():
            refuse_existing(plan.experiment)
            if plan.tag in tags_in_use():
                raise ExperimentError(f"experiment tag {plan.tag!r} is in use on this machine by another experiment")
            _preflight_and_journal(plan, meta, phases)
        return _create(plan, phases)


def _preflight_and_journal(plan: Plan, meta: dict[str, Any], phases: Phases) -> None:
    engine = get_provisioner(plan.provisioner)
    with phases.phase("preflight"):
        engine.preflight(plan)
    Journal(plan.experiment).create({**meta, "experiment": plan.experiment, "tag": plan.tag,
                                     "provisioner": plan.provisioner, "plan": plan.to_dict(), "status": "creating"})


def _create(plan: Plan, phases: Phases) -> Plan:
    journal = Journal(plan.experiment)
    try:
        get_provisioner(plan.provisioner).create(plan, journal, phases)
    except BaseException:
        journal.set_meta(status="failed")
        destroy(plan.experiment, Phases())
        raise
    journal.set_meta(status="up", timings=phases.timings)
    return plan


def destroy(experiment: str, phases: Phases | None = None, *, wait: float | None = None) -> DownResult:
    """Remove what the experiment's journal and markers name; forget it once nothing is left.

    Waits (up to `wait` seconds; None: as long as it takes) for an `up` or `down` of the same experiment
    to finish first. An experiment that is not (or no longer) up is an empty result, not an error."""
    phases = phases or Phases()
    journal = Journal(experiment)
    with experiment_lock(experiment, wait=wait, doing="down"):
        if not journal.exists():
            return sweep(experiment, phases)
        meta = journal.meta()
        if meta.get("provisioner") == CLUSTER:
            raise ExperimentError(f"{experiment!r} runs across machines: its controller removes it (targets.destroy)")
        engine: Provisioner = get_provisioner(meta.get("provisioner", "netns"))
        journaled = journal.resources()
        left = engine.destroy(experiment, journaled, phases)
        if not any(r.kind == "unchecked" for r in left):  # what could not be looked at may still hold any of them
            journal.mark([r for r in journaled if r not in left], "removed")
        if left:
            journal.set_meta(status="partial")
        else:
            journal.remove()
    return DownResult(experiment, len(journaled) - len(left), left, phases.timings)


def sweep(experiment: str, phases: Phases) -> DownResult:
    """No journal (never up, already down, or the state directory lost): remove whatever still carries the
    experiment's markers on this machine: namespaces, devices, OVS bridges, containers, its directories."""
    every_engine: Provisioner = get_provisioner("netns")  # the Deployer: namespaces, OVS and every container engine
    found, unasked = every_engine.owned(experiment)
    note = "not up" if not found else "no journal: removed what carries its markers"
    if unasked:
        note += "; could not ask " + "; ".join(unasked)
    left = every_engine.destroy(experiment, [], phases) if found else []
    return DownResult(experiment, len(found) - len(left), left, phases.timings, note)


def load_plan(experiment: str) -> Plan:
    journal = Journal(experiment)
    if not journal.exists():
        raise ExperimentError(f"no experiment named {experiment!r}; 'cloudemu status' lists them")
    return Plan.from_dict(journal.meta()["plan"])
