"""DHCP as ACA's responder answers it: a VM's DISCOVER and REQUEST, punted from br-int, answered from the host's
DHCP entries (DHCPState: MAC -> address, host name) and the entry's subnet (mask, gateway, DNS).

Pure: frames in, frames out, so the packet handling is unit-tested without a data plane. A frame that is not a
well-formed DHCP request from a known MAC gets no answer (None), as ACA drops it; nothing in a request is
trusted beyond its length-checked fields.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import NamedTuple

from emulator.runtime.icmp import checksum

DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
MAGIC = b"\x63\x82\x53\x63"
LEASE_SECONDS = 86400  # ACA's default lease time
ETH_IP, ETH_VLAN = 0x0800, 0x8100
_BOOTP = struct.Struct("!BBBBIHHIIII16s64s128s")  # 236 bytes, then the magic cookie and the options


class Request(NamedTuple):
    kind: int  # DISCOVER or REQUEST
    xid: int
    flags: int
    chaddr: bytes  # 16 bytes, as sent
    mac: str  # the client's (client identifier of type 1, else chaddr), lower case
    requested: str  # option 50 or ciaddr, "" if none
    server_id: str  # option 54, "" if none


class Lease(NamedTuple):
    ip: str
    prefix: int
    gateway: str  # the router, and the server's identity ("" when the subnet has none)
    dns: tuple[str, ...]
    hostname: str
    server_mac: str
    vlan: int  # the port's local VLAN on br-int, the answer's tag


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def options(raw: bytes) -> dict[int, bytes]:
    """TLV options up to END; a truncated one ends the reading."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        code = raw[i]
        if code == 0:
            i += 1
            continue
        if code == 255 or i + 1 >= len(raw):
            break
        length = raw[i + 1]
        value = raw[i + 2:i + 2 + length]
        if len(value) < length:
            break
        out.setdefault(code, value)
        i += 2 + length
    return out


def parse(frame: bytes) -> Request | None:
    """A DHCP DISCOVER or REQUEST from an Ethernet frame (tagged or not), else None."""
    if len(frame) < 14:
        return None
    ethertype, offset = struct.unpack_from("!H", frame, 12)[0], 14
    if ethertype == ETH_VLAN and len(frame) >= 18:
        ethertype, offset = struct.unpack_from("!H", frame, 16)[0], 18
    if ethertype != ETH_IP or len(frame) < offset + 20:
        return None
    ihl = (frame[offset] & 0x0F) * 4
    if frame[offset] >> 4 != 4 or ihl < 20 or frame[offset + 9] != socket.IPPROTO_UDP:
        return None
    udp = offset + ihl
    if len(frame) < udp + 8 + _BOOTP.size + 4:
        return None
    sport, dport = struct.unpack_from("!HH", frame, udp)
    if (sport, dport) != (68, 67):
        return None
    bootp = udp + 8
    op, htype, hlen, _, xid, _, flags, ciaddr, _, _, _, chaddr, _, _ = _BOOTP.unpack_from(frame, bootp)
    if op != 1 or htype != 1 or hlen != 6 or frame[bootp + _BOOTP.size:bootp + _BOOTP.size + 4] != MAGIC:
        return None
    opts = options(frame[bootp + _BOOTP.size + 4:])
    kind = opts.get(53, b"\x00")[0]
    if kind not in (DISCOVER, REQUEST):
        return None
    client = opts.get(61, b"")
    mac = _mac(client[1:7]) if len(client) == 7 and client[0] == 1 else _mac(chaddr[:6])
    requested = opts.get(50, b"")
    wanted = socket.inet_ntoa(requested) if len(requested) == 4 else (socket.inet_ntoa(struct.pack("!I", ciaddr))
                                                                      if ciaddr else "")
    server = opts.get(54, b"")
    return Request(kind, xid, flags, chaddr, mac, wanted, socket.inet_ntoa(server) if len(server) == 4 else "")


def answer(request: Request, lease: Lease) -> bytes | None:
    """The OFFER for a DISCOVER; for a REQUEST, the ACK of its lease or a NAK for any other address; None for a
    REQUEST that chose another server."""
    server = lease.gateway or "0.0.0.0"
    if request.kind == DISCOVER:
        kind = OFFER
    elif request.server_id and request.server_id != server:
        return None  # the client took another server's offer
    else:
        kind = ACK if request.requested in ("", lease.ip) else NAK
    opts = bytes([53, 1, kind]) + bytes([54, 4]) + socket.inet_aton(server)
    if kind != NAK:
        mask = int(ipaddress.IPv4Network(f"0.0.0.0/{lease.prefix}").netmask)
        opts += bytes([51, 4]) + struct.pack("!I", LEASE_SECONDS) + bytes([1, 4]) + struct.pack("!I", mask)
        if lease.gateway:
            opts += bytes([3, 4]) + socket.inet_aton(lease.gateway)
        if lease.dns:
            opts += bytes([6, 4 * len(lease.dns)]) + b"".join(socket.inet_aton(d) for d in lease.dns)
        name = lease.hostname.encode()[:63]
        if name:
            opts += bytes([12, len(name)]) + name
    opts += b"\xff"
    yiaddr = 0 if kind == NAK else struct.unpack("!I", socket.inet_aton(lease.ip))[0]
    bootp = _BOOTP.pack(2, 1, 6, 0, request.xid, 0, request.flags, 0, yiaddr, 0, 0, request.chaddr, b"", b"") + MAGIC
    payload = bootp + opts
    broadcast = kind == NAK or request.flags & 0x8000
    destination = "255.255.255.255" if broadcast else lease.ip
    udp_length = 8 + len(payload)
    pseudo = socket.inet_aton(server) + socket.inet_aton(destination) + struct.pack("!BBH", 0, 17, udp_length)
    udp_sum = checksum(pseudo + struct.pack("!HHHH", 67, 68, udp_length, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", 67, 68, udp_length, udp_sum)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 0, 0, 64, 17, 0, socket.inet_aton(server),
                         socket.inet_aton(destination))
    ip = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    dst = b"\xff" * 6 if broadcast else request.chaddr[:6]
    src = bytes.fromhex(lease.server_mac.replace(":", ""))
    return dst + src + struct.pack("!HHH", ETH_VLAN, lease.vlan & 0x0FFF, ETH_IP) + ip + udp + payload
