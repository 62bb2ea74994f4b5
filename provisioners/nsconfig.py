"""Configure many network namespaces from one thread, over netlink.

`ip -n NS ...` costs a process per namespace; here one worker thread enters
each namespace in turn (setns acts on the calling thread only), opens a netlink
socket there and sets links up, addresses, routes and HTB shaping.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool
from pyroute2.netns import setns

#: Where sysctls are written; a container's /proc/sys is read-only, so its agent mounts a proc of its own.
PROC_SYS = "/proc/sys"
LOOPBACK_INDEX = 1  # lo is the first device of every namespace
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
    gateway: str | None = None  # default route, once the interfaces are up
    #: False: IPv6 off before any link comes up. A VM's router solicitations and MLD reports, flooded to
    #: every port of a userspace OVS, keep its main thread busy once a bridge has hundreds of ports.
    ipv6: bool = True


def htb_burst(mbit: float) -> int:
    """Bytes a class may send at once: about 1 ms at line rate, at least 15 kB (Mininet's figure)."""
    return max(15_000, int(mbit * 1e6 / 8 / 1000))


def configure(namespaces: list[NamespaceConfig], on_done: Callable[[int], None] | None = None,
              workers: int = 2) -> None:
    """Apply every NamespaceConfig from `workers` threads; raises the first error.

    Netlink calls release the GIL, so two threads keep both cores of a small machine busy."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(chunk: list[NamespaceConfig]) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for i, ns in enumerate(chunk):
                if errors:
                    return
                setns(ns.netns)
                _configure_one(ns)
                if on_done and (i % 50 == 49 or i == len(chunk) - 1):
                    with lock:
                        on_done(i % 50 + 1)
        except BaseException as exc:  # surfaced to the caller below
            errors.append(exc)
        finally:
            setns(home)  # the thread ends anyway; leave it where it started
            os.close(home)

    threads = [threading.Thread(target=work, args=(namespaces[i::workers],), name=f"nsconfig-{i}", daemon=True)
               for i in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _configure_one(ns: NamespaceConfig) -> None:
    if not ns.ipv6:  # /proc/sys/net is the opening thread's namespace
        for scope in ("all", "default"):
            with open(f"{PROC_SYS}/net/ipv6/conf/{scope}/disable_ipv6", "w") as f:
                f.write("1")
    with IPRoute() as ipr:
        ipr.link("set", index=LOOPBACK_INDEX, state="up")
        for cfg in ns.ifaces:
            try:
                idx = socket.if_nametoindex(cfg.dev)  # an ioctl in this thread's namespace: no link dump
            except OSError:
                raise RuntimeError(f"{cfg.dev} is missing in namespace {ns.netns}") from None
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
        if ns.gateway:
            ipr.route("add", dst="0.0.0.0/0", gateway=ns.gateway)
