"""Node kinds beyond the three the fabric builds (host, switch, bridge): each is a host with a role, what a
node of that kind may say in a topology file, and the handler that deploys it. The one list the loader,
the compiler and the Deployer read: a new kind is its handler module in provisioners/kinds/ (behind
provisioners.kinds.NodeKind) and one line here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    keys: frozenset[str]  # what a node of this kind may say besides a host's own keys
    handler: str  # "module:class" of its provisioners.kinds.NodeKind
    declared: bool = True  # False: only the compiler makes nodes of this kind, a topology file cannot name it


KINDS: dict[str, Kind] = {
    # a host with its own OVS (br-int, br-tun) and a goal-state agent: ours (builtin) or the user's ACA image
    "compute": Kind(frozenset({"agent", "agent_listen", "on_demand"}), "provisioners.kinds.compute:Compute"),
    # a containerized control-plane service, started after its dependencies are healthy
    "service": Kind(frozenset({"depends_on", "healthcheck"}), "provisioners.kinds.service:Service"),
    # a pack of hollow compute nodes (`agent: hollow`), which the compiler makes: one namespace and process for many
    "hollow": Kind(frozenset(), "provisioners.kinds.hollow:HollowPack", declared=False),
}
