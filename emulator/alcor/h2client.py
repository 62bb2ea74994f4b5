"""A gRPC client on asyncio for driving many agents at once: one connection per agent, a bounded number open,
each goal state on its own PushGoalStatesStream call (as Alcor's NCM calls ACA). HTTP/2 as http2.py does it.

Why not grpcio here: its Python client costs about 3 ms of CPU per call and 200 ms to open a channel, so
100,000 agents each on their own connection would take the controller minutes; this one costs a fraction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emulator.alcor import http2
from emulator.alcor.h2server import PREFIX, WINDOW, Http2Protocol
from emulator.model import ACA_PORT

#: The path prefix of Alcor's GoalStateProvisioner methods (as its .proto names the service).
SERVICE = "/alcor.schema.GoalStateProvisioner/"
PUSH_STREAM = SERVICE + "PushGoalStatesStream"
SETTINGS = {http2.INITIAL_WINDOW_SIZE: WINDOW, http2.ENABLE_PUSH: 0}
CONNECT_TIMEOUT = 30.0  # an agent still starting (its port published before it listens) is waited for this long
_GRPC = http2.header_block([(b"te", b"trailers"), (b"content-type", b"application/grpc")])


class CallError(Exception):
    """A call that ended without its reply: the gRPC status and message, or why the connection failed."""


@dataclass
class Answer:
    reply: bytes
    sent_at: float  # perf_counter when the request left
    seconds: float


class _Call:
    __slots__ = ("reply", "status", "message", "done")

    def __init__(self, done: asyncio.Future):
        self.reply = bytearray()
        self.status: int | None = None
        self.message = ""
        self.done = done


class _Connection(Http2Protocol):
    """One connection to an agent (or a pack of them, naming each call's node as its authority)."""

    def __init__(self, authority: str):
        super().__init__(client=True, settings=SETTINGS)
        self.authority = authority.encode()
        self.calls: dict[int, _Call] = {}
        self.lost: Exception | None = None
        #: Done once the server has said something (its SETTINGS come first): it serves. A port forwarded to an agent
        #: that does not listen yet accepts, then closes without a word.
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()

    # -- asyncio ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        super().data_received(data)

    def broken(self, exc: http2.ProtocolError) -> None:
        self._fail(CallError(f"the agent broke HTTP/2: {exc}"))

    def connection_lost(self, exc) -> None:
        self._fail(CallError("the agent closed the connection"))
        if not self.ready.done():
            self.ready.set_exception(CallError("the agent closed the connection before serving"))

    def _fail(self, error: Exception) -> None:
        self.lost = self.lost or error
        for call in self.calls.values():
            if not call.done.done():
                call.done.set_exception(error)
        self.calls.clear()

    # -- HTTP/2 events ---------------------------------------------------------------
    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        for name, value in headers:
            if name == b"grpc-status":
                call.status = int(value) if value.isdigit() else -1
            elif name == b"grpc-message":
                call.message = value.decode("latin-1")
        if end_stream:
            self._finish(sid)

    def on_data(self, sid: int, data: bytes, end_stream: bool) -> None:
        call = self.calls.get(sid)
        if call is not None:
            call.reply += data
            if end_stream:
                self._finish(sid)

    def on_reset(self, sid: int, code: int) -> None:
        call = self.calls.pop(sid, None)
        if call is not None and not call.done.done():
            call.done.set_exception(CallError(f"the agent reset the call (error {code})"))

    def on_goaway(self, code: int) -> None:
        if code != http2.NO_ERROR:
            self._fail(CallError(f"the agent ended the connection (error {code})"))

    def _finish(self, sid: int) -> None:
        call = self.calls.pop(sid)
        if not call.done.done():
            call.done.set_result(None)

    # -- calls -----------------------------------------------------------------------
    async def call(self, path: str, request: bytes, timeout: float) -> bytes:
        """One request message, one reply message."""
        if self.lost is not None:
            raise self.lost
        sid = self.h2.open_stream()
        call = self.calls[sid] = _Call(asyncio.get_running_loop().create_future())
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                   (b":authority", self.authority)]
        self.h2.send_headers(sid, http2.header_block(headers) + _GRPC)
        self.h2.send_data(sid, PREFIX.pack(0, len(request)) + request, end_stream=True)
        self._flush()
        try:
            async with asyncio.timeout(timeout):
                await call.done
        except TimeoutError:
            raise CallError(f"no reply within {timeout:g} s") from None
        reply = call.reply
        if call.status not in (0, None) or len(reply) < PREFIX.size:
            raise CallError(f"gRPC status {call.status}: {call.message}" if call.status else "no reply message")
        _, size = PREFIX.unpack_from(reply)
        return bytes(reply[PREFIX.size:PREFIX.size + size])

    def close(self) -> None:
        self.h2.goaway()
        self._flush()
        if self.transport is not None:
            self.transport.close()


async def _open(target: str, authority: str, timeout: float) -> _Connection:
    """A connection the agent serves on, tried again (every 0.2 s, within `timeout`) while the agent is not up yet:
    refused, or closed before it said anything, as gRPC's wait-for-ready does."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            protocol = _Connection(authority)
            try:
                if target.startswith("unix:"):
                    await loop.create_unix_connection(lambda p=protocol: p, target[5:])
                else:
                    host, _, port = target.rpartition(":")
                    await loop.create_connection(lambda p=protocol: p, host.strip("[]"), int(port))
                await protocol.ready
                return protocol
            except (ConnectionRefusedError, FileNotFoundError, CallError):
                await asyncio.sleep(0.2)


async def push_all(targets: dict[str, str], messages: dict[str, Sequence[bytes | Callable[[], bytes]]], *,
                   connections: int = 256, timeout: float = 600.0, on_done: Callable[[str, list[Answer]], None] | None = None
                   ) -> dict[str, list[Answer] | CallError]:
    """Each host's messages over its own connection to `targets[host]` (naming the host as the authority), one
    call per message, in order; at most `connections` open at once. A host whose call failed gets its error. A
    message may be what makes its bytes, made when its turn comes."""
    gate = asyncio.Semaphore(max(1, connections))
    out: dict[str, list[Answer] | CallError] = {}

    async def one(host: str) -> None:
        async with gate:
            try:
                conn = await _open(targets[host], f"{host}:{ACA_PORT}", min(timeout, CONNECT_TIMEOUT))
            except (TimeoutError, OSError) as exc:
                why = f"not serving within {min(timeout, CONNECT_TIMEOUT):g} s" if isinstance(exc, TimeoutError) else exc
                out[host] = CallError(f"cannot connect to {targets[host]}: {why}")
                return
            answers = []
            try:
                for request in messages[host]:
                    if callable(request):
                        request = request()
                    t0 = time.perf_counter()
                    reply = await conn.call(PUSH_STREAM, request, timeout)
                    answers.append(Answer(reply, t0, time.perf_counter() - t0))
                out[host] = answers
            except (TimeoutError, CallError, OSError) as exc:
                out[host] = exc if isinstance(exc, CallError) else CallError(str(exc) or type(exc).__name__)
            finally:
                conn.close()
            if on_done and isinstance(out[host], list):
                on_done(host, answers)

    await asyncio.gather(*(one(host) for host in messages))
    return out
