"""A gRPC client on asyncio (h2) for driving many agents at once: one connection per agent, a bounded number
open, each goal state on its own PushGoalStatesStream call (as Alcor's NCM calls ACA).

Why not grpcio here: its Python client costs about 3 ms of CPU per call and 200 ms to open a channel, so
100,000 agents each on their own connection would take the controller minutes; this one costs a fraction.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes, Settings

from emulator.alcor.h2server import PREFIX, WINDOW
from emulator.model import ACA_PORT

#: The path prefix of Alcor's GoalStateProvisioner methods (as its .proto names the service).
SERVICE = "/alcor.schema.GoalStateProvisioner/"
PUSH_STREAM = SERVICE + "PushGoalStatesStream"


class CallError(Exception):
    """A call that ended without its reply: the gRPC status and message, or why the connection failed."""


@dataclass
class Answer:
    reply: bytes
    sent_at: float  # perf_counter when the request left
    seconds: float


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str):
        self.reader, self.writer, self.authority = reader, writer, authority
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = Settings(client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                                                                         SettingCodes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    async def call(self, path: str, request: bytes, timeout: float) -> bytes:
        """One request message, one reply message."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                                     (b":authority", self.authority.encode()), (b"te", b"trailers"),
                                     (b"content-type", b"application/grpc")])
        body = memoryview(PREFIX.pack(0, len(request)) + request)
        reply, status, message, done = bytearray(), None, "", False
        deadline = time.monotonic() + timeout
        while True:
            while body:  # as much of the request as the agent's windows take (a window update reopens them)
                room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(body))
                if room <= 0:
                    break
                self.conn.send_data(sid, bytes(body[:room]), end_stream=room == len(body))
                body = body[room:]
            self.writer.write(self.conn.data_to_send())
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallError(f"no reply within {timeout:g} s")
            data = await asyncio.wait_for(self.reader.read(1 << 20), left)
            if not data:
                raise CallError("the agent closed the connection")
            for event in self.conn.receive_data(data):
                if isinstance(event, DataReceived) and event.stream_id == sid:
                    reply += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, (ResponseReceived, TrailersReceived)) and event.stream_id == sid:
                    headers = dict(event.headers)
                    if b"grpc-status" in headers:
                        status = int(headers[b"grpc-status"])
                        message = headers.get(b"grpc-message", b"").decode("latin-1")
                elif isinstance(event, StreamEnded) and event.stream_id == sid:
                    done = True
                elif isinstance(event, StreamReset) and event.stream_id == sid:
                    raise CallError(f"the agent reset the call (error {event.error_code})")
                elif isinstance(event, ConnectionTerminated):
                    raise CallError("the agent ended the connection")
        if status not in (0, None) or len(reply) < PREFIX.size:
            raise CallError(f"gRPC status {status}: {message}" if status else "no reply message")
        _, size = PREFIX.unpack_from(reply)
        return bytes(reply[PREFIX.size:PREFIX.size + size])

    async def close(self) -> None:
        self.conn.close_connection()
        self.writer.write(self.conn.data_to_send())
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def _open(target: str, authority: str, timeout: float) -> _Connection:
    if target.startswith("unix:"):
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(target[5:]), timeout)
    else:
        host, _, port = target.rpartition(":")
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout)
    return _Connection(reader, writer, authority)


async def push_all(targets: dict[str, str], messages: dict[str, Sequence[bytes]], *, connections: int = 256,
                   timeout: float = 600.0, on_done: Callable[[str, list[Answer]], None] | None = None
                   ) -> dict[str, list[Answer] | CallError]:
    """Each host's messages over its own connection to `targets[host]` (naming the host as the authority), one
    call per message, in order; at most `connections` open at once. A host whose call failed gets its error."""
    gate = asyncio.Semaphore(max(1, connections))
    out: dict[str, list[Answer] | CallError] = {}

    async def one(host: str) -> None:
        async with gate:
            try:
                conn = await _open(targets[host], f"{host}:{ACA_PORT}", timeout)
            except (TimeoutError, OSError) as exc:
                out[host] = CallError(f"cannot connect to {targets[host]}: {exc or type(exc).__name__}")
                return
            answers = []
            try:
                for request in messages[host]:
                    t0 = time.perf_counter()
                    reply = await conn.call(PUSH_STREAM, request, timeout)
                    answers.append(Answer(reply, t0, time.perf_counter() - t0))
                out[host] = answers
            except (TimeoutError, CallError, OSError) as exc:
                out[host] = exc if isinstance(exc, CallError) else CallError(str(exc) or type(exc).__name__)
            finally:
                await conn.close()
            if on_done and isinstance(out[host], list):
                on_done(host, answers)

    await asyncio.gather(*(one(host) for host in messages))
    return out
