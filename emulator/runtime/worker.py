"""The machine's side of a cluster experiment: one request on stdin, JSON lines out.

The controller ships this package (bundle.py) and runs `python worker.pyz`, sending
one JSON request: {"command": facts|preflight|up|down|status|ping, ...}. Progress
goes out as {"ev": "start"|"advance"|"finish", ...} lines while the work runs; the
last line is {"ev": "result", ...} or {"ev": "error", ...}. Each machine keeps its
own journal, so `down` works from the machine's own record even if the controller's
is gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from emulator.compiler.plan import Plan
from emulator.runtime import orchestrator
from emulator.runtime.events import Phases
from emulator.runtime.hostinfo import reserved_networks
from emulator.runtime.journal import Journal


def emit(event: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass  # the controller went away: carry on, the journal records what is made


class StreamSink:
    """Progress as JSON lines, at most every 50 ms per phase (a 10,000-node shard must not flood the session)."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def start(self, phase: str, total: int) -> None:
        emit({"ev": "start", "phase": phase, "total": total})

    def advance(self, phase: str, amount: int) -> None:
        self.pending[phase] = self.pending.get(phase, 0) + amount
        now = time.monotonic()
        if now - self.last.get(phase, 0.0) > 0.05:
            self._flush(phase)
            self.last[phase] = now

    def _flush(self, phase: str) -> None:
        n = self.pending.pop(phase, 0)
        if n:
            emit({"ev": "advance", "phase": phase, "n": n})

    def finish(self, phase: str, seconds: float) -> None:
        self._flush(phase)
        emit({"ev": "finish", "phase": phase, "seconds": seconds})


# -- commands ---------------------------------------------------------------------
def facts(req: dict[str, Any]) -> dict[str, Any]:
    """What the controller needs before it compiles: networks, tags and VNIs taken, engines, OVS."""
    from emulator.runtime.state import known_experiments
    from provisioners import devices
    from provisioners.fabric import Fabric

    netns = Fabric()
    tags = {Journal(name).meta().get("tag") for name in known_experiments()}
    names = devices.names()
    tags |= {d[:3] for d in names if len(d) > 4 and d[3] == "-"}
    ovs = netns._ovs_problems(Plan("probe", "xxx", "10.0.0.0/8"))
    local_ips = _local_addresses()
    return {
        "machine": os.environ.get("CLOUDEMU_MACHINE") or socket.gethostname(),
        "root": os.geteuid() == 0,
        "python": sys.version.split()[0],
        "reserved": [[str(net), why] for net, why in reserved_networks()],
        "tags": sorted(t for t in tags if t),
        "vnis": sorted(devices.vxlan_ids()),
        "ovs": "running" if not ovs else ovs[0],
        "datapath": "kernel" if netns.kernel_datapath() else "userspace",
        "addresses": local_ips,
        "mtu": _mtus(),
        "udp": {str(p): _udp_free(p, req.get("tunnel_ip")) for p in req.get("udp_ports", [])},
        "experiments": known_experiments(),
    }


def _local_addresses() -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)]


def _mtus() -> dict[str, int]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_MTU") for link in ipr.get_links()}


def _udp_free(port: int, address: str | None) -> str:
    """'free', 'vxlan' (the kernel's VXLAN socket: shared by VNI), or who holds it."""
    from provisioners import devices

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address or "0.0.0.0", port))
        return "free"
    except OSError as exc:
        return "vxlan" if devices.vxlan_ids() else f"taken ({exc.strerror})"
    finally:
        sock.close()


def preflight(req: dict[str, Any]) -> dict[str, Any]:
    from provisioners import get

    plan = Plan.from_dict(req["plan"])
    if Journal(plan.experiment).exists():
        raise orchestrator.ExperimentError(f"experiment {plan.experiment!r} is already up on this machine")
    get(plan.provisioner).preflight(plan)
    return {"ok": True}


def up(req: dict[str, Any]) -> dict[str, Any]:
    plan = Plan.from_dict(req["plan"])
    phases = Phases(StreamSink())
    orchestrator.deploy_plan(plan, {"controller": req.get("controller", {})}, phases)
    from provisioners.lxd import REQUESTS

    return {"timings": phases.timings, "lxd_requests": REQUESTS.made}


def down(req: dict[str, Any]) -> dict[str, Any]:
    name = req["experiment"]
    known = Journal(name).exists()
    result = orchestrator.destroy(name, Phases(StreamSink()))  # without a journal: what carries its markers
    return {"removed": result.removed, "left": [list(r.__dict__.values()) for r in result.left],
            "timings": result.timings, "known": known, "note": result.note}


def status(req: dict[str, Any]) -> dict[str, Any]:
    from provisioners import get

    plan = orchestrator.load_plan(req["experiment"])
    return {"nodes": [s.__dict__ for s in get(plan.provisioner).status(plan)]}


def ping(req: dict[str, Any]) -> dict[str, Any]:
    """Pairs [source node, destination ip]: which fail, retried until `wait` seconds pass."""
    from emulator.runtime.pings import failing_pairs
    from provisioners import get

    plan = orchestrator.load_plan(req["experiment"])
    engine = get(plan.provisioner)
    return {"failed": failing_pairs(plan, engine, req["pairs"], timeout=float(req.get("timeout", 1.0)),
                                    wait=float(req.get("wait", 0.0)))}


COMMANDS = {"facts": facts, "preflight": preflight, "up": up, "down": down, "status": status, "ping": ping}
#: Commands of the layers above, imported only when asked for (the worker itself stays below them).
EXTENSIONS = {"goalstates": "emulator.alcor.remote:goalstates", "hollow": "emulator.alcor.remote:hollow"}


def _extension(target: str):
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def main() -> None:
    try:
        req = json.loads(sys.stdin.read() or "{}")
        name = req.get("command", "")
        command = COMMANDS[name] if name in COMMANDS else _extension(EXTENSIONS[name])
    except (ValueError, KeyError):
        emit({"ev": "error", "kind": "usage",
              "message": f"unknown request; commands: {', '.join([*COMMANDS, *EXTENSIONS])}"})
        sys.exit(2)
    if req.get("state_dir"):
        os.environ.setdefault("CLOUDEMU_STATE_DIR", str(Path(req["state_dir"]).expanduser()))
    try:
        emit({"ev": "result", **command(req)})
    except Exception as exc:  # reported to the controller, which names the machine
        kind = "preflight" if type(exc).__name__ == "PreflightError" else (
            "experiment" if isinstance(exc, orchestrator.ExperimentError) else "failure")
        emit({"ev": "error", "kind": kind, "message": str(exc),
              "trace": "" if kind != "failure" else traceback.format_exc()[-2000:]})
        sys.exit(1)
