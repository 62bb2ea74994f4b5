"""gRPC over HTTP/2 on asyncio, for agents that share one process: many hollow compute nodes, one socket.

Why not grpcio's server: it cannot tell which local address a connection came in on, so one server could not
serve many nodes on their own addresses; a grpcio server per node costs threads and megabytes each. Here a
connection is routed by the address it arrived at (TCP), or by its `:authority` (a unix socket, where every
node shares the path), to the node's handlers. Unary and bidirectional-streaming methods, one reply per
request message, in order; flow control both ways (http2.py), so a 100,000-neighbour goal state and its reply pass.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from emulator.alcor import http2

log = logging.getLogger("cloudemu.h2server")

OK, UNKNOWN, INTERNAL, UNIMPLEMENTED, UNAVAILABLE, RESOURCE_EXHAUSTED = 0, 2, 13, 12, 14, 8
#: The largest request message taken (as the full agent's gRPC server: a 100,000-neighbour state is tens of MB).
MAX_MESSAGE = 512 * 1024 * 1024
#: Receive window per stream and per connection: a large goal state arrives without a round trip per 64 KB.
WINDOW = 16 * 1024 * 1024
MAX_STREAMS = 128
PREFIX = struct.Struct(">BI")  # gRPC's length-prefixed message: compressed flag, length
SETTINGS = {http2.INITIAL_WINDOW_SIZE: WINDOW, http2.MAX_CONCURRENT_STREAMS: MAX_STREAMS}
#: The reply's headers, the same for every call (plain literals: see http2.header_block).
RESPONSE = http2.header_block([(b":status", b"200"), (b"content-type", b"application/grpc")])


@dataclass(frozen=True)
class Method:
    """One RPC: whether the client streams, how to read a request, what answers it (node, request -> reply), and
    how long the reply is held back (node, request, reply -> seconds; it may change the reply first)."""

    streaming: bool
    parse: Callable[[bytes | memoryview], object]
    call: Callable[[object, object], object]
    hold: Callable[[object, object, object], float] | None = None


@dataclass
class _Stream:
    method: Method
    node: object
    #: What has arrived of the message being read, as it came: joined once it is whole (a 26 MB message grown
    #: into one buffer by += is copied again at each growth; from many connections at once that was a sixth
    #: of a pack's time).
    chunks: list[bytes] = field(default_factory=list)
    have: int = 0
    size: int | None = None  # the message's length, once its prefix is in
    headers_sent: bool = False
    answered: int = 0
    closed: bool = False  # its trailers are queued: whatever else arrives on it is dropped
    held: int = 0  # replies waiting for their time (Method.hold)
    ending: bool = False  # the client has ended the call: it ends once the held replies are out


class Http2Protocol(asyncio.Protocol):
    """An asyncio connection carrying an http2.Connection: what it has to send goes out after each event; a peer
    that breaks HTTP/2 gets its GOAWAY and the connection closes. The gRPC server and client on top."""

    def __init__(self, *, client: bool, settings: dict[int, int]):
        self.transport: asyncio.Transport | None = None
        self.h2 = http2.Connection(self, client=client, settings=settings, window=WINDOW)

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.h2.receive(data)
        except http2.ProtocolError as exc:
            self.broken(exc)
            self._flush()
            self.transport.close()
            return
        self._flush()

    def broken(self, exc: http2.ProtocolError) -> None:
        """The peer broke HTTP/2 (its GOAWAY is being sent)."""

    def _flush(self) -> None:
        if self.h2.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.take())


class GrpcProtocol(Http2Protocol):
    """One HTTP/2 connection. `route(local address or authority host)` gives the node, or None."""

    def __init__(self, methods: dict[str, Method], route: Callable[[str], object | None]):
        super().__init__(client=False, settings=SETTINGS)
        self.methods, self.route = methods, route
        self.streams: dict[int, _Stream] = {}
        self.local: str | None = None
        self.last_request = 0

    # -- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        name = transport.get_extra_info("sockname")
        self.local = name[0] if isinstance(name, tuple) else None  # a unix socket: routed by :authority
        super().connection_made(transport)

    def broken(self, exc: http2.ProtocolError) -> None:
        log.info("closing a connection that broke HTTP/2: %s", exc)

    def connection_lost(self, exc) -> None:
        self.streams.clear()

    # -- HTTP/2 events ---------------------------------------------------------------
    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        if sid > self.last_request:  # a new call (http2 has checked that ids only grow); else its trailers
            self.last_request = sid
            self._request(sid, dict(headers))
        if end_stream:
            self._ended(sid)

    def on_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        self._data(sid, data)
        if end_stream:
            self._ended(sid)

    def on_reset(self, sid: int, code: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.closed = True

    def on_goaway(self, code: int) -> None:
        pass  # the client closes when its calls are done; a call still open is answered

    # -- gRPC ------------------------------------------------------------------------
    def _request(self, sid: int, headers: dict[bytes, bytes]) -> None:
        method = self.methods.get(headers.get(b":path", b"").decode("latin-1"))
        if method is None:
            self._trailers_only(sid, UNIMPLEMENTED, "no such method here")
            return
        if len(self.streams) >= MAX_STREAMS:
            self.h2.reset(sid, http2.REFUSED_STREAM)
            return
        authority = headers.get(b":authority", b"").decode("latin-1").rsplit(":", 1)[0].strip("[]")
        node = self.route(self.local or authority)
        if node is None:
            self._trailers_only(sid, UNAVAILABLE, f"no agent at {self.local or authority or '(no address)'}")
            return
        self.streams[sid] = _Stream(method, node)

    def _data(self, sid: int, data: bytes) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.closed or not data:
            return
        stream.chunks.append(data)
        stream.have += len(data)
        while stream.have >= PREFIX.size:
            if stream.size is None:
                if len(stream.chunks[0]) < PREFIX.size:
                    stream.chunks = [b"".join(stream.chunks)]
                compressed, size = PREFIX.unpack_from(stream.chunks[0])
                if size > MAX_MESSAGE or compressed:
                    self._close(sid, RESOURCE_EXHAUSTED if size > MAX_MESSAGE else UNIMPLEMENTED,
                                "message too large" if size > MAX_MESSAGE else "compressed messages are not taken")
                    return
                stream.size = size
            end = PREFIX.size + stream.size
            if stream.have < end:
                return
            whole = stream.chunks[0] if len(stream.chunks) == 1 else b"".join(stream.chunks)
            body = memoryview(whole)[PREFIX.size:end]  # read in place: protobuf takes any buffer
            rest = whole[end:]
            stream.chunks, stream.have, stream.size = ([rest] if rest else []), len(rest), None
            if not stream.method.streaming and stream.answered:
                self._close(sid, INTERNAL, "a unary call takes one message")
                return
            self._answer(sid, stream, body)
            if stream.closed:
                return

    def _answer(self, sid: int, stream: _Stream, body: bytes | memoryview) -> None:
        try:
            request = stream.method.parse(body)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, or anything a hostile body makes it raise
            self._close(sid, INTERNAL, "the request does not parse")
            return
        try:
            reply = stream.method.call(stream.node, request)
        except DecodeError:  # a part read only when taken (a pack's neighbour entries): the request does not parse
            self._close(sid, INTERNAL, "the request does not parse")
            return
        except Exception as exc:  # noqa: BLE001 - a node's fault ends this call, never the process
            log.exception("a call failed")
            self._close(sid, UNKNOWN, f"{type(exc).__name__}: {exc}"[:200])
            return
        wait = stream.method.hold(stream.node, request, reply) if stream.method.hold else 0.0
        payload = reply.SerializeToString()
        stream.answered += 1
        if wait > 0:
            stream.held += 1
            asyncio.get_running_loop().call_later(wait, self._release, sid, stream, payload)
        else:
            self._reply(sid, stream, payload)

    def _reply(self, sid: int, stream: _Stream, payload: bytes) -> None:
        if not stream.headers_sent:
            self.h2.send_headers(sid, RESPONSE)
            stream.headers_sent = True
        self.h2.send_data(sid, PREFIX.pack(0, len(payload)) + payload)

    def _release(self, sid: int, stream: _Stream, payload: bytes) -> None:
        """A held reply's time has come (in order: a node's replies are held until it would be free)."""
        stream.held -= 1
        if stream.closed or self.transport is None or self.transport.is_closing():
            return  # the call was reset or failed meanwhile, or the client left
        self._reply(sid, stream, payload)
        if stream.ending and not stream.held:
            self._close(sid, OK, "")
        self._flush()

    def _ended(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.closed:
            return
        if stream.have or (not stream.method.streaming and not stream.answered):
            self._close(sid, INTERNAL, "the call ended inside a message" if stream.have else "no request message")
            return
        if stream.held:
            stream.ending = True  # its trailers follow the last held reply
            return
        self._close(sid, OK, "")

    def _close(self, sid: int, status: int, message: str) -> None:
        """The call's end: its trailers after whatever replies are still held back by the windows."""
        stream = self.streams.pop(sid)
        stream.closed = True
        if not stream.headers_sent:
            self._trailers_only(sid, status, message)
            return
        self.h2.send_data(sid, b"", trailers=_status(status, message))

    def _trailers_only(self, sid: int, status: int, message: str) -> None:
        self.h2.send_headers(sid, RESPONSE + _status(status, message), end_stream=True)



def _status(status: int, message: str) -> bytes:
    headers = [(b"grpc-status", str(status).encode())]
    if message:
        headers.append((b"grpc-message", _percent(message)))
    return http2.header_block(headers)


def _percent(text: str) -> bytes:
    """grpc-message is percent-encoded (outside printable ASCII, and % itself)."""
    return "".join(c if " " <= c <= "~" and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in text).encode()
