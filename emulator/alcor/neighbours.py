"""Waiting for the kernel to resolve underlay addresses, from its own notifications.

The agent must learn each remote host's MAC before a VM's first packet to it (see
Agent._prime_tunnels). Polling a neighbour dump through pyroute2 cost about 10 ms of parsing per
poll at 100 entries, every 50 ms for up to 3 s, in each of 100 agents on a busy machine. Here one
dump is read, then only the kernel's RTM_NEWNEIGH notifications, parsed by hand.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE
from pyroute2.netlink.rtnl import RTM_GETNEIGH, RTM_NEWNEIGH, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.ndmsg import NUD_DELAY, NUD_NOARP, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE

from provisioners.nsconfig import NLMSG_HEADER, RTATTR, messages

NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
NDA_DST, NDA_LLADDR = 1, 2
RESOLVED = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP


def resolved(dev: str, wanted: set[str], timeout: float, ask: Callable[[set[str]], None]) -> Iterator[list[tuple[str, str]]]:
    """Yields (address, MAC) pairs of `wanted` as `dev` learns them, until all are known or `timeout` passes.

    `ask` runs once the table's dump is read, with the addresses it lacked (it sends what makes the
    kernel ask for them; an address already known, static or learnt, costs no packet). Notifications
    are subscribed to before the dump, so no answer can come between the two."""
    index = socket.if_nametoindex(dev)
    pending = set(wanted)
    asked = False
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, RTMGRP_NEIGH))
        _request_dump(sock)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                return
            try:
                data = sock.recv(1 << 20)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # notifications were lost: read the whole table again
                    raise
                _request_dump(sock)
                continue
            found, dump_done = _parse(data, index)
            found = [(ip, mac) for ip, mac in found if ip in pending]
            if found:
                pending -= {ip for ip, _ in found}
                yield found
            if dump_done and not asked and pending:
                asked = True
                ask(set(pending))


def _request_dump(sock: socket.socket) -> None:
    body = NDMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)


def _parse(data: bytes, index: int) -> tuple[list[tuple[str, str]], bool]:
    """(address, MAC) of each resolved IPv4 neighbour on device `index` in a buffer of netlink messages,
    and whether the buffer ends a dump."""
    found, done = [], False
    for kind, offset, end in messages(data):
        done = done or kind == NLMSG_DONE
        if kind == RTM_NEWNEIGH and end - offset >= NLMSG_HEADER.size + NDMSG.size:
            family, ifindex, state, _, _ = NDMSG.unpack_from(data, offset + NLMSG_HEADER.size)
            if family == socket.AF_INET and ifindex == index and state & RESOLVED:
                attrs = _attributes(data, offset + NLMSG_HEADER.size + NDMSG.size, end)
                dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
                if dst is not None and len(dst) == 4 and mac is not None and len(mac) == 6 and any(mac):
                    found.append((socket.inet_ntoa(dst), mac.hex(":")))
    return found, done


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        out[kind] = data[offset + RTATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out
