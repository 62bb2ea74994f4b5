"""ACA's on-demand engine: a VM's first packet to a destination this host has no flow for asks the controller.

br-tun sends what table 20 (no neighbour for the MAC) or table 51 (no answer for an ARP target) does not know
to the agent. The engine reads the destination (its VNI from the frame's local VLAN), asks the controller with
a HostRequest over RequestGoalStates (ACA's `-a/-p` NCM), which pushes the neighbour's goal state to this agent
and then answers; the frames held meanwhile go on (an ARP request is answered with the neighbour's MAC, other
frames re-enter br-tun). One question per destination at a time; a destination the controller does not know is
not asked about again for a second. The counts and times are the engine's `stats`.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from emulator.alcor.dhcp import ETH_IP, ETH_VLAN
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstateprovisioner_pb2 as gsp

log = logging.getLogger("cloudemu.agent")
QUIET_SECONDS = 1.0  # an unknown destination is not asked about again sooner
ETH_ARP = 0x0806


class Punted(NamedTuple):
    vlan: int
    arp: bool  # an ARP request (else an IPv4 frame)
    source_ip: str
    destination_ip: str
    protocol: int  # Alcor's Protocol


def read(frame: bytes) -> Punted | None:
    """What a punted frame asks for: its local VLAN, and the addresses of an ARP request or an IPv4 packet."""
    if len(frame) < 18 or struct.unpack_from("!H", frame, 12)[0] != ETH_VLAN:
        return None  # br-tun's frames from br-int carry their VLAN
    vlan = struct.unpack_from("!H", frame, 14)[0] & 0x0FFF
    kind = struct.unpack_from("!H", frame, 16)[0]
    if kind == ETH_ARP and len(frame) >= 18 + 28:
        op = struct.unpack_from("!H", frame, 18 + 6)[0]
        if op != 1:
            return None
        return Punted(vlan, True, socket.inet_ntoa(frame[18 + 14:18 + 18]), socket.inet_ntoa(frame[18 + 24:18 + 28]),
                      common.ARP)
    if kind == ETH_IP and len(frame) >= 18 + 20 and frame[18] >> 4 == 4:
        proto = {6: common.TCP, 17: common.UDP, 1: common.ICMP}.get(frame[18 + 9], common.TCP)
        return Punted(vlan, False, socket.inet_ntoa(frame[18 + 12:18 + 16]), socket.inet_ntoa(frame[18 + 16:18 + 20]),
                      proto)
    return None


def arp_reply(request: bytes, mac: str) -> bytes:
    """The answer to a (tagged) ARP request: `mac` has the address asked for."""
    sender_mac, sender_ip, target_ip = request[18 + 8:18 + 14], request[18 + 14:18 + 18], request[18 + 24:18 + 28]
    own = bytes.fromhex(mac.replace(":", ""))
    arp = struct.pack("!HHBBH", 1, ETH_IP, 6, 4, 2) + own + target_ip + sender_mac + sender_ip
    return request[6:12] + own + request[12:18] + arp


class OnDemand:
    """The engine of one agent. `ask` sends a HostRequest and returns the reply; `send` puts a frame back on br-tun;
    `vni_of` maps a local VLAN to its VNI; `known(vni, ip)` is the MAC the agent now has for an address (a
    neighbour), and `local(vni, ip)` whether a port of this host has it (then br-int answers, nobody is asked)."""

    def __init__(self, ask: Callable[[gsp.HostRequest], gsp.HostRequestReply], send: Callable[[bytes], None],
                 vni_of: Callable[[int], int | None], known: Callable[[int, str], str | None],
                 local: Callable[[int, str], bool]):
        self.ask, self.send, self.vni_of, self.known, self.local = ask, send, vni_of, known, local
        self.pending: dict[tuple[int, str], list[bytes]] = {}
        self.quiet: dict[tuple[int, str], float] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="on-demand")
        self.stats = {"asked": 0, "answered": 0, "unknown": 0, "failed": 0, "seconds": []}

    def punted(self, frame: bytes) -> None:
        """A frame br-tun did not know what to do with (the data plane's reading thread)."""
        what = read(frame)
        if what is None:
            return
        vni = self.vni_of(what.vlan)
        if vni is None or self.local(vni, what.destination_ip):
            return
        key = (vni, what.destination_ip)
        mac = self.known(*key)
        if mac is not None and (what.arp or frame[:6] == bytes.fromhex(mac.replace(":", ""))):
            self._release([frame], mac)  # learned since br-tun punted it (a frame in flight meanwhile)
            return
        # else unknown, or known at L2 only while this frame goes to a gateway: its route is asked for
        with self.lock:
            if key in self.pending:
                self.pending[key].append(frame)
                return
            if self.quiet.get(key, 0.0) > time.monotonic():
                return
            self.pending[key] = [frame]
        self.pool.submit(self._resolve, key, what)

    def _resolve(self, key: tuple[int, str], what: Punted) -> None:
        vni, destination = key
        request = gsp.HostRequest(format_version=1)
        request.state_requests.add(request_type=common.ON_DEMAND, request_id=str(uuid.uuid4()), tunnel_id=vni,
                                   source_ip=what.source_ip, destination_ip=destination, ethertype=common.IPV4,
                                   protocol=what.protocol)
        t0 = time.perf_counter()
        try:
            reply = self.ask(request)
            ok = [s.operation_status for s in reply.operation_statuses] == [common.SUCCESS]
            outcome = "answered" if ok else "unknown"
        except Exception as exc:  # noqa: BLE001 - no controller, or it failed: the frames are dropped, as ACA's
            log.warning("on-demand: asking for %s in VNI %d failed: %s", destination, vni, exc)
            ok, outcome = False, "failed"
        seconds = time.perf_counter() - t0
        with self.lock:
            frames = self.pending.pop(key, [])
            self.stats["asked"] += 1
            self.stats[outcome] += 1
            self.stats["seconds"].append(seconds)
            if not ok:
                self.quiet[key] = time.monotonic() + QUIET_SECONDS
        mac = self.known(vni, destination) if ok else None
        log.info("on-demand: %s in VNI %d %s in %.1f ms (%d frame(s) held)", destination, vni, outcome, seconds * 1e3,
                 len(frames))
        if mac is not None:
            self._release(frames, mac)

    def _release(self, frames: list[bytes], mac: str) -> None:
        """ARP requests answered; frames to the neighbour's MAC back into br-tun. A routed frame (to its gateway's MAC)
        is dropped: table 0 routes it, and br-tun takes it back past table 0; the VM's next packet is routed."""
        own = bytes.fromhex(mac.replace(":", ""))
        for frame in frames:
            try:
                if read(frame).arp:
                    self.send(arp_reply(frame, mac))
                elif frame[:6] == own:
                    self.send(frame)
            except OSError as exc:
                log.warning("on-demand: sending a held frame back failed: %s", exc)
