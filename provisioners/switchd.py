"""Which Open vSwitch holds an experiment's bridges: the machine's own, or one of the experiment's.

On the userspace datapath (no kernel module, as on this machine kind) every port is a
packet socket inside ovs-vswitchd, and removing ports from the machine's daemon costs
~13 ms each, one after another (1,000 ports: 13 s). There each experiment runs its own
ovsdb-server and ovs-vswitchd under /run/cloudemu/<exp>/.ovs-<machine>, inside a network
namespace of its own that holds the switches' side of every link: experiments never share
a daemon, the machine's OVS never wakes for our devices, the root namespace stays clean,
and `down` ends the pair at once (emulator.runtime.processes) and drops the namespace.

The machine's OVS is used instead with the kernel module (removal is cheap there), and
when a switch names an OpenFlow controller, which may listen on the machine's loopback.
`CLOUDEMU_OVS=system|private` overrides the choice.

A userspace ovs-vswitchd reconfigures every port it has for each port it adds, so a daemon's cost grows with
the square of its ports: 5,000 ports in one took 34 s. An experiment's switches are therefore spread over
several private instances, each holding at most PORTS_PER_INSTANCE ports (whole switches, in plan order, so
that neighbouring switches share one); links between switches of two instances are veths between their
namespaces. `CLOUDEMU_OVS_PORTS` sets the budget. Smaller instances start for less (one daemon opening all its
ports, CPU: 0.37 s for 500 ports, 1.07 s for 1,000, 3.8 s for 2,000; 10,000 hosts: 8.8-11 s of daemon CPU in 500-port
instances against 14.6 s in 1,000-port ones), but a first packet pays for them: OVS's learning switch matches an ARP
broadcast on its addresses, so each new one is an upcall (about 20-30 ms of CPU) in every daemon it floods through,
one after another. With 500-port instances (23 daemons end to end at 10,000 hosts) the first ARP from h1 to hosts
past the 15th daemon often took over the kernel's 3 s and failed, and a sampled pingall took 139 s instead of 65 s.

A link between two switches of one OVS (one instance, or both on the machine's), with no shaping, is a pair of OVS
patch ports, not a veth: a packet crosses it inside one lookup, where each veth hop waits for the daemon's next poll
of its ports (a chain of 200 switches, one host each: the first end-to-end ping took 3.1 s over veths, 0.15 s over
patch ports). `CLOUDEMU_PATCH_LINKS=0` keeps veths (a device to capture on).
"""

from __future__ import annotations

import os
from pathlib import Path

from emulator.compiler.plan import NETNS_PREFIX
from emulator.runtime import ovsinstance
from provisioners.computenodes import ROOT

CHOICES = ("auto", "private", "system")


def choice() -> str:
    value = os.environ.get("CLOUDEMU_OVS", "auto")
    if value not in CHOICES:
        raise ValueError(f"CLOUDEMU_OVS={value!r}: use one of {', '.join(CHOICES)}")
    return value


def private(kernel_datapath: bool, controllers: bool) -> bool:
    wanted = choice()
    return wanted == "private" or (wanted == "auto" and not kernel_datapath and not controllers)


PORTS_PER_INSTANCE = 1000


def patch_links() -> bool:
    value = os.environ.get("CLOUDEMU_PATCH_LINKS", "1")
    if value not in ("0", "1"):
        raise ValueError(f"CLOUDEMU_PATCH_LINKS={value!r}: 1 (patch ports between switches of one OVS) or 0 (veths)")
    return value == "1"


def ports_per_instance() -> int:
    value = os.environ.get("CLOUDEMU_OVS_PORTS", str(PORTS_PER_INSTANCE))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"CLOUDEMU_OVS_PORTS={value!r}: a number of ports, at least 1")
    return int(value)


def shards(ports: dict[str, int], budget: int) -> list[list[str]]:
    """Switches (name -> its ports, in plan order) packed into instances of at most `budget` ports each (a switch
    with more has one of its own)."""
    out: list[list[str]] = []
    used = budget
    for name, n in ports.items():
        if used + n > budget and (not out or out[-1]):
            out.append([])
            used = 0
        out[-1].append(name)
        used += n
    return out


def base_for(experiment: str, machine: str, shard: int = 0) -> Path:
    """A dot keeps it apart from compute node directories (/run/cloudemu/<exp>/<node>); the first instance has no
    number (as before there were several)."""
    return ROOT / experiment / (f".ovs-{machine}" if shard == 0 else f".ovs-{machine}.{shard}")


def instances_of(experiment: str, machine: str) -> list[Path]:
    """The experiment's private instances on this machine, wherever `up` put them."""
    return sorted(p for p in (ROOT / experiment).glob(f".ovs-{machine}*")
                  if p.name == f".ovs-{machine}" or p.name.startswith(f".ovs-{machine}."))


def namespace_for(experiment: str, machine: str) -> str:
    """A hyphen keeps it apart from nodes' namespaces (ce.<exp>.<node>: node names have none)."""
    return f"{NETNS_PREFIX}{experiment}.-switches-{machine}"


def namespace_of(base: Path) -> str:
    experiment, machine = base.parent.name, base.name.removeprefix(".ovs-")
    return namespace_for(experiment, machine)


def system_running() -> bool:
    """The machine's ovsdb socket (OVS_RUNDIR moves it, as on a testbed machine)."""
    rundir = os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")
    return Path(rundir, "db.sock").exists()


def instance_of_bridge(device: str) -> Path | None:
    """The private instance that owns bridge `device` (its management socket is named after it)."""
    for mgmt in ROOT.glob(f"*/.ovs-*/run/{device}.mgmt"):
        return mgmt.parent.parent
    return None


def exec_argv(base: Path, argv: list[str]) -> list[str]:
    """`argv` in the switches' namespace, with OVS_RUNDIR and friends set for ovs-vsctl and ovs-ofctl."""
    return ["ip", "netns", "exec", namespace_of(base),
            "env", *(f"{k}={v}" for k, v in ovsinstance.env(base).items()), *argv]
