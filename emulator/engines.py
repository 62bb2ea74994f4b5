"""The engines nodes run on, by name: the one list that the topology schema, the cluster inventory, the
command line and the provisioner registry all read. A new engine is its module in provisioners/ (behind
provisioners/base.py) and one line here."""

from __future__ import annotations

#: name -> "module:class" of its provisioner.
ENGINES: dict[str, str] = {
    "netns": "provisioners.netns:NetnsProvisioner",
    "docker": "provisioners.docker:DockerProvisioner",
    "lxd": "provisioners.lxd:LxdProvisioner",
}
#: Not for users to name: what a plan with containers of both engines runs on.
INTERNAL: dict[str, str] = {"mixed": "provisioners.mixed:MixedProvisioner"}
