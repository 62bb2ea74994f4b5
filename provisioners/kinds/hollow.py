"""Packs of hollow compute nodes (emulator/alcor/hollow.py): one namespace, one link and one process serve
thousands of nodes, each on its own underlay address. `status` gives a pack's totals, not a row per node."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime import tokens
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal, Resource
from provisioners import computenodes
from provisioners.base import NodeState
from provisioners.kinds import NodeKind, replace

MODULE = "emulator.alcor.hollow"


def base(node: PlanNode) -> Path:
    return Path(node.options["hollow"]["dir"])


def ask(node: PlanNode, request: dict, timeout: float = 10.0) -> dict:
    """One request to the pack's control socket (summary, or one node's state)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(base(node) / "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def set_delays(plan: Plan, model: dict | None, ask_packs) -> tuple[list[str], list[str]]:
    """Gives every pack of `plan` this delay model (None: none), through `ask_packs` (the experiment's Target):
    the packs that took it, and those that did not answer."""
    answers = ask_packs(plan, {n.name: {"op": "delays", "model": model} for n in plan.nodes if "hollow" in n.options})
    took, missed = [], []
    for pack, answer in answers.items():
        if isinstance(answer, Exception):
            missed.append(pack)
        elif "error" in answer:
            raise ValueError(answer["error"])
        else:
            took.append(pack)
    return took, missed


class HollowPack(NodeKind):
    name = "hollow"

    def resources(self, plan: Plan, nodes: list[PlanNode]) -> list[Resource]:
        return [Resource("dir", str(base(n))) for n in nodes]

    def problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        if importlib.util.find_spec("hpack") is None:
            return ["hollow compute nodes read gRPC headers with the hpack package: pip install hpack (or run "
                    "scripts/setup.sh)"]
        return []

    def after_links(self, plan: Plan, nodes: list[PlanNode], journal: Journal, phases: Phases) -> None:
        linked = {e.netns for link in plan.links for e in (link.a, link.b)}
        total = sum(len(n.options["hollow"]["nodes"]) for n in nodes)
        with phases.phase("hollow compute nodes", total=total) as step:
            # The kernel takes a pack's addresses one by one (about 0.3 s per 4,000 here): two packs at a time,
            # each process starting as soon as its addresses are there.
            with ThreadPoolExecutor(2) as pool:
                procs = dict(pool.map(lambda node: (node.name, self._start(node, node.netns in linked)), nodes))
            journal.mark([Resource("dir", str(base(n))) for n in nodes], "created")
            computenodes.wait_ready(nodes, procs=procs, base_of=base)
            step.advance(total)

    def _start(self, node: PlanNode, linked: bool) -> subprocess.Popen:
        """The pack's directory, its nodes' addresses, and its process."""
        spec, folder = node.options["hollow"], base(node)
        folder.mkdir(parents=True, exist_ok=True)
        members = spec["nodes"]
        (folder / "nodes").write_text("".join(f"{name} {ip.split('/')[0]}\n" for name, ip in members))
        device = "eth0" if linked else "lo"  # the first address is eth0's already
        lines = [f"addr add {ip} dev {device}" for _, ip in (members[1:] if linked else members)]
        if lines:
            self.deployer.ex.run(["ip", "-n", node.netns, "-batch", "-"], input=tokens.batch_text(lines, "ip"))
        return computenodes.launch(node.netns, folder, [
            "-m", MODULE, "--dir", str(folder), "--nodes", str(folder / "nodes"),
            "--vm-prefix", spec["vm_prefix"], "--listen", f"0.0.0.0:{spec['port']}"])

    def status(self, plan: Plan, nodes: list[PlanNode], states: list[NodeState]) -> list[NodeState]:
        seen = {s.node: s for s in states}
        changed = {}
        for node in nodes:
            count = len(node.options["hollow"]["nodes"])
            state, detail = seen[node.name].state, f"{count} hollow compute nodes"
            if state == "running":
                try:
                    s = ask(node, {"op": "summary"})
                    detail += (f": {s['messages']} messages, {s['ports']} ports, {s['neighbours']} neighbours, "
                               f"{s['flows']} flows, {s['errors']} errors")
                except (OSError, ValueError) as exc:
                    state, detail = "missing", f"{detail}; its process does not answer ({exc})"
            changed[node.name] = NodeState(node.name, "hollow", state, detail)
        return replace(states, changed)
