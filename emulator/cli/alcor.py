"""`cloudemu alcor ...`: the goal-state test controller."""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from emulator.api import Emulation
from emulator.cli.common import OUTPUT, emit, err, fail, guarded, table_of


@click.group()
def alcor() -> None:
    """Alcor roles: drive compute nodes' agents with goal states."""


def _ramp(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise click.BadParameter("expected FROM:TO in ports/s, e.g. 50:500") from None
    return a, b


@alcor.command("load")
@click.argument("experiment", required=False)
@click.option("--vpcs", type=click.IntRange(1, 100_000), default=2, show_default=True)
@click.option("--ports-per-vpc", type=click.IntRange(1, 1_000_000), default=10, show_default=True)
@click.option("--neighbours", type=click.Choice(["others", "all", "none"]), default="others", show_default=True,
              help="who learns of a port: every other host of its VPC, batch by batch (others); each host its VPCs' "
                   "whole table, encoded once per VPC, as Alcor's DPM sends it (all: one message per host); nobody (none)")
@click.option("--batch", type=click.IntRange(0, 10_000_000), default=0, show_default=True,
              help="ports per goal-state round (0: all ports in one message per host, as Alcor's test controller)")
@click.option("--rate", type=click.FloatRange(0, None), default=0.0, help="ports/s, constant (k6 constant-arrival-rate)")
@click.option("--ramp", help="ports/s FROM:TO, rising linearly over the run (k6 ramping-arrival-rate)")
@click.option("--concurrency", type=click.IntRange(1, 1024),
              help="goal-state messages in flight at once; every agent's stream is open  [default: twice the cores]")
@click.option("--samples", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="VM pairs pinged per check (same VPC must reach, other VPCs must not)")
@click.option("--target", help="HOST:PORT of one agent to drive instead of an experiment's (e.g. a real ACA)")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), help="write latency over time as a PNG here")
@OUTPUT
@guarded
def load(experiment: str | None, vpcs: int, ports_per_vpc: int, neighbours: str, batch: int, rate: float, ramp: str | None,
         concurrency: int | None, samples: int, target: str | None, plot_file: str | None, output: str) -> None:
    """Program VPCs x ports through the agents; report latency percentiles, ports/s and errors."""
    from emulator.alcor import controller
    from emulator.alcor import load as loadtest

    if rate and ramp:
        raise click.BadParameter("--rate and --ramp exclude each other")
    if neighbours == "all" and (batch or rate or ramp):
        raise click.BadParameter("--neighbours all sends one message per host, unpaced: no --batch, --rate or --ramp")
    spec = loadtest.LoadSpec(vpcs, ports_per_vpc, batch=batch, rate=rate, ramp=_ramp(ramp),
                             concurrency=concurrency or controller.DEFAULT_CONCURRENCY, samples=samples,
                             neighbours=neighbours)
    if experiment:
        prefix = f"ce.{experiment}."
        spec.run = loadtest.next_run([n[len(prefix):] for n in os.listdir("/run/netns") if n.startswith(prefix)]
                                     if os.path.isdir("/run/netns") else [])
    emu = None
    if target:
        host = target.rsplit(":", 1)[0]
        targets = {host: target}
        hosts = [host, *loadtest.fake_hosts(1)]  # half the ports "elsewhere": the agent gets neighbours to program
    elif experiment:
        emu = Emulation.attach(experiment)
        targets = controller.agent_targets(emu.plan)
        if not targets:
            fail(f"experiment {experiment} has no compute nodes (kind: compute) whose agents could take goal states", 2,
                 output)
        hosts = sorted(targets)
        lazy = controller.on_demand_hosts(emu.plan)
        if lazy and lazy != set(hosts):
            fail(f"experiment {experiment} mixes on-demand compute nodes with others: a load drives either kind, not "
                 "both", 2, output)
        if lazy:
            spec.neighbours = "none"  # each learned when a VM first needs it, through this load's own NCM
    else:
        fail("name an experiment (cloudemu alcor load EXP) or an agent (--target HOST:PORT)", 2, output)
    total = vpcs * ports_per_vpc
    with Progress(TextColumn("goal states"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  disable=output == "json" or not err.is_terminal) as bar:
        task = bar.add_task("ports", total=total)
        push = functools.partial(emu.target.push_messages, emu.plan) if emu is not None else None
        result = loadtest.run(spec, targets, hosts, progress=lambda n: bar.advance(task, n), push=push)
    if emu is not None and samples:
        full = {ip for ip, n in controller.agent_nodes(emu.plan).items() if "compute" in n.options}
        ports = [p for p in loadtest.generate_ports(spec, hosts) if p.host_ip in full]  # only full nodes make VMs
        with _ncm_if_on_demand(emu, ports, output) as asked:
            result.reach = loadtest.sample_reachability(ports, loadtest.vm_pinger(emu.plan, emu.target.run), samples)
        result.on_demand = asked()
    if plot_file:
        loadtest.plot(result, plot_file)
    summary = result.summary()
    table = table_of(f"alcor load: {summary['ports']} ports in {summary['messages']} messages", "measure", "value")
    table.add_row("wall time", f"{summary['seconds']} s")
    table.add_row("ports/s", str(summary["ports_per_s"]))
    for key in ("port_latency_ms", "message_latency_ms", "agent_time_ms"):
        q = summary[key]
        if q:
            table.add_row(key.replace("_", " "), f"p50 {q['p50']}  p90 {q['p90']}  p99 {q['p99']}  max {q['max']}")
    table.add_row("errors", str(summary["errors"]) + ("" if not summary["first_errors"] else
                                                      f" (first: {summary['first_errors'][0]})"))
    if summary.get("on_demand"):
        od = summary["on_demand"]
        table.add_row("on-demand lookups", f"{od['requests']} asked: {od['answered']} answered, {od['unknown']} unknown, "
                                           f"{od['failed']} failed; answer p50 {od['answer_ms']['p50']} "
                                           f"p90 {od['answer_ms']['p90']} max {od['answer_ms']['max']} ms")
    if summary["pending"]:
        table.add_row("pending", f"{summary['pending']} (the agent answered PENDING: it keeps trying, as ACA does)")
    reach = summary["reachability"]
    if reach:
        table.add_row("same VPC pings", f"{reach['same_vpc_sampled'][0] - len(reach['same_vpc_failed'])}/"
                                        f"{reach['same_vpc_sampled'][0]} answered")
        table.add_row("other VPC pings", f"{len(reach['other_vpc_reached'])}/{reach['other_vpc_sampled'][0]} answered "
                                         "(must be 0)")
    emit(summary, output, table)
    bad = summary["errors"] or (reach and (reach["same_vpc_failed"] or reach["other_vpc_reached"]))
    sys.exit(1 if bad else 0)


@contextlib.contextmanager
def _ncm_if_on_demand(emu: Emulation, ports: list, output: str):
    """For the pings of a load on on-demand compute nodes: the NCM they ask, knowing the load's ports; yields what
    gives its counts once it stopped (None without on-demand nodes)."""
    from emulator.alcor import controller
    from emulator.alcor import ncm as ncm_role

    if not controller.on_demand_hosts(emu.plan):
        yield lambda: None
        return
    try:
        server, served = ncm_role.serve(emu.plan, ports)
    except RuntimeError as exc:
        fail(f"{exc} (a load on on-demand nodes serves its own NCM)", 1, output)
    try:
        yield served.summary
    finally:
        ncm_role.stop(server, emu.plan)


@alcor.command("state")
@click.argument("experiment")
@click.argument("node")
@OUTPUT
@guarded
def state(experiment: str, node: str, output: str) -> None:
    """One hollow compute node's recorded state: VPCs, subnets, ports, neighbours, and the flows it models."""
    emu = Emulation.attach(experiment)
    pack = next((n for n in emu.plan.nodes if any(name == node for name, _ in n.options.get("hollow", {}).get("nodes", ()))),
                None)
    if pack is None:
        fail(f"{node} is not a hollow compute node of experiment {experiment}", 2, output)
    answer = emu.target.ask_packs(emu.plan, {pack.name: {"op": "state", "node": node}})[pack.name]
    if isinstance(answer, Exception):
        fail(f"the process serving {node} ({pack.name} on {pack.machine}) does not answer: {answer}; "
             f"'cloudemu status {experiment}' says whether it runs", 1, output)
    if "error" in answer:
        fail(f"{pack.name}: {answer['error']}", 1, output)
    table = table_of(f"hollow compute node {node} ({answer['host_ip']})", "measure", "value")
    for key in ("messages", "errors", "neighbours"):
        table.add_row(key, str(answer[key]))
    table.add_row("VPCs", ", ".join(answer["vpcs"]) or "none")
    table.add_row("ports", ", ".join(answer["ports"]) or "none")
    table.add_row("flows (br-tun)", str(len(answer["flows"])))
    emit(answer, output, table)


@alcor.command("ncm")
@click.argument("experiment")
@click.option("--seconds", type=click.FloatRange(min=0.1), help="serve this long (default: until Ctrl-C or SIGTERM)")
@OUTPUT
@guarded
def ncm(experiment: str, seconds: float | None, output: str) -> None:
    """Serve as Alcor's NCM for the experiment's on-demand compute nodes: a VM's first packet to an unknown
    destination makes its agent ask here (RequestGoalStates); the neighbour is pushed to it. Prints what was asked."""
    import signal
    import threading

    from emulator.alcor import ncm as ncm_role

    emu = Emulation.attach(experiment)
    try:
        server, served = ncm_role.serve(emu.plan)
    except ValueError as exc:
        fail(str(exc), 2, output)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if output != "json":
        err.print(f"serving {len(ncm_role.sockets(emu.plan))} on-demand compute node(s) of {experiment}; Ctrl-C to stop")
    done.wait(seconds)
    ncm_role.stop(server, emu.plan)
    answer = served.summary()
    table = table_of(f"on-demand lookups of {experiment}", "measure", "value")
    for key in ("requests", "answered", "unknown", "failed"):
        table.add_row(key, str(answer[key]))
    table.add_row("answer time p50 / p90 / max (ms)", " / ".join(str(answer["answer_ms"][k]) for k in ("p50", "p90", "max")))
    emit(answer, output, table)


@alcor.command("calibrate")
@click.argument("experiment")
@click.option("--node", help="the full compute node to measure  [default: the first]")
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True, help="times each message shape is sent")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="write the model here (JSON), for 'alcor delays'")
@click.option("--apply/--no-apply", default=True, show_default=True,
              help="have the experiment's hollow compute nodes answer by the model from now on")
@OUTPUT
@guarded
def calibrate(experiment: str, node: str | None, repeats: int, out_file: str | None, apply: bool, output: str) -> None:
    """Measure a full compute node's agent (per message, per port, per neighbour) as a model for hollow nodes."""
    import json

    from emulator.alcor import calibrate as calib
    from emulator.alcor import controller
    from provisioners.kinds import hollow

    emu = Emulation.attach(experiment)
    full = [n for n in controller.agent_nodes(emu.plan).values() if "compute" in n.options]
    if node:
        full = [n for n in full if n.name == node]
    if not full:
        fail(f"experiment {experiment} has no full compute node{' ' + node if node else ''} on this machine to measure "
             "(kind: compute, agent: builtin)", 2, output)
    measured = full[0]
    host = measured.ip.split("/")[0]
    with err.status(f"measuring {measured.name}'s agent ({len(calib.SHAPES) * repeats * 2} messages)",
                    spinner="dots") if output != "json" else contextlib.nullcontext():
        model = {"node": measured.name, **calib.fit(calib.measure(controller.agent_targets(emu.plan)[host], host, repeats))}
    if out_file:
        with open(out_file, "w") as f:
            json.dump(model, f, indent=2)
    took, missed = hollow.set_delays(emu.plan, model, emu.target.ask_packs) if apply else ([], [])
    model["applied_to"], model["not_reached"] = took, missed
    table = table_of(f"agent model of {measured.name} ({model['machine']}, {model['cores']} cores)", "measure", "value")
    table.add_row("per message", f"{model['per_message_ms']} ms")
    table.add_row("per port", f"{model['per_port_ms']} ms")
    table.add_row("per neighbour", f"{model['per_neighbour_us']} us")
    table.add_row("hollow packs answering by it", f"{len(took)}" + (f" ({len(missed)} not reached)" if missed else ""))
    emit(model, output, table)


@alcor.command("delays")
@click.argument("experiment")
@click.argument("model", type=click.Path(dir_okay=False, allow_dash=False))
@OUTPUT
@guarded
def delays(experiment: str, model: str, output: str) -> None:
    """Have an experiment's hollow compute nodes answer by a calibrated model (a file from 'alcor calibrate
    --out'), or as fast as they can (MODEL: off)."""
    import json

    from provisioners.kinds import hollow

    emu = Emulation.attach(experiment)
    figures = None
    if model != "off":
        try:
            with open(model) as f:
                figures = json.load(f)
        except (OSError, ValueError) as exc:
            fail(f"{model}: not a model file ({exc}); make one with 'cloudemu alcor calibrate EXP --out FILE'", 2, output)
    try:
        took, missed = hollow.set_delays(emu.plan, figures, emu.target.ask_packs)
    except ValueError as exc:
        fail(f"{model}: {exc}", 2, output)
    answer = {"model": figures, "applied_to": took, "not_reached": missed}
    table = table_of(f"hollow compute nodes of {experiment}", "measure", "value")
    table.add_row("delays", "off" if figures is None else
                  ", ".join(f"{k} {figures[k]}" for k in ("per_message_ms", "per_port_ms", "per_neighbour_us")))
    table.add_row("packs", f"{len(took)}" + (f" ({len(missed)} not reached)" if missed else ""))
    emit(answer, output, table)
    sys.exit(1 if missed else 0)
