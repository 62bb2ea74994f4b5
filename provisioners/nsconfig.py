"""Configure many network namespaces from one thread, over netlink.

`ip -n NS ...` costs a process per namespace; here one worker thread enters
each namespace in turn (setns acts on the calling thread only), opens a netlink
socket there and sets links up, addresses, routes and HTB shaping.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool
from pyroute2.netns import setns

HTB_ROOT = 0x10000  # handle 1:
HTB_CLASS = 0x10001  # class 1:1


@dataclass
class IfaceConfig:
    dev: str
    ip: str | None = None
    bw: float | None = None  # Mbit/s
    tx_csum_off: bool = False  # needed behind a userspace OVS datapath, or TCP checksums are wrong


@dataclass
class NamespaceConfig:
    netns: str
    ifaces: list[IfaceConfig] = field(default_factory=list)


def htb_burst(mbit: float) -> int:
    """Bytes a class may send at once: about 1 ms at line rate, at least 15 kB (Mininet's figure)."""
    return max(15_000, int(mbit * 1e6 / 8 / 1000))


def configure(namespaces: list[NamespaceConfig], on_done: Callable[[int], None] | None = None) -> None:
    """Apply every NamespaceConfig; raises the first error after restoring the thread's namespace."""
    errors: list[BaseException] = []

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for i, ns in enumerate(namespaces):
                setns(ns.netns)
                _configure_one(ns)
                if on_done and (i % 50 == 49 or i == len(namespaces) - 1):
                    on_done(min(50, i % 50 + 1))
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
        finally:
            setns(home)
            os.close(home)

    worker = threading.Thread(target=work, name="nsconfig", daemon=True)
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def _configure_one(ns: NamespaceConfig) -> None:
    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, state="up")
        for cfg in ns.ifaces:
            found = ipr.link_lookup(ifname=cfg.dev)
            if not found:
                raise RuntimeError(f"{cfg.dev} is missing in namespace {ns.netns}")
            idx = found[0]
            if cfg.tx_csum_off:
                eth = IoctlEthtool(cfg.dev)
                try:
                    eth.set_offload_flag("tx-checksumming", 0)
                finally:
                    eth.close()
            if cfg.ip:
                addr, _, prefix = cfg.ip.partition("/")
                ipr.addr("add", index=idx, address=addr, prefixlen=int(prefix or 32))
            if cfg.bw:
                ipr.tc("add", "htb", idx, HTB_ROOT, default=HTB_CLASS & 0xFFFF)
                ipr.tc("add-class", "htb", idx, HTB_CLASS, parent=HTB_ROOT, rate=f"{cfg.bw:g}mbit",
                       burst=htb_burst(cfg.bw), prio=1)
            ipr.link("set", index=idx, state="up")
