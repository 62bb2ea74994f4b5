"""Compute nodes: a host with its own OVS and a goal-state agent (ours, builtin; or the user's ACA image,
which its container's own command starts). On netns the agent runs in the node's namespace; in a container
as the container's process. Its VMs are namespaces the agent makes, on the machine or inside the container."""

from __future__ import annotations

from emulator.compiler.plan import Plan, PlanNode
from emulator.runtime.events import Phases
from emulator.runtime.journal import Journal, Resource
from provisioners import computenodes
from provisioners.base import NodeState
from provisioners.kinds import NodeKind, replace


class Compute(NodeKind):
    name = "compute"

    @staticmethod
    def builtin(nodes: list[PlanNode]) -> list[PlanNode]:
        return [n for n in nodes if n.options["compute"].get("agent") == "builtin"]

    def resources(self, plan: Plan, nodes: list[PlanNode]) -> list[Resource]:
        ours = self.builtin(nodes)
        return [Resource("dir", n.options["compute"]["dir"]) for n in ours] + \
            [Resource("dir", str(d)) for d in sorted({computenodes.peers_dir(n) for n in ours})]

    def problems(self, plan: Plan, nodes: list[PlanNode]) -> list[str]:
        ours = self.builtin(nodes)
        here = {n.name for n in ours if not n.options["compute"].get("in_container")}
        return computenodes.problems(ours, dhcp_vms=any(vm.get("dhcp") and vm["on"] in here for vm in plan.vms))

    def after_links(self, plan: Plan, nodes: list[PlanNode], journal: Journal, phases: Phases) -> None:
        ours = self.builtin(nodes)
        if not ours:
            return
        deployer = self.deployer
        with phases.phase("compute nodes", total=len(ours)) as step:
            computenodes.write_peers(ours, computenodes.underlay_peers(plan))
            boxes = [n for n in ours if deployer.is_container(n)]
            for node in boxes:
                deployer.engine_of(node).run_detached(deployer.container_name(node), computenodes.container_command(node))
            computenodes.start([n for n in ours if not deployer.is_container(n)], on_ready=step.advance)
            computenodes.wait_ready(boxes, on_ready=step.advance)
            journal.mark([Resource("dir", n.options["compute"]["dir"]) for n in ours], "created")

    def status(self, plan: Plan, nodes: list[PlanNode], states: list[NodeState]) -> list[NodeState]:
        deployer = self.deployer
        seen = {s.node: s for s in states}
        changed = {}
        for node in nodes:
            was = seen[node.name]
            if deployer.is_container(node):  # its container's state says it all
                state = was.state
            else:  # the namespace, and the agent's socket
                state = "running" if was.state == "running" and computenodes.ready(node) else "missing"
            changed[node.name] = NodeState(node.name, "compute", state, was.detail)
        # a VM exists once its compute node's agent has made it ("pending" until its goal state arrives)
        present = deployer.fabric.namespaces(plan.experiment)
        for node in nodes:
            if deployer.is_container(node) and seen[node.name].state == "running":
                present |= self._namespaces_inside(node)
        real = {n.name for n in plan.nodes}  # a VM on a hollow node is a port in its model, no namespace
        vms = [NodeState(vm["name"], "vm", "modelled" if vm["on"] not in real else
                         "running" if vm["netns"] in present else "pending", vm["ip"]) for vm in plan.vms]
        return replace(states, changed) + vms

    def _namespaces_inside(self, node: PlanNode) -> set[str]:
        deployer = self.deployer
        argv = [*deployer.engine_of(node).exec_prefix(deployer.container_name(node)), "ip", "netns", "list"]
        proc = deployer.ex.run(argv, check=False)
        return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
