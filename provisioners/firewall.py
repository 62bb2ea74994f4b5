"""Let frames cross our Linux bridges when the host filters bridged traffic (Docker does).

With br_netfilter loaded and bridge-nf-call-iptables=1 (set by dockerd, whose FORWARD
policy is DROP), frames between two ports of a Linux bridge go through iptables and
are dropped. The per-bridge nf_call_iptables knob cannot override the global sysctl,
so each experiment bridge gets one ACCEPT rule in FORWARD, marked with the
experiment in its comment; `down` removes exactly the rules carrying that mark.
OVS bridges do not pass through br_netfilter and need nothing.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from emulator.compiler.plan import marker
from emulator.runtime.executor import LocalExecutor

SYSCTL = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def bridged_traffic_filtered() -> bool:
    try:
        return SYSCTL.read_text().strip() == "1"
    except OSError:
        return False


def accept_bridge(ex: LocalExecutor, bridge: str, experiment: str) -> None:
    ex.run(["iptables", "-w", "-I", "FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
            marker(experiment), "-j", "ACCEPT"])


def rules_of(ex: LocalExecutor, experiment: str) -> list[list[str]]:
    """Our FORWARD rules, as the argument lists that delete them."""
    if not ex.which("iptables"):
        return []
    proc = ex.run(["iptables", "-w", "-S", "FORWARD"], check=False)
    out = []
    for line in proc.stdout.splitlines():
        args = shlex.split(line)
        if args[:2] == ["-A", "FORWARD"] and marker(experiment) in args:
            out.append(["iptables", "-w", "-D", *args[1:]])
    return out


def remove_rules(ex: LocalExecutor, experiment: str) -> None:
    for cmd in rules_of(ex, experiment):
        ex.run(cmd, check=False)
