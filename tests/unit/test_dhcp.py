"""ACA's DHCP responder: requests parsed from frames, leases answered, hostile frames refused; the agent's entries."""

from __future__ import annotations

import random
import socket
import struct

from emulator.alcor import dhcp, goalstates
from emulator.alcor.agent import Agent
from emulator.alcor.dataplane import RecordingDataplane
from emulator.alcor.schema import common_pb2 as common
from emulator.alcor.schema import goalstate_pb2
from emulator.runtime.icmp import checksum

MAC = "fa:16:3e:00:00:07"


def request(kind: int, mac: str = MAC, requested: str = "", server: str = "", flags: int = 0, xid: int = 0x1234) -> bytes:
    """A DHCP request as udhcpc sends it: broadcast, from 0.0.0.0, UDP 68 to 67."""
    chaddr = bytes.fromhex(mac.replace(":", "")) + b"\x00" * 10
    opts = bytes([53, 1, kind])
    if requested:
        opts += bytes([50, 4]) + socket.inet_aton(requested)
    if server:
        opts += bytes([54, 4]) + socket.inet_aton(server)
    payload = struct.pack("!BBBBIHHIIII16s64s128s", 1, 1, 6, 0, xid, 0, flags, 0, 0, 0, 0, chaddr, b"", b"")
    payload += dhcp.MAGIC + opts + b"\xff"
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
    return b"\xff" * 6 + chaddr[:6] + b"\x08\x00" + ip + udp


def read_answer(frame: bytes) -> tuple[int, dict[int, bytes], str, int]:
    """(message type, options, yiaddr, VLAN) of an answer, checking its IP and UDP checksums on the way."""
    tpid, tci, ethertype = struct.unpack_from("!HHH", frame, 12)
    assert (tpid, ethertype) == (0x8100, 0x0800)
    ip = frame[18:38]
    assert checksum(ip) == 0
    total = struct.unpack_from("!H", ip, 2)[0]
    udp = frame[38:18 + total]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert checksum(pseudo + udp) == 0
    bootp = udp[8:]
    yiaddr = socket.inet_ntoa(bootp[16:20])
    opts = dhcp.options(bootp[240:])
    return opts[53][0], opts, yiaddr, tci & 0xFFF


LEASE = dhcp.Lease("10.6.1.7", 24, "10.6.1.1", ("10.6.1.53",), "d1", "fa:16:3f:00:00:01", 3)


def test_discover_gets_an_offer_and_request_an_ack_with_mask_gateway_and_dns():
    offer = dhcp.answer(dhcp.parse(request(dhcp.DISCOVER)), LEASE)
    kind, opts, yiaddr, vlan = read_answer(offer)
    assert (kind, yiaddr, vlan) == (dhcp.OFFER, "10.6.1.7", 3)
    assert socket.inet_ntoa(opts[1]) == "255.255.255.0" and socket.inet_ntoa(opts[3]) == "10.6.1.1"
    assert socket.inet_ntoa(opts[6]) == "10.6.1.53" and opts[12] == b"d1" and socket.inet_ntoa(opts[54]) == "10.6.1.1"
    assert offer[:6] == bytes.fromhex(MAC.replace(":", ""))  # unicast to the client, as its broadcast flag is off
    ack = dhcp.answer(dhcp.parse(request(dhcp.REQUEST, requested="10.6.1.7", server="10.6.1.1")), LEASE)
    assert read_answer(ack)[0] == dhcp.ACK
    nak = dhcp.answer(dhcp.parse(request(dhcp.REQUEST, requested="10.6.1.99")), LEASE)
    assert read_answer(nak)[0] == dhcp.NAK and nak[:6] == b"\xff" * 6
    assert dhcp.answer(dhcp.parse(request(dhcp.REQUEST, requested="10.6.1.7", server="10.9.9.9")), LEASE) is None


def test_frames_that_are_not_dhcp_requests_get_no_answer_and_never_raise():
    assert dhcp.parse(request(dhcp.OFFER)) is None  # a server's message, not a client's
    assert dhcp.parse(b"") is None and dhcp.parse(request(dhcp.DISCOVER)[:200]) is None
    rng = random.Random(19)
    good = request(dhcp.DISCOVER, requested="10.6.1.7")
    for _ in range(3000):
        frame = bytearray(good)
        for _ in range(rng.randrange(1, 12)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        cut = bytes(frame[:rng.randrange(len(frame) + 1)]) if rng.random() < 0.3 else bytes(frame)
        parsed = dhcp.parse(cut)
        if parsed is not None:
            assert parsed.kind in (dhcp.DISCOVER, dhcp.REQUEST) and len(parsed.chaddr) == 16
            dhcp.answer(parsed, LEASE)


def test_the_agent_keeps_dhcp_entries_as_aca_and_answers_only_its_vms():
    vpc = goalstates.Vpc("app", 2301, "10.6.1.0/24", dhcp=True, dns=("10.6.1.53",))
    d1 = goalstates.Port("d1", vpc, "10.9.0.1", "10.6.1.7", MAC, dhcp=True)
    dp = RecordingDataplane()
    dp.setup()
    agent = Agent(dp, "10.9.0.1", "x.")
    reply = agent.push_v2(goalstates.per_host([d1])["10.9.0.1"])
    assert {(s.resource_type, s.operation_status) for s in reply.operation_statuses} == {
        (common.PORT, common.SUCCESS), (common.DHCP, common.SUCCESS)}
    assert ("dhcp", d1.id) in dp.calls  # the VM boots by DHCP
    kind, opts, yiaddr, vlan = read_answer(agent.answer_dhcp(request(dhcp.DISCOVER)))
    assert (kind, yiaddr, vlan) == (dhcp.OFFER, "10.6.1.7", agent.vlans[2301])
    assert read_answer(agent.answer_dhcp(request(dhcp.DISCOVER)))[1][54] == socket.inet_aton(vpc.gateway)
    assert agent.answer_dhcp(request(dhcp.DISCOVER, mac="fa:16:3e:00:00:08")) is None  # no entry, no answer
    again = goalstate_pb2.GoalStateV2()
    entry = goalstates.dhcp_state(d1)
    again.dhcp_states[entry.configuration.id].CopyFrom(entry)
    (status,) = agent.push_v2(again).operation_statuses
    assert status.operation_status == common.FAILURE  # ACA: a CREATE for a MAC it has
    entry.configuration.mac_address = "fa:16:3e:00:00:07\nx"
    again.dhcp_states[entry.configuration.id].CopyFrom(entry)
    assert agent.push_v2(again).operation_statuses[0].operation_status == common.INVALID_ARG
    gone = goalstate_pb2.GoalStateV2()
    gone.dhcp_states["x"].CopyFrom(goalstates.dhcp_state(d1, common.DELETE))
    agent.push_v2(gone)
    assert agent.answer_dhcp(request(dhcp.DISCOVER)) is None
