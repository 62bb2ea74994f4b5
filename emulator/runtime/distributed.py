"""A cluster experiment: compile once, preflight every machine, deploy the shards in parallel, undo anywhere.

The controller's journal records the experiment, its shards and one resource per
machine; each machine's worker journals what it makes there. A machine that
cannot be reached during `down` stays in the controller's journal, so the next
`down` finishes the job.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from emulator.compiler.compile import compile_cluster
from emulator.compiler.plan import Plan
from emulator.model import CloudemuError, Cluster, LxdCluster, Machine, Topology, Where
from emulator.runtime.events import Phases
from emulator.runtime.experiments import CLUSTER, DownResult, ExperimentError, refuse_existing, tags_in_use, topology_meta
from emulator.runtime.hostinfo import reserved_networks
from emulator.runtime.journal import Journal, Resource
from emulator.runtime.ssh import MachineError
from emulator.runtime.state import experiment_lock, locked, tag_candidates
from emulator.runtime.workers import WorkerError, Workers, errors_of

VXLAN_PORT = 4789


class ClusterError(CloudemuError, RuntimeError):
    """Something failed on some machines; says which, why, and what is left where."""

    def __init__(self, message: str, failures: dict[str, Exception], exit_code: int = 2,
                 report: dict[str, Any] | None = None):
        self.failures, self.exit_code, self.report = failures, exit_code, report or {}
        lines = [message] + [f"  {name}: {_plain(exc)}" for name, exc in sorted(failures.items())]
        super().__init__("\n".join(lines))

    def details(self) -> dict[str, Any]:
        return self.report


def _plain(exc: Exception) -> str:
    text = str(exc)
    prefix = f"machine {getattr(exc, 'machine', '')}: "
    return text[len(prefix):] if text.startswith(prefix) else text


@dataclass
class ClusterUp:
    plan: Plan  # every machine's shard merged: the experiment as the API sees it
    shards: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    round_trips: dict[str, int] = field(default_factory=dict)
    machine_timings: dict[str, dict[str, float]] = field(default_factory=dict)
    lxd_requests: dict[str, int] = field(default_factory=dict)  # LXD API requests each machine's worker made


# -- checks on facts (doctor and up share them) -----------------------------------
def machine_problems(machine: Machine, facts: dict[str, Any], *, tunnels: bool) -> list[str]:
    out = []
    if not facts.get("root"):
        out.append("not root: cloudemu needs root there (namespaces, veth, OVS); log in as root")
    if facts.get("ovs") != "running":
        out.append(str(facts.get("ovs")))
    if tunnels:
        if machine.tunnel_address not in facts.get("addresses", []):
            out.append(f"tunnel address {machine.tunnel_address} is not an address of this machine "
                       f"({', '.join(a for a in facts.get('addresses', []) if not a.startswith('127.'))}); set tunnel_ip")
        udp = facts.get("udp", {}).get(str(VXLAN_PORT), "free")
        if udp not in ("free", "vxlan"):
            out.append(f"UDP port {VXLAN_PORT} (VXLAN) is {udp} by another program")
        if machine.underlay:
            mtu = facts.get("mtu", {}).get(machine.underlay)
            if mtu is None:
                out.append(f"underlay interface {machine.underlay} does not exist")
            elif mtu < machine.mtu:
                out.append(f"underlay {machine.underlay} has MTU {mtu}, the inventory says {machine.mtu}: "
                           "lower mtu in the inventory")
    return out


def doctor(cluster: Cluster, *, accept_new: bool = False, parallel: int = 16) -> list[dict[str, Any]]:
    """Every machine's preflight without a plan: reachable, root, OVS, VXLAN port, MTU, addresses."""
    workers = Workers(cluster, accept_new=accept_new, parallel=parallel)
    try:
        results = workers.each([m.name for m in cluster.machines], lambda _: _facts_request(cluster))
    finally:
        workers.close()
    rows = []
    for m in cluster.machines:
        r = results[m.name]
        if isinstance(r, Exception):
            rows.append({"machine": m.name, "address": m.address, "ok": False, "problems": [_plain(r)]})
            continue
        problems = machine_problems(m, r, tunnels=len(cluster.machines) > 1)
        rows.append({"machine": m.name, "address": m.address, "ok": not problems, "problems": problems,
                     "datapath": r["datapath"], "python": r["python"], "experiments": r["experiments"],
                     "round_trips": workers.round_trips().get(m.name, 0)})
    if cluster.lxd:
        _with_lxd_members(cluster, rows)
    return rows


def _with_lxd_members(cluster: Cluster, rows: list[dict[str, Any]]) -> None:
    """Each machine's row gains its LXD member's checks; the cluster's own problems (unreachable, untrusted) are a
    row of their own."""
    from emulator.runtime import lxdcluster
    from provisioners import images

    by_member = {r["member"]: r for r in lxdcluster.doctor(cluster, images.lxd_alias(images.DEFAULT_IMAGE))}
    for row in rows:
        member = by_member.pop(row["machine"], None)
        if member is not None:
            row["lxd"] = {k: member.get(k) for k in ("status", "version", "image", "image_replicas", "url")}
            row["problems"] += [f"LXD: {p}" for p in member["problems"]]
            row["ok"] = row["ok"] and member["ok"]
    rows += [{"machine": f"{name} (LXD member not in the inventory: nothing is placed there)",
              "address": r.get("url", cluster.lxd.endpoint), "ok": r["ok"], "problems": [f"LXD: {p}" for p in r["problems"]]}
             for name, r in by_member.items()]


def _facts_request(cluster: Cluster) -> dict[str, Any]:
    return {"command": "facts", "udp_ports": [VXLAN_PORT]}


# -- up ----------------------------------------------------------------------------
def deploy_cluster(topo: Topology, cluster: Cluster, *, experiment: str | None = None, placement: str = "metis",
                   provisioner: str | None = None, parallel: int = 16, accept_new: bool = False,
                   phases: Phases | None = None, after_preflight=None) -> ClusterUp:
    """Nothing is created anywhere unless every machine passed its preflight; a failure later undoes it all.
    The experiment's lock is held throughout: a `down` of it waits until this has finished."""
    name = experiment or topo.name
    with experiment_lock(name, wait=0, doing="up"):
        return _deploy_cluster(topo, cluster, name, placement, provisioner, parallel, accept_new, phases or Phases(),
                               after_preflight)


def _deploy_cluster(topo: Topology, cluster: Cluster, name: str, placement: str, provisioner: str | None, parallel: int,
                    accept_new: bool, phases: Phases, after_preflight) -> ClusterUp:
    journal = Journal(name)
    workers = Workers(cluster, accept_new=accept_new, parallel=parallel)
    try:
        with locked():
            refuse_existing(name)
            with phases.phase("connect", total=len(cluster.machines)) as step:
                facts = workers.each([m.name for m in cluster.machines], lambda _: _facts_request(cluster))
                step.advance(len(cluster.machines))
            _refuse_on(facts, cluster, "cannot start: a machine is unreachable or not ready; nothing was created")
            with phases.phase("compile"):
                compiled = compile_cluster(topo, cluster, placement=placement, experiment=name,
                                           tag=_free_tag(name, facts), reserved=_reserved(facts),
                                           provisioner=provisioner, vni_base=_free_vni_base(facts))
                shards = {m["machine"]: compiled.shard(i) for i, m in enumerate(compiled.machines_summary())
                          if m["nodes"] or m["tunnels"]}
            with phases.phase("preflight", total=len(shards)) as step:
                checked = workers.each(shards, lambda m: {"command": "preflight", "plan": shards[m]})
                step.advance(len(shards))
            errors = errors_of(checked)
            if errors:
                raise ClusterError("preflight failed; nothing was created on any machine:", errors,
                                   exit_code=max(getattr(e, "exit_code", 2) for e in errors.values()))
            metrics = dict(compiled.metrics)
            journal.create({**topology_meta(topo), "experiment": name, "tag": compiled.tag, "provisioner": CLUSTER,
                            "cluster": cluster_to_dict(cluster), "shards": shards, "placement": placement,
                            "metrics": metrics, "status": "creating"})
            journal.plan([Resource("machine", m, machine=m) for m in shards])
        if after_preflight:
            after_preflight()
        made, lxd_requests = _deploy_shards(workers, journal, shards, phases)
        return ClusterUp(merge_shards(name, shards), shards, metrics, workers.round_trips(), made, lxd_requests)
    finally:
        workers.close()


def _deploy_shards(workers: Workers, journal: Journal, shards: dict[str, dict[str, Any]],
                   phases: Phases) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    total = sum(2 * sum(1 for n in s["nodes"] if n["kind"] == "host") + len(s["links"]) + len(s["tunnels"])
                + sum(1 for n in s["nodes"] if n["kind"] != "host") for s in shards.values())
    with phases.phase("deploy", total=total) as step:
        def progress(machine: str, ev: dict[str, Any]) -> None:
            if ev["ev"] == "advance":
                step.advance(ev["n"])

        def request(m: str) -> dict[str, Any]:
            journal.mark([Resource("machine", m, machine=m)], "created")  # from here on, things may exist there
            return {"command": "up", "plan": shards[m]}

        results = workers.each(shards, request, progress, stop_on_error=True)
    errors = errors_of(results)
    if not errors:
        timings = {m: r["timings"] for m, r in results.items()}
        journal.set_meta(status="up", machine_timings=timings, round_trips=workers.round_trips())
        return timings, {m: r.get("lxd_requests", 0) for m, r in results.items()}
    journal.set_meta(status="failed")
    cleanup = destroy_cluster(journal.experiment, Phases(), workers=workers)
    report = {m: ("failed: " + _plain(errors[m])) if m in errors else
              ("not started" if m not in results else "was up") for m in shards}
    left = sorted({r.machine for r in cleanup.left})
    tail = (f"removed everything on the reachable machines; still left on {', '.join(left)} (recorded: "
            f"'cloudemu down {journal.experiment}' finishes when they are back)") if left else \
        "everything made was removed again"
    raise ClusterError(f"up failed on {', '.join(sorted(errors))}; {tail}:", errors,
                       exit_code=1, report={"machines": report, "left_on": left})


def _down_reply_ok(res: Any) -> bool:
    return (isinstance(res, dict) and isinstance(res.get("left"), list) and isinstance(res.get("removed", 0), int)
            and all(isinstance(x, list) for x in res["left"]))


def _refuse_on(facts: dict[str, Any], cluster: Cluster, message: str) -> None:
    problems: dict[str, Exception] = errors_of(facts)
    for m in cluster.machines:
        r = facts[m.name]
        if not isinstance(r, Exception):
            found = machine_problems(m, r, tunnels=len(cluster.machines) > 1)
            if found:
                problems[m.name] = RuntimeError("; ".join(found))
    if problems:
        raise ClusterError(message, problems)


def _free_tag(experiment: str, facts: dict[str, Any]) -> str:
    used = tags_in_use() | {t for f in facts.values() for t in f["tags"]}
    for tag in tag_candidates(experiment):
        if tag not in used:
            return tag
    raise ExperimentError("no free experiment tag left on these machines")


def _free_vni_base(facts: dict[str, Any]) -> int:
    """Above every VNI in use on any machine (and in this controller's live experiments): no two bind one id."""
    used = [v for f in facts.values() for v in f["vnis"]]
    return max(used, default=0) + 1


def _reserved(facts: dict[str, Any]) -> list[tuple[ipaddress.IPv4Network, str]]:
    out = list(reserved_networks())
    for name, f in facts.items():
        out += [(ipaddress.ip_network(net), f"{why} on {name}") for net, why in f["reserved"]]
    return out


# -- down --------------------------------------------------------------------------
def destroy_cluster(experiment: str, phases: Phases | None = None, *, workers: Workers | None = None,
                    accept_new: bool = False) -> DownResult:
    """Each machine removes what its own journal names; unreachable ones stay recorded for the next `down`."""
    phases = phases or Phases()
    journal = Journal(experiment)
    meta = journal.meta()
    own = workers is None
    workers = workers or Workers(cluster_from_dict(meta["cluster"]), accept_new=accept_new)
    pending = [r for r in journal.resources() if r.kind == "machine"]
    try:
        with phases.phase("down", total=len(pending)) as step:
            results = workers.each([r.name for r in pending], lambda _: {"command": "down", "experiment": experiment})
            step.advance(len(pending))
    finally:
        if own:
            workers.close()
    left, removed = [], 0
    for r in pending:
        res = results[r.name]
        if not isinstance(res, Exception) and not _down_reply_ok(res):  # only a well-formed "nothing left" forgets it
            res = WorkerError(r.name, "failure", f"an unexpected reply to down: {str(res)[:200]}")
        if isinstance(res, Exception) or res.get("left"):
            left.append(dataclasses.replace(r, netns=_plain(res) if isinstance(res, Exception) else
                                            f"{len(res['left'])} resources left"))
        else:
            removed += res.get("removed", 0)
    journal.mark([r for r in pending if r.name not in {x.name for x in left}], "removed")
    if meta["cluster"].get("lxd"):
        planned = {n["options"]["container"] for shard in meta["shards"].values() for n in shard["nodes"]
                   if n.get("options", {}).get("engine") == "lxd"}
        swept, sweep_left = _sweep_lxd(LxdCluster(**meta["cluster"]["lxd"]), experiment, planned)
        removed += swept
        left += sweep_left
    if left:
        journal.set_meta(status="partial")
    else:
        journal.remove()
    return DownResult(experiment, removed, left, phases.timings)


def _sweep_lxd(lxd: LxdCluster, experiment: str, planned: set[str]) -> tuple[int, list[Resource]]:
    """The cluster's own view after each machine removed its instances: any the marker still names, on any member
    (a member whose machine could not be reached, an instance made as a worker failed), removed where it can be."""
    from emulator.runtime import lxdcluster

    try:
        removed, left = lxdcluster.sweep(lxd, experiment, planned)
    except lxdcluster.LxdClusterError as exc:
        return 0, [Resource("lxd-cluster", lxd.endpoint or lxd.socket or "", netns=str(exc), machine="lxd")]
    return removed, [Resource("lxd-instance", name, netns=why, machine=member) for name, (member, why) in left.items()]


# -- using it ----------------------------------------------------------------------
def merge_shards(experiment: str, shards: dict[str, dict[str, Any]]) -> Plan:
    plans = [Plan.from_dict(s) for s in shards.values()]
    first = plans[0]
    return Plan(experiment, first.tag, first.subnet, [n for p in plans for n in p.nodes],
                [lk for p in plans for lk in p.links], provisioner=CLUSTER, machine=CLUSTER,
                tunnels=[t for p in plans for t in p.tunnels], vms=[v for p in plans for v in p.vms])


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    return {"name": cluster.name, "source": cluster.source, "known_hosts": cluster.known_hosts,
            "machines": [{k: v for k, v in dataclasses.asdict(m).items() if k != "where"} for m in cluster.machines],
            **({"lxd": cluster.lxd.to_dict()} if cluster.lxd else {})}


def cluster_from_dict(d: dict[str, Any]) -> Cluster:
    return Cluster(d["name"], [Machine(**m, where=Where()) for m in d["machines"]], d.get("source"), d.get("known_hosts"),
                   LxdCluster(**d["lxd"]) if d.get("lxd") else None)


def ping_pairs(workers: Workers, experiment: str, by_machine: dict[str, list[list[str]]], *, timeout: float,
               wait: float) -> list[list[str]]:
    """[source node, destination ip] pairs, pinged from their source's machine: the pairs that failed."""
    results = workers.each(by_machine, lambda m: {"command": "ping", "experiment": experiment, "pairs": by_machine[m],
                                                  "timeout": timeout, "wait": wait})
    failed: list[list[str]] = []
    for m, r in results.items():
        if isinstance(r, Exception):
            failed += by_machine[m]
        else:
            failed += r["failed"]
    return failed


def shard_status(workers: Workers, experiment: str, machines: list[str]) -> dict[str, Any]:
    return workers.each(machines, lambda _: {"command": "status", "experiment": experiment})


__all__ = ["ClusterError", "ClusterUp", "MachineError", "WorkerError", "deploy_cluster", "destroy_cluster", "doctor"]
