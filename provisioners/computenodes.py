"""Compute nodes on the netns engine: each namespace starts its own OVS and goal-state agent.

The agent program (emulator.alcor.node) is started by module name inside the node's namespace,
with `nsenter --net` so that the VM namespaces it makes stay visible on the machine (`ip netns
exec` would give it a private mount of /run/netns). Everything it starts lives in the node's
namespace, so `down` ends it with the namespace's other processes; its directory (OVS database,
sockets, logs, the agent's unix socket) is journaled and removed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from emulator.compiler.plan import Plan, PlanNode
from provisioners.base import NodeStartError

AGENT_MODULE = "emulator.alcor.node"
#: Compute node directories live only below this (the compiler's COMPUTE_DIR); nothing else is removed.
ROOT = Path("/run/cloudemu")


def _code_root() -> str:
    """What to put on PYTHONPATH so the agent imports the same code as this process (a checkout or the worker zip)."""
    return str(Path(__file__).resolve().parents[1])


def socket_path(node: PlanNode) -> str:
    return str(Path(node.options["compute"]["dir"]) / "agent.sock")


#: Where a containerized compute node sees its directory, the code and the Python packages and the peers (read-only).
IN_CONTAINER = {"dir": "/run/cloudemu-node", "code": "/opt/cloudemu/code", "site": "/opt/cloudemu/site",
                "peers": "/opt/cloudemu/peers"}


#: Every compute node's underlay address and MAC, for static ARP (see node.static_peers): one file per experiment,
#: in a directory of its own that containers get read-only (a node must not rewrite what the others read).
PEERS_FILE = "underlay-peers"
NCM_SOCKET = "ncm.sock"  # where an on-demand agent asks cloudemu's controller (`cloudemu alcor ncm` serves it)
PEERS_DIR = ".peers"


def peers_dir(node: PlanNode) -> Path:
    return Path(node.options["compute"]["dir"]).parent / PEERS_DIR


def agent_argv(node: PlanNode, base: str, peers: str | None = None) -> list[str]:
    spec = node.options["compute"]
    host = "underlay" if spec.get("listen") == "underlay" else "0.0.0.0"  # noqa: S104 - where ACA listens
    return ["-m", AGENT_MODULE, "--dir", f"{base}/ovs", "--vm-prefix", spec["vm_prefix"],
            "--listen", f"{host}:{spec['port']}", "--socket", f"{base}/agent.sock",
            "--underlay-peers", f"{peers or peers_dir(node)}/{PEERS_FILE}",
            *(["--ncm", f"unix:{base}/{NCM_SOCKET}"] if spec.get("on_demand") else [])]


def underlay_peers(plan: Plan) -> str:
    """'address MAC' of every compute node in the plan: the compiler fixes both on its first link."""
    computes = {n.name: n.ip.split("/")[0] for n in plan.nodes if "compute" in n.options and n.ip}
    ends = [e for link in plan.links for e in (link.a, link.b)] + [t.end for t in plan.tunnels]
    macs = {e.node: e.mac for e in ends if e.node in computes and e.ip and e.mac}
    return "".join(f"{computes[name]} {mac}\n" for name, mac in sorted(macs.items()))


def write_peers(nodes: list[PlanNode], text: str) -> None:
    """One file for all of the experiment's compute nodes on this machine: O(N) bytes, not N^2."""
    prepare(nodes)
    for folder in {peers_dir(n) for n in nodes}:
        # named by this process: machines that share a filesystem (the local testbed) stage theirs at once
        staged = folder / f".{PEERS_FILE}.{os.getpid()}.new"
        staged.write_text(text)
        staged.chmod(0o444)
        staged.rename(folder / PEERS_FILE)


def container_mounts(node: PlanNode) -> list[str]:
    """The node's directory (read-write: the agent's socket and OVS files), the peers (read-only) and this
    code with its packages (read-only)."""
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "grpc").is_dir())
    return [f"{node.options['compute']['dir']}:{IN_CONTAINER['dir']}", f"{peers_dir(node)}:{IN_CONTAINER['peers']}:ro",
            f"{_code_root()}:{IN_CONTAINER['code']}:ro", f"{site}:{IN_CONTAINER['site']}:ro"]


def container_command(node: PlanNode) -> list[str]:
    """The agent as the container's own process, its output in the mounted directory: an argument list
    (no shell reads the experiment's name or anything else from the plan)."""
    base = IN_CONTAINER["dir"]
    return ["env", f"PYTHONPATH={IN_CONTAINER['code']}:{IN_CONTAINER['site']}", "python3",
            *agent_argv(node, base, IN_CONTAINER["peers"]),
            "--log", f"{base}/agent.log"]


def problems(nodes: list[PlanNode], *, dhcp_vms: bool = False) -> list[str]:
    """What stops compute nodes on this machine: OVS's daemons, the agent's packages in this Python, and a DHCP
    client when namespace compute nodes have VMs that boot by DHCP (container nodes have it in the node image)."""
    if not nodes:
        return []
    out = []
    if not shutil.which("ovs-vswitchd") or not shutil.which("ovsdb-server"):
        out.append("compute nodes run their own Open vSwitch: apt-get install openvswitch-switch")
    missing = [m for m in ("grpc", "google.protobuf", "pyroute2") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        out.append(f"compute nodes' agent needs {', '.join(missing)} in {sys.executable}: "
                   "pip install grpcio protobuf pyroute2 (or run scripts/setup.sh)")
    if dhcp_vms and not shutil.which("udhcpc"):
        out.append("VMs with 'ip: dhcp' run a DHCP client: apt-get install udhcpc (or run scripts/setup.sh)")
    return out


def prepare(nodes: list[PlanNode]) -> None:
    for node in nodes:
        Path(node.options["compute"]["dir"]).mkdir(parents=True, exist_ok=True)
        peers_dir(node).mkdir(exist_ok=True)


def start(nodes: list[PlanNode], timeout: float = 120.0, on_ready=None) -> None:
    """Starts every (namespace) node's agent, then waits until each says it serves."""
    prepare(nodes)
    procs = {}
    for node in nodes:
        base = Path(node.options["compute"]["dir"])
        procs[node.name] = launch(node.netns, base, agent_argv(node, str(base)))
    wait_ready(nodes, timeout, on_ready, procs)


def launch(netns: str, base: Path, args: list[str]) -> subprocess.Popen:
    """One of our Python programs (`python ARGS`) in a namespace, its output in base/agent.log."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_code_root(), os.environ.get("PYTHONPATH")]))}
    with (base / "agent.log").open("w") as log:
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", sys.executable, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(nodes: list[PlanNode], timeout: float = 120.0, on_ready=None, procs: dict | None = None,
               base_of=lambda node: Path(node.options["compute"]["dir"])) -> None:
    """Until every agent's log says it serves; a process that ends, or the timeout, raises with the log's tail."""
    deadline = time.monotonic() + timeout
    waiting = list(nodes)
    while waiting:
        still = []
        for node in waiting:
            log = base_of(node) / "agent.log"
            text = log.read_text() if log.exists() else ""
            if '"ready": true' in text:
                if on_ready:
                    on_ready(1)
                continue
            proc = (procs or {}).get(node.name)
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                why = "exited" if proc is not None and proc.returncode is not None else f"is not ready after {timeout:.0f} s"
                raise NodeStartError(f"compute node {node.name}: its agent {why}; its log ({log}) ends:\n{text[-1500:]}")
            still.append(node)
        waiting = still
        if waiting:
            time.sleep(0.1)


def ready(node: PlanNode) -> bool:
    return Path(socket_path(node)).exists()


def remove_dirs(paths: list[str]) -> list[str]:
    """Removes our directories (compute nodes', an experiment's OVS; only below /run/cloudemu), and the
    experiment's directory once empty; returns those that remain."""
    left = []
    for p in paths:
        path = Path(p).resolve()
        if ROOT not in path.parents:
            left.append(p)
            continue
        shutil.rmtree(path, ignore_errors=True)
        try:
            path.parent.rmdir()  # the experiment's directory, once the last of them is gone
        except OSError:
            pass
        if path.exists():
            left.append(p)
    return left

