"""gRPC over HTTP/2 on asyncio (h2), for agents that share one process: many hollow compute nodes, one socket.

Why not grpcio's server: it cannot tell which local address a connection came in on, so one server could not
serve many nodes on their own addresses; a grpcio server per node costs threads and megabytes each. Here a
connection is routed by the address it arrived at (TCP), or by its `:authority` (a unix socket, where every
node shares the path), to the node's handlers. Unary and bidirectional-streaming methods, one reply per
request message, in order; flow control both ways, so a 100,000-neighbour goal state and its reply pass.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset, WindowUpdated
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

log = logging.getLogger("cloudemu.h2server")

OK, UNKNOWN, INTERNAL, UNIMPLEMENTED, UNAVAILABLE, RESOURCE_EXHAUSTED = 0, 2, 13, 12, 14, 8
#: The largest request message taken (as the full agent's gRPC server: a 100,000-neighbour state is tens of MB).
MAX_MESSAGE = 512 * 1024 * 1024
#: Receive window per stream: a large goal state arrives without a round trip per 64 KB.
WINDOW = 16 * 1024 * 1024
WINDOW_AT_START = 65535  # HTTP/2's connection window before any update
PREFIX = struct.Struct(">BI")  # gRPC's length-prefixed message: compressed flag, length
#: Sent in the first SETTINGS frame. Not MAX_FRAME_SIZE: h2 sizes its inbound frame buffer from the settings it
#: was built with, and would refuse the larger frames it had just allowed.
SETTINGS = {SettingCodes.INITIAL_WINDOW_SIZE: WINDOW, SettingCodes.MAX_CONCURRENT_STREAMS: 128}


@dataclass(frozen=True)
class Method:
    """One RPC: whether the client streams, how to read a request, and what answers it (node, request -> reply)."""

    streaming: bool
    parse: Callable[[bytes], object]
    call: Callable[[object, object], object]


@dataclass
class _Stream:
    method: Method
    node: object
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    headers_sent: bool = False
    widened: bool = False  # the connection's window was opened for the message being read
    answered: int = 0
    closing: tuple[int, str] | None = None  # the trailers to send once the outbox is empty


class GrpcProtocol(asyncio.Protocol):
    """One HTTP/2 connection. `route(local address or authority host)` gives the node, or None."""

    def __init__(self, methods: dict[str, Method], route: Callable[[str], object | None]):
        self.methods, self.route = methods, route
        self.streams: dict[int, _Stream] = {}
        self.local: str | None = None
        self.transport: asyncio.Transport | None = None
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))

    # -- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        name = transport.get_extra_info("sockname")
        self.local = name[0] if isinstance(name, tuple) else None  # a unix socket: routed by :authority
        # In the first SETTINGS frame, not an update after it: a connection often carries a single call, and
        # every frame costs both ends (h2 is pure Python).
        self.conn.local_settings = Settings(client=False, initial_values=SETTINGS)
        self.conn.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            log.info("closing a connection that broke HTTP/2: %s", exc)
            self._flush()
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._request(event.stream_id, dict(event.headers))
            elif isinstance(event, DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                self._data(event.stream_id, event.data)
            elif isinstance(event, StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                for sid in ([event.stream_id] if event.stream_id else list(self.streams)):
                    self._pump(sid)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self._flush()

    def connection_lost(self, exc) -> None:
        self.streams.clear()

    # -- gRPC ------------------------------------------------------------------------
    def _request(self, sid: int, headers: dict[bytes, bytes]) -> None:
        method = self.methods.get(headers.get(b":path", b"").decode("latin-1"))
        if method is None:
            self._trailers_only(sid, UNIMPLEMENTED, "no such method here")
            return
        authority = headers.get(b":authority", b"").decode("latin-1").rsplit(":", 1)[0].strip("[]")
        node = self.route(self.local or authority)
        if node is None:
            self._trailers_only(sid, UNAVAILABLE, f"no agent at {self.local or authority or '(no address)'}")
            return
        self.streams[sid] = _Stream(method, node)

    def _data(self, sid: int, data: bytes) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.closing:
            return
        stream.inbox += data
        while len(stream.inbox) >= PREFIX.size:
            compressed, size = PREFIX.unpack_from(stream.inbox)
            if size > MAX_MESSAGE or compressed:
                self._close(sid, RESOURCE_EXHAUSTED if size > MAX_MESSAGE else UNIMPLEMENTED,
                            "message too large" if size > MAX_MESSAGE else "compressed messages are not taken")
                return
            if len(stream.inbox) < PREFIX.size + size:
                wanted = min(size, WINDOW) - self.conn.inbound_flow_control_window
                if not stream.widened and size > WINDOW_AT_START and wanted > 0:
                    # a large message: room for all of it at once, rather than a window update per 64 KB (never
                    # past WINDOW, however many large messages come: the window must stay below 2^31)
                    self.conn.increment_flow_control_window(wanted)
                    stream.widened = True
                return
            stream.widened = False
            body = bytes(stream.inbox[PREFIX.size:PREFIX.size + size])
            del stream.inbox[:PREFIX.size + size]
            if not stream.method.streaming and stream.answered:
                self._close(sid, INTERNAL, "a unary call takes one message")
                return
            self._answer(sid, stream, body)
            if stream.closing:
                return

    def _answer(self, sid: int, stream: _Stream, body: bytes) -> None:
        try:
            request = stream.method.parse(body)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, or anything a hostile body makes it raise
            self._close(sid, INTERNAL, "the request does not parse")
            return
        try:
            reply = stream.method.call(stream.node, request)
        except Exception as exc:  # noqa: BLE001 - a node's fault ends this call, never the process
            log.exception("a call failed")
            self._close(sid, UNKNOWN, f"{type(exc).__name__}: {exc}"[:200])
            return
        payload = reply.SerializeToString()
        if not stream.headers_sent:
            self.conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            stream.headers_sent = True
        stream.outbox += PREFIX.pack(0, len(payload)) + payload
        stream.answered += 1
        self._pump(sid)

    def _ended(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.closing:
            return
        if stream.inbox or (not stream.method.streaming and not stream.answered):
            self._close(sid, INTERNAL, "the call ended inside a message" if stream.inbox else "no request message")
            return
        self._close(sid, OK, "")

    def _close(self, sid: int, status: int, message: str) -> None:
        stream = self.streams[sid]
        if not stream.headers_sent:
            self.streams.pop(sid)
            self._trailers_only(sid, status, message)
            return
        stream.closing = (status, message)
        self._pump(sid)

    def _trailers_only(self, sid: int, status: int, message: str) -> None:
        headers = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", str(status).encode())]
        if message:
            headers.append((b"grpc-message", _percent(message)))
        self.conn.send_headers(sid, headers, end_stream=True)

    def _pump(self, sid: int) -> None:
        """Whatever of the stream's replies the peer's windows allow; its trailers once all are out."""
        stream = self.streams.get(sid)
        if stream is None:
            return
        while stream.outbox:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                return
            chunk = bytes(stream.outbox[:room])
            del stream.outbox[:room]
            self.conn.send_data(sid, chunk)
        if stream.closing is not None:
            status, message = stream.closing
            trailers = [(b"grpc-status", str(status).encode())] + ([(b"grpc-message", _percent(message))] if message else [])
            self.conn.send_headers(sid, trailers, end_stream=True)
            del self.streams[sid]

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)


def _percent(text: str) -> bytes:
    """grpc-message is percent-encoded (outside printable ASCII, and % itself)."""
    return "".join(c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in text).encode()
