"""Many pings at once from many network namespaces, in this process: a raw ICMP socket per source namespace.

`pingall` at 10,000 hosts cannot afford a process per ping (`ip netns exec ping` is about 5 ms of CPU, and a
sample of two pings per host is 20,000 of them). Each source gets a raw socket made inside its namespace (the
socket stays bound to it after the thread returns); every echo request is sent, then the replies are read
until the timeout. Sources are taken a chunk at a time, so the sockets stay well inside the open-files limit.
"""

from __future__ import annotations

import os
import random
import resource
import selectors
import socket
import struct
import time

from provisioners import nsconfig

ECHO_REQUEST, ECHO_REPLY = 8, 0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): of an IP header, or of ICMP or UDP with its pseudo-header."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo(ident: int, seq: int) -> bytes:
    body = struct.pack("!HH", ident, seq) + b"cloudemu"
    return struct.pack("!BBH", ECHO_REQUEST, 0, checksum(struct.pack("!BBH", ECHO_REQUEST, 0, 0) + body)) + body


def _socket_in(netns_path: str, home: int) -> socket.socket:
    nsconfig.enter(netns_path)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    finally:
        nsconfig.setns(home)
    sock.setblocking(False)
    return sock


def chunk_size() -> int:
    """Sources at once: a fifth of the open-files limit (the rest is the process's own)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(2000, soft // 5))


#: Echo requests in flight at once. Each first one to an address is an ARP broadcast that every switch floods to
#: every port: 10,000 at once on a flat 10,000-host network is 10^8 frame copies for userspace switches to make.
IN_FLIGHT = 32
#: Flooded frame copies in flight at once, at most: on a flat network of N hosts, IN_FLIGHT first pings cost
#: IN_FLIGHT * N copies. At 10,000 hosts, 32 at once lost 163 of 200 sampled pings within 5 s (each lost one's ARP
#: retries flooding again), where one alone took 0.3-1.1 s.
FLOOD_BUDGET = 32_000


def in_flight_for(hosts: int) -> int:
    """Echo requests at once on a network of `hosts` hosts."""
    return max(1, min(IN_FLIGHT, FLOOD_BUDGET // max(1, hosts)))


def ping_many(pairs: list[tuple[str, str]], timeout: float = 1.0, in_flight: int = IN_FLIGHT) -> list[bool]:
    """For each (source namespace path, destination address): did an echo reply come back within `timeout`?

    Sources a chunk at a time, each with one socket for all its destinations; within a chunk, in rounds of one
    request per source (its k-th destination in round k) and at most `in_flight` requests, each round over as soon
    as its replies are in (see in_flight_for)."""
    answered = [False] * len(pairs)
    by_source: dict[str, list[int]] = {}
    for i, (source, _) in enumerate(pairs):
        by_source.setdefault(source, []).append(i)
    sources = list(by_source)
    step = chunk_size()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        for first in range(0, len(sources), step):
            chunk = sources[first:first + step]
            sockets = {s: _socket_in(s, home) for s in chunk}
            try:
                _rounds({s: by_source[s] for s in chunk}, sockets, pairs, answered, timeout, in_flight)
            finally:
                for sock in sockets.values():
                    sock.close()
    finally:
        os.close(home)
    return answered


def _rounds(group: dict[str, list[int]], sockets: dict[str, socket.socket], pairs, answered: list[bool],
            timeout: float, in_flight: int) -> None:
    ident = random.randrange(1 << 16)
    by_fd = {sock.fileno(): sock for sock in sockets.values()}
    sel = selectors.DefaultSelector()
    for sock in sockets.values():
        sel.register(sock, selectors.EVENT_READ)
    try:
        rounds = max(map(len, group.values()), default=0)
        seq = 0
        for k in range(rounds):
            batch = [(s, indices[k]) for s, indices in group.items() if k < len(indices)]
            for first in range(0, len(batch), in_flight):
                expected: dict[tuple[int, str, int], int] = {}
                for source, i in batch[first:first + in_flight]:
                    seq = (seq + 1) & 0xFFFF
                    sock = sockets[source]
                    expected[(sock.fileno(), pairs[i][1], seq)] = i
                    try:
                        sock.sendto(echo(ident, seq), (pairs[i][1], 0))
                    except OSError:
                        pass  # unreachable from there: no reply, a failed pair
                _replies(sel, by_fd, expected, ident, answered, timeout)
    finally:
        sel.close()


def _replies(sel, by_fd, expected: dict, ident: int, answered: list[bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while expected and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            sock = key.fileobj
            while True:
                try:
                    packet, (sender, _) = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                header = (packet[0] & 0x0F) * 4
                if len(packet) < header + 8:
                    continue
                kind, _, _, reply_id, seq = struct.unpack_from("!BBHHH", packet, header)
                if kind == ECHO_REPLY and reply_id == ident:
                    i = expected.pop((sock.fileno(), sender, seq), None)
                    if i is not None:
                        answered[i] = True
