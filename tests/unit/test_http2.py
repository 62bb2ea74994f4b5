"""http2.Connection, sans I/O: two ends wired together in memory, and hostile frames at a server."""

from __future__ import annotations

import random
import struct

import pytest
from hpack import Encoder

from emulator.alcor import http2


class Recorder:
    def __init__(self) -> None:
        self.headers: list[tuple[int, dict, bool]] = []
        self.data: dict[int, bytearray] = {}
        self.ended: list[int] = []
        self.resets: list[tuple[int, int]] = []
        self.goaways: list[int] = []

    def on_headers(self, sid, headers, end_stream):
        self.headers.append((sid, dict(headers), end_stream))
        if end_stream:
            self.ended.append(sid)

    def on_data(self, sid, data, end_stream):
        self.data.setdefault(sid, bytearray()).extend(data)
        if end_stream:
            self.ended.append(sid)

    def on_reset(self, sid, code):
        self.resets.append((sid, code))

    def on_goaway(self, code):
        self.goaways.append(code)


def pair(window: int = 1 << 20, *, chunk: int = 1 << 20):
    client_events, server_events = Recorder(), Recorder()
    client = http2.Connection(client_events, client=True, settings={http2.INITIAL_WINDOW_SIZE: window}, window=window)
    server = http2.Connection(server_events, client=False, settings={http2.INITIAL_WINDOW_SIZE: window}, window=window)

    def exchange() -> None:
        """Until neither end has anything to say, in pieces of `chunk` bytes (frames cut anywhere)."""
        while client.out or server.out:
            for src, dst in ((client, server), (server, client)):
                data = src.take()
                for i in range(0, len(data), chunk):
                    dst.receive(data[i:i + chunk])
    return client, server, client_events, server_events, exchange


REQUEST = http2.header_block([(b":method", b"POST"), (b":path", b"/x/Y"), (b":authority", b"10.0.0.1:50001")])


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_message_larger_than_every_window_passes_both_ways_in_order(chunk):
    client, server, ce, se, exchange = pair(window=70_000, chunk=chunk)
    body = random.Random(1).randbytes(300_000 if chunk > 1 else 40_000)
    sid = client.open_stream()
    client.send_headers(sid, REQUEST)
    client.send_data(sid, body, end_stream=True)
    exchange()
    assert bytes(se.data[sid]) == body and se.ended == [sid]
    assert se.headers[0][1][b":path"] == b"/x/Y"
    server.send_headers(sid, http2.header_block([(b":status", b"200")]))
    server.send_data(sid, body[::-1], trailers=http2.header_block([(b"grpc-status", b"0")]))
    exchange()
    assert bytes(ce.data[sid]) == body[::-1]
    assert ce.headers[-1] == (sid, {b"grpc-status": b"0"}, True) and ce.ended == [sid]
    assert not server.windows and not client.windows and not server._queued  # nothing kept of a finished call


def test_a_peers_huffman_and_dynamic_table_headers_and_continuations_decode():
    _, server, _, se, _ = pair()
    encoder = Encoder()  # as grpcio or h2 would send them: Huffman-coded, indexed into the dynamic table
    blocks = [encoder.encode([(":method", "POST"), (":path", f"/s/M{i}"), ("user-agent", "grpc-c/1.0 " * 40)])
              for i in range(2)]
    data = http2.PREFACE
    for sid, block in ((1, blocks[0]), (3, blocks[1])):
        data += http2.frame(http2.HEADERS, http2.END_STREAM, sid, block[:10])  # the rest in CONTINUATIONs
        data += http2.frame(http2.CONTINUATION, 0, sid, block[10:20])
        data += http2.frame(http2.CONTINUATION, http2.END_HEADERS, sid, block[20:])
    server.receive(data)
    assert [h[b":path"] for _, h, _ in se.headers] == [b"/s/M0", b"/s/M1"]
    assert se.headers[1][1][b"user-agent"].startswith(b"grpc-c/1.0")


def test_settings_ping_and_padding_are_answered_as_the_protocol_says():
    _, server, _, se, _ = pair()
    server.take()
    padded = bytes([3]) + b"\x00\x00\x00\x05hello" + b"\0\0\0"
    server.receive(http2.PREFACE
                   + http2.frame(http2.SETTINGS, 0, 0, struct.pack(">HI", http2.INITIAL_WINDOW_SIZE, 10))
                   + http2.frame(http2.PING, 0, 0, b"12345678")
                   + http2.frame(http2.HEADERS, http2.END_HEADERS, 1, REQUEST)
                   + http2.frame(http2.DATA, http2.PADDED | http2.END_STREAM, 1, padded))
    out = server.take()
    assert http2.frame(http2.SETTINGS, http2.ACK, 0) in out and http2.frame(http2.PING, http2.ACK, 0, b"12345678") in out
    assert bytes(se.data[1]) == b"\x00\x00\x00\x05hello"
    server.send_data(1, b"x" * 25, end_stream=True)  # the peer allows 10 bytes per stream
    sent = server.take()
    assert sent.count(b"x") == 10
    server.receive(http2.frame(http2.WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
    assert server.take().count(b"x") == 15 and not server.windows


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n\r\n" + b"\0" * 8,
    http2.PREFACE + http2.frame(http2.DATA, 0, 0, b"x"),
    http2.PREFACE + http2.frame(http2.HEADERS, http2.END_HEADERS, 2, REQUEST),  # an even id from a client
    http2.PREFACE + http2.frame(http2.HEADERS, 0, 1, REQUEST) + http2.frame(http2.PING, 0, 0, b"8bytes!!"),
    http2.PREFACE + http2.frame(http2.HEADERS, http2.END_HEADERS, 1, b"\xff\xff\xff\xff\xff"),
    http2.PREFACE + b"\x01\x00\x00\x00\x00\x00\x00\x00\x01",  # a frame of 64 KiB
    http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0, b"12345"),
    http2.PREFACE + http2.frame(http2.PUSH_PROMISE, 0, 1, b"\0\0\0\2"),
])
def test_a_broken_peer_gets_a_goaway_and_a_protocol_error(bad):
    _, server, _, _, _ = pair()
    server.take()
    with pytest.raises(http2.ProtocolError):
        server.receive(bad)
    assert server.closed and server.take()[3] == http2.GOAWAY


def test_random_frames_end_in_a_protocol_error_or_are_taken_never_anything_else():
    """Fuzz: valid frame headers around random payloads (and random types, flags and streams)."""
    rng = random.Random(21)
    for _ in range(3000):
        _, server, _, _, _ = pair()
        data = bytearray(http2.PREFACE)
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice([*range(10), 42])
            payload = REQUEST if kind == http2.HEADERS and rng.random() < 0.5 else rng.randbytes(rng.randint(0, 40))
            data += http2.frame(kind, rng.randrange(256), rng.choice([0, 1, 3, 5, 2**31 - 1]), payload)
        try:
            server.receive(bytes(data))
        except http2.ProtocolError:
            assert server.closed
        assert len(server._buffer) < 9 + 40 or server.closed


def test_the_client_waits_for_an_agent_that_is_not_serving_yet(tmp_path):
    """A published port accepts before its agent listens, and closes: the client connects again until the agent
    says something (as gRPC's wait-for-ready), and gives up with a clear error when it never does."""
    import asyncio

    from emulator.alcor import h2client

    path = str(tmp_path / "agent.sock")
    seen = []

    async def scenario():
        async def handle(reader, writer):
            seen.append(1)
            if len(seen) >= 3:
                writer.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame: it serves
                await writer.drain()
                await asyncio.sleep(0.5)
            writer.close()
        server = await asyncio.start_unix_server(handle, path)
        async with server:
            conn = await h2client._open(f"unix:{path}", "x:50001", 5)
            conn.transport.close()
        with pytest.raises(TimeoutError):
            await h2client._open(f"unix:{tmp_path / 'nobody.sock'}", "x:50001", 0.5)
    asyncio.run(scenario())
    assert len(seen) == 3
