"""Compute nodes on the netns engine: each namespace starts its own OVS and goal-state agent.

The agent program (emulator.alcor.node) is started by module name inside the node's namespace,
with `nsenter --net` so that the VM namespaces it makes stay visible on the machine (`ip netns
exec` would give it a private mount of /run/netns). Everything it starts lives in the node's
namespace, so `down` ends it with the namespace's other processes; its directory (OVS database,
sockets, logs, the agent's unix socket) is journaled and removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from emulator.compiler.plan import PlanNode
from provisioners.base import NodeStartError

AGENT_MODULE = "emulator.alcor.node"
#: Compute node directories live only below this (the compiler's COMPUTE_DIR); nothing else is removed.
ROOT = Path("/run/cloudemu")


def _code_root() -> str:
    """What to put on PYTHONPATH so the agent imports the same code as this process (a checkout or the worker zip)."""
    return str(Path(__file__).resolve().parents[1])


def socket_path(node: PlanNode) -> str:
    return str(Path(node.options["compute"]["dir"]) / "agent.sock")


def start(nodes: list[PlanNode], timeout: float = 120.0, on_ready=None) -> None:
    """Starts every node's agent, then waits until each says it serves (or one fails: its log tail is raised)."""
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_code_root(), os.environ.get("PYTHONPATH")]))}
    for node in nodes:
        spec = node.options["compute"]
        base = Path(spec["dir"])
        base.mkdir(parents=True, exist_ok=True)
        log = (base / "agent.log").open("w")
        argv = ["nsenter", f"--net=/run/netns/{node.netns}", sys.executable, "-m", AGENT_MODULE,
                "--dir", str(base / "ovs"), "--vm-prefix", spec["vm_prefix"], "--listen", f"0.0.0.0:{spec['port']}",
                "--socket", socket_path(node)]
        procs.append((node, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True), base / "agent.log"))
        log.close()
    deadline = time.monotonic() + timeout
    waiting = list(procs)
    while waiting:
        still = []
        for node, proc, log in waiting:
            text = log.read_text() if log.exists() else ""
            if '"ready": true' in text:
                if on_ready:
                    on_ready(1)
                continue
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if proc.returncode is not None else f"is not ready after {timeout:.0f} s"
                raise NodeStartError(f"compute node {node.name}: its agent {why}; its log ({log}) ends:\n{text[-1500:]}")
            still.append((node, proc, log))
        waiting = still
        if waiting:
            time.sleep(0.1)


def ready(node: PlanNode) -> bool:
    return Path(socket_path(node)).exists()


def remove_dirs(paths: list[str]) -> list[str]:
    """Removes compute node directories (only below /run/cloudemu); returns those that remain."""
    left = []
    for p in paths:
        path = Path(p).resolve()
        if ROOT not in path.parents:
            left.append(p)
            continue
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()  # the experiment's directory, once its last node is gone
        except OSError:
            pass
        if path.exists():
            left.append(p)
    return left

