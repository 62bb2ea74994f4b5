"""ACA's on-demand engine, over fakes of its controller and data plane: one question per destination, held frames
answered or sent on, unknown destinations left quiet for a while, hostile frames ignored."""

from __future__ import annotations

import random
import socket
import struct
import threading

from emulator.alcor import ondemand
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstateprovisioner_pb2 as gsp

A_MAC, B_MAC = "fa:16:3e:00:00:01", "fa:16:3e:00:00:02"


def arp_request(vlan: int = 3, sender: str = "10.8.1.11", target: str = "10.8.1.12") -> bytes:
    mac = bytes.fromhex(A_MAC.replace(":", ""))
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(sender) + b"\0" * 6 + socket.inet_aton(target)
    return b"\xff" * 6 + mac + struct.pack("!HHH", 0x8100, vlan, 0x0806) + arp


def ip_frame(dst_mac: str, vlan: int = 3, target: str = "10.8.1.12") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 1, 0, socket.inet_aton("10.8.1.11"), socket.inet_aton(target))
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(A_MAC.replace(":", "")) + \
        struct.pack("!HHH", 0x8100, vlan, 0x0800) + ip + b"\0" * 8


class Controller:
    def __init__(self, knows: dict[str, str]):
        self.knows, self.learned, self.asked = knows, {}, []
        self.gate = threading.Event()

    def ask(self, request: gsp.HostRequest) -> gsp.HostRequestReply:
        self.gate.wait(5)
        (r,) = request.state_requests
        self.asked.append((r.tunnel_id, r.source_ip, r.destination_ip, r.protocol, r.request_type))
        reply = gsp.HostRequestReply(format_version=1)
        found = self.knows.get(r.destination_ip)
        if found:
            self.learned[(r.tunnel_id, r.destination_ip)] = found  # the neighbour pushed before the answer
        reply.operation_statuses.add(request_id=r.request_id,
                                     operation_status=common.SUCCESS if found else common.FAILURE)
        return reply


def engine(controller: Controller, sent: list) -> ondemand.OnDemand:
    return ondemand.OnDemand(controller.ask, sent.append, lambda vlan: 2401 if vlan == 3 else None,
                             lambda vni, ip: controller.learned.get((vni, ip)), lambda vni, ip: ip == "10.8.1.99")


def test_one_question_per_destination_and_the_held_arp_requests_answered():
    controller, sent = Controller({"10.8.1.12": B_MAC}), []
    e = engine(controller, sent)
    for _ in range(3):
        e.punted(arp_request())  # the VM's retries while the first question is out
    controller.gate.set()
    e.pool.shutdown(wait=True)
    assert controller.asked == [(2401, "10.8.1.11", "10.8.1.12", common.ARP, common.ON_DEMAND)]
    assert len(sent) == 3
    reply = sent[0]
    assert reply[:6] == bytes.fromhex(A_MAC.replace(":", "")) and reply[6:12] == bytes.fromhex(B_MAC.replace(":", ""))
    assert struct.unpack_from("!HH", reply, 12) == (0x8100, 3) and struct.unpack_from("!H", reply, 18 + 6)[0] == 2
    assert reply[18 + 14:18 + 18] == socket.inet_aton("10.8.1.12") and e.stats["answered"] == 1


def test_frames_go_on_only_to_the_neighbours_mac_and_unknowns_are_quiet_for_a_while():
    controller, sent = Controller({"10.8.1.12": B_MAC}), []
    controller.gate.set()
    e = engine(controller, sent)
    e.punted(ip_frame(B_MAC))
    e.pool.shutdown(wait=True)
    assert sent == [ip_frame(B_MAC)] and controller.asked[0][3] == common.ICMP
    e = engine(controller, sent := [])
    e.punted(ip_frame("fa:16:3f:00:00:01"))  # to a gateway: routed, asked for, then dropped (table 0 routes the next)
    e.pool.shutdown(wait=True)
    assert sent == [] and e.stats["answered"] == 1
    nobody = Controller({})
    nobody.gate.set()
    e = engine(nobody, sent := [])
    e.punted(arp_request(target="10.8.1.50"))
    e.pool.shutdown(wait=True)
    e.pool = ondemand.ThreadPoolExecutor(max_workers=1)
    e.punted(arp_request(target="10.8.1.50"))  # within the quiet second: not asked again
    e.pool.shutdown(wait=True)
    assert e.stats["asked"] == 1 and e.stats["unknown"] == 1 and sent == []
    e.punted(arp_request(target="10.8.1.99"))  # a port of this host: br-int answers, nobody is asked
    assert e.stats["asked"] == 1


def test_hostile_frames_are_ignored():
    controller, sent = Controller({}), []
    controller.gate.set()
    e = engine(controller, sent)
    rng = random.Random(5)
    good = arp_request()
    for _ in range(2000):
        frame = bytearray(good)
        for _ in range(rng.randrange(1, 8)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        e.punted(bytes(frame[:rng.randrange(len(frame) + 1)]))
    e.pool.shutdown(wait=True)
    assert all(asked[0] == 2401 for asked in controller.asked)  # only frames of a known VLAN were asked about
