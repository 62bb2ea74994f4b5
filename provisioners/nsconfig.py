"""Configure many network namespaces from one thread, over netlink.

`ip -n NS ...` costs a process per namespace; here one worker thread enters
each namespace in turn (setns acts on the calling thread only), opens a netlink
socket there and sets links up, addresses, routes and HTB shaping.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP
from pyroute2.netns import setns

from emulator.runtime.namespaces import NETNS_RUN, in_threads

#: Where sysctls are written; a container's /proc/sys is read-only, so its agent mounts a proc of its own.
PROC_SYS = "/proc/sys"
LOOPBACK_INDEX = 1  # lo is the first device of every namespace
HTB_ROOT = 0x10000  # handle 1:
HTB_CLASS = 0x10001  # class 1:1
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


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
    #: False: the listed links get no IPv6 address (address generation off over netlink before they come up),
    #: so they send nothing of IPv6. A VM's router solicitations and MLD reports, flooded to every port of a
    #: userspace OVS, keep its main thread busy once a bridge has hundreds of ports.
    ipv6: bool = True
    #: False: devices made in the namespace later get no IPv6 either. A sysctl: opening a file in /proc/sys
    #: walks a list as long as the machine's namespaces (two per VM were 15% of all CPU programming 3,000
    #: VMs on 30 compute nodes, growing with N^2), so it is only for namespaces whose links come later.
    ipv6_later: bool = True


def htb_burst(mbit: float) -> int:
    """Bytes a class may send at once: about 1 ms at line rate, at least 15 kB (Mininet's figure)."""
    return max(15_000, int(mbit * 1e6 / 8 / 1000))


def configure(namespaces: list[NamespaceConfig], on_done: Callable[[int], None] | None = None,
              workers: int = 2) -> None:
    """Apply every NamespaceConfig from `workers` threads; raises the first error.

    Netlink calls release the GIL, so two threads keep both cores of a small machine busy."""
    def one(ns: NamespaceConfig) -> None:
        enter(ns.netns)
        _configure_one(ns)
    in_threads(namespaces, one, workers, on_done)


def links_up(devices: list[str]) -> None:
    """Set links of the calling thread's namespace up, all in one netlink send."""
    _send_all([_link_up(socket.if_nametoindex(dev)) for dev in devices], "of this process")


def enter(netns: str) -> None:
    """By descriptor: pyroute2's setns by name lists /run/netns each time, and creates a missing one."""
    fd = os.open(netns if netns.startswith("/") else f"{NETNS_RUN}/{netns}", os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def no_ipv6_on_new_devices() -> None:
    """Devices made later in the calling thread's namespace come up without IPv6 (/proc/sys/net is that namespace's)."""
    with open(f"{PROC_SYS}/net/ipv6/conf/default/disable_ipv6", "w") as f:
        f.write("1")


def _configure_one(ns: NamespaceConfig) -> None:
    if not ns.ipv6_later:
        no_ipv6_on_new_devices()
    messages = [_link_up(LOOPBACK_INDEX)]
    silent = []
    shaped = []
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
            messages.append(_address(idx, cfg.ip))
        if cfg.bw:
            shaped.append((idx, cfg.bw))
        if not ns.ipv6:
            silent.append(_no_ipv6_addresses(idx))
        messages.append(_link_up(idx))
    if ns.gateway:
        messages.append(_default_route(ns.gateway))
    _send_all(silent + messages, ns.netns)  # addresses are generated when a link comes up: turned off before
    if shaped:
        with IPRoute() as ipr:
            for idx, bw in shaped:
                ipr.tc("add", "htb", idx, HTB_ROOT, default=HTB_CLASS & 0xFFFF)
                ipr.tc("add-class", "htb", idx, HTB_CLASS, parent=HTB_ROOT, rate=f"{bw:g}mbit",
                       burst=htb_burst(bw), prio=1)


# -- one netlink socket, every request of a namespace in one send -----------------
# pyroute2's IPRoute costs ~0.35 ms a call and its encoder ~0.1 ms a message; these four
# fixed layouts are packed directly. The kernel runs a buffer of requests in order and
# acknowledges each one.
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")
IFA_ADDRESS, IFA_LOCAL, RTA_GATEWAY = 1, 2, 5
IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1


def _attr(kind: int, payload: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _link_up(index: int) -> tuple[int, int, bytes, str]:
    return RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP), f"setting link {index} up"


def _no_ipv6_addresses(index: int) -> tuple[int, int, bytes, str]:
    mode = _attr(IFLA_AF_SPEC, _attr(socket.AF_INET6, _attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))))
    return RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + mode, \
        f"turning IPv6 address generation off on link {index}"


def _address(index: int, cidr: str) -> tuple[int, int, bytes, str]:
    addr, _, prefix = cidr.partition("/")
    raw = socket.inet_aton(addr)
    body = IFADDRMSG.pack(socket.AF_INET, int(prefix or 32), 0, 0, index) + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"adding address {cidr}"


def _default_route(gateway: str) -> tuple[int, int, bytes, str]:
    body = RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body + _attr(RTA_GATEWAY, socket.inet_aton(gateway)), \
        f"adding the default route via {gateway}"


def _send_all(requests: list[tuple[int, int, bytes, str]], netns: str, chunk: int = 256) -> None:
    """Sends `chunk` requests at a time (their acknowledgements must fit the socket's buffer)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        for first in range(0, len(requests), chunk):
            buf = bytearray()
            what = {}
            for seq, (kind, flags, body, description) in enumerate(requests[first:first + chunk], start=first + 1):
                buf += NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                                         seq, 0) + body
                what[seq] = description
            sock.send(bytes(buf))
            _read_acks(sock, what, netns)


def _read_acks(sock: socket.socket, what: dict[int, str], netns: str) -> None:
    while what:
        data = sock.recv(65536)
        for kind, offset, _ in messages(data):
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + NLMSG_HEADER.size)
                description = what.pop(NLMSG_HEADER.unpack_from(data, offset)[3], None)
                if code and description:
                    raise RuntimeError(f"namespace {netns}: {description} failed: {os.strerror(-code)}")


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each netlink message in a buffer read from a netlink socket."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind = NLMSG_HEADER.unpack_from(data, offset)[:2]
        yield kind, offset, offset + max(length, NLMSG_HEADER.size)
        offset += (max(length, NLMSG_HEADER.size) + 3) & ~3
