"""The engines nodes run on, by name: the one list that the topology schema, the cluster inventory, the
command line and the provisioner registry all read. A new engine is its module in provisioners/ (behind
provisioners/base.py) and one line here."""

from __future__ import annotations

#: name -> "module:class" of its hooks (provisioners.base.HostEngine); netns hosts are the deployer's own.
ENGINES: dict[str, str] = {
    "netns": "",
    "docker": "provisioners.docker:DockerEngine",
    "lxd": "provisioners.lxd:LxdEngine",
}
#: Names older journals carry for the provisioner of a plan (today every plan runs on the one Deployer).
LEGACY: tuple[str, ...] = ("mixed",)
