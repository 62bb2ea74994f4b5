"""HTTP/2 framing, flow control and header blocks for gRPC, without I/O: the part of HTTP/2 gRPC uses.

Why not h2 (the well-kept pure-Python stack, used here until it was measured): a gRPC call on a connection of its
own cost about 0.85 ms of CPU on each side, over 80% of it in h2's general machinery (state machines per stream,
header validation and normalisation, event objects, a Huffman coder); 100,000 hollow compute nodes each on its own
connection need a fraction of that. Here only what gRPC uses is kept: one connection's frames read and written,
both directions' windows, SETTINGS, PING and GOAWAY answered, and header blocks decoded by `hpack` (the same
library h2 uses: any peer's Huffman coding and dynamic table) while ours are written as plain literals (RFC 7541
6.2.2: they never touch either side's dynamic table, so a block can be built once and sent many times).

A `Connection` is fed bytes (`receive`) and calls back its owner with whole header blocks and data; what it must
send collects in `out`. A peer that breaks the protocol raises `ProtocolError`, after which the owner sends
what is in `out` (a GOAWAY) and closes. Untrusted input: every length is bounded before anything is kept.
"""

from __future__ import annotations

import struct
from typing import Protocol

from hpack import Decoder
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0, 1, 3, 6, 7, 9
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 2, 3, 4, 5

FRAME = struct.Struct(">BHBBI")  # length (24 bits, as 8 + 16), type, flags, stream id
SETTING = struct.Struct(">HI")
DEFAULT_WINDOW = 65535  # every window before SETTINGS or WINDOW_UPDATE says otherwise
DEFAULT_FRAME = 16384  # the largest frame either side takes unless it says more (we never do)
MAX_WINDOW = STREAM_ID = 2**31 - 1  # the largest window; a stream id's 31 bits
#: A header block (with its CONTINUATIONs) larger than this ends the connection: gRPC's are a few hundred bytes.
MAX_HEADER_BLOCK = 64 * 1024


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with `code` (a GOAWAY is already in `out`)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Events(Protocol):
    """What the connection's owner is told."""

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None: ...
    def on_data(self, sid: int, data: bytes, end_stream: bool) -> None: ...
    def on_reset(self, sid: int, code: int) -> None: ...
    def on_goaway(self, code: int) -> None: ...


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FRAME.pack(n >> 16, n & 0xFFFF, kind, flags, sid) + payload


def _length(n: int, prefix: int = 7) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1), its high bits zero (no Huffman coding)."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes([n])
    out, n = bytearray([top]), n - top
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """Headers as literals without indexing, new names, plain strings: valid for any decoder, in any order of
    blocks, forever (see the module's docstring)."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _length(len(name)) + name + _length(len(value)) + value
    return bytes(out)


class _Outbound:
    """What one stream still has to send: data held back by the windows, then its end."""

    __slots__ = ("data", "end_stream", "trailers")

    def __init__(self) -> None:
        self.data = bytearray()
        self.end_stream = False
        self.trailers: bytes | None = None


class Connection:
    """One HTTP/2 connection, client or server side."""

    def __init__(self, events: Events, *, client: bool, settings: dict[int, int], window: int):
        """`settings` go in our first SETTINGS frame; `window` is how much this side lets the peer send ahead,
        per stream (also said in `settings`) and on the connection."""
        self.events, self.client, self.window = events, client, window
        self.out = bytearray(PREFACE if client else b"")
        self.out += frame(SETTINGS, 0, 0, b"".join(SETTING.pack(k, v) for k, v in settings.items()))
        if window > DEFAULT_WINDOW:  # the connection's window is not a setting: opened by an update
            self.out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window - DEFAULT_WINDOW))
        self._buffer = bytearray()
        self._preface = not client  # a server first reads the client's preface
        self.decoder = Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self.peer_frame = DEFAULT_FRAME
        self.peer_initial = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW  # the connection's, towards the peer
        self.windows: dict[int, int] = {}  # each open stream's send window
        self._queued: dict[int, _Outbound] = {}
        self._unacked = 0  # data taken on the connection since we last opened its window again
        self._stream_unacked: dict[int, int] = {}
        self._block: tuple[int, bool, bytearray] | None = None  # a header block awaiting its CONTINUATIONs
        self.last_peer_stream = 0
        self.next_stream = 1
        self.closed = False

    # -- reading ------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        if self._preface:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if buf[:len(PREFACE)] != PREFACE:
                self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            del buf[:len(PREFACE)]
            self._preface = False
        pos, end = 0, len(buf)
        try:
            while end - pos >= FRAME.size:
                high, low, kind, flags, sid = FRAME.unpack_from(buf, pos)
                length = high << 16 | low
                if length > DEFAULT_FRAME:
                    self._fail(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if end - pos - FRAME.size < length:
                    break
                start = pos + FRAME.size
                pos = start + length
                self._frame(kind, flags, sid & STREAM_ID, bytes(buf[start:pos]))
                if self.closed:
                    return
        finally:
            del buf[:pos]

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._block is not None and kind != CONTINUATION:
            self._fail(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            if sid == 0:
                self._fail(PROTOCOL_ERROR, "DATA on stream 0")
            taken = len(payload)
            self._acknowledge(sid, taken)
            if flags & PADDED:
                payload = self._unpad(payload)
            if sid in self._stream_unacked:
                self.events.on_data(sid, payload, bool(flags & END_STREAM))
                if flags & END_STREAM:
                    self.ended(sid)
        elif kind == HEADERS:
            if sid == 0:
                self._fail(PROTOCOL_ERROR, "HEADERS on stream 0")
            if flags & PADDED:
                payload = self._unpad(payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block = (sid, bool(flags & END_STREAM), bytearray(payload))
            if flags & END_HEADERS:
                self._headers()
        elif kind == CONTINUATION:
            if self._block is None or self._block[0] != sid:
                self._fail(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
            self._block[2].extend(payload)
            if len(self._block[2]) > MAX_HEADER_BLOCK:
                self._fail(PROTOCOL_ERROR, "a header block over 64 KiB")
            if flags & END_HEADERS:
                self._headers()
        elif kind == SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                self._fail(FRAME_SIZE_ERROR, "WINDOW_UPDATE of other than 4 bytes")
            increment = int.from_bytes(payload, "big") & MAX_WINDOW
            if sid == 0:
                self.send_window += increment
                if self.send_window > MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "the connection's window went past 2^31-1")
                for other in list(self._queued):
                    self._pump(other)
            elif sid in self.windows:
                self.windows[sid] += increment
                self._pump(sid)
        elif kind == PING:
            if len(payload) != 8 or sid:
                self._fail(FRAME_SIZE_ERROR, "a PING of other than 8 bytes")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, payload)
        elif kind == RST_STREAM:
            if len(payload) != 4 or sid == 0:
                self._fail(FRAME_SIZE_ERROR, "a bad RST_STREAM")
            self._forget(sid)
            self.events.on_reset(sid, int.from_bytes(payload, "big"))
        elif kind == GOAWAY:
            self.events.on_goaway(int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else PROTOCOL_ERROR)
        elif kind == PUSH_PROMISE:
            self._fail(PROTOCOL_ERROR, "PUSH_PROMISE (push is off)")
        # PRIORITY and unknown frame types are ignored, as the protocol says

    def _unpad(self, payload: bytes) -> bytes:
        if not payload or payload[0] >= len(payload):
            self._fail(PROTOCOL_ERROR, "padding longer than its frame")
        return payload[1:len(payload) - payload[0]]

    def _headers(self) -> None:
        sid, end_stream, block = self._block
        self._block = None
        try:
            headers = self.decoder.decode(bytes(block), raw=True)
        except (HPACKError, ValueError, IndexError, TypeError) as exc:  # whatever a hostile block makes it raise
            self._fail(COMPRESSION_ERROR, f"a header block that does not decode: {exc}")
        if sid not in self._stream_unacked and sid not in self.windows:
            if self.client or sid % 2 == 0 or sid <= self.last_peer_stream:
                self._fail(PROTOCOL_ERROR, f"a new stream {sid} out of order")
            self.last_peer_stream = sid
            self._open(sid)
        self.events.on_headers(sid, headers, end_stream)
        if end_stream:
            self.ended(sid)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid or len(payload) % SETTING.size or (flags & ACK and payload):
            self._fail(FRAME_SIZE_ERROR, "a malformed SETTINGS frame")
        if flags & ACK:
            return
        for offset in range(0, len(payload), SETTING.size):
            key, value = SETTING.unpack_from(payload, offset)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "an initial window past 2^31-1")
                delta, self.peer_initial = value - self.peer_initial, value
                for other in self.windows:
                    self.windows[other] += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value < 2**24:
                    self._fail(PROTOCOL_ERROR, "a maximum frame size out of range")
                self.peer_frame = value
        self.out += frame(SETTINGS, ACK, 0)
        for other in list(self._queued):
            self._pump(other)

    def _acknowledge(self, sid: int, taken: int) -> None:
        """Opens the windows again once half of them is used: a large message flows without waiting, a small
        call costs no extra frame."""
        self._unacked += taken
        if self._unacked >= self.window // 2:
            self.out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked))
            self._unacked = 0
        if sid in self._stream_unacked:
            unacked = self._stream_unacked[sid] + taken
            if unacked >= self.window // 2:
                self.out += frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", unacked))
                unacked = 0
            self._stream_unacked[sid] = unacked

    def _fail(self, code: int, message: str):
        self.out += frame(GOAWAY, 0, 0, struct.pack(">II", self.last_peer_stream, code) + message.encode()[:200])
        self.closed = True
        raise ProtocolError(code, message)

    # -- streams ------------------------------------------------------------------
    def _open(self, sid: int) -> None:
        self.windows[sid] = self.peer_initial
        self._stream_unacked[sid] = 0

    def open_stream(self) -> int:
        """A new stream of ours (client side)."""
        sid, self.next_stream = self.next_stream, self.next_stream + 2
        self._open(sid)
        return sid

    def ended(self, sid: int) -> None:
        """The peer has sent all of this stream (said by END_STREAM, after its event): nothing more is read."""
        self._stream_unacked.pop(sid, None)
        if sid not in self.windows:
            self._forget(sid)

    def _forget(self, sid: int) -> None:
        self.windows.pop(sid, None)
        self._queued.pop(sid, None)
        self._stream_unacked.pop(sid, None)

    def reset(self, sid: int, code: int) -> None:
        self.out += frame(RST_STREAM, 0, sid, struct.pack(">I", code))
        self._forget(sid)

    def goaway(self, code: int = NO_ERROR) -> None:
        self.out += frame(GOAWAY, 0, 0, struct.pack(">II", self.last_peer_stream, code))

    # -- writing ------------------------------------------------------------------
    def send_headers(self, sid: int, block: bytes, *, end_stream: bool = False) -> None:
        """A header block (see header_block); with end_stream, the stream's last frame from this side."""
        first, rest = block[:self.peer_frame], block[self.peer_frame:]
        self.out += frame(HEADERS, (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS), sid, first)
        while rest:
            part, rest = rest[:self.peer_frame], rest[self.peer_frame:]
            self.out += frame(CONTINUATION, 0 if rest else END_HEADERS, sid, part)
        if end_stream:
            self._end_sent(sid)

    def send_data(self, sid: int, data: bytes, *, end_stream: bool = False, trailers: bytes | None = None) -> None:
        """Data for the stream, sent as the peer's windows allow; then, when asked, its end (END_STREAM on the
        data, or a trailing header block)."""
        queued = self._queued.get(sid)
        if queued is None:
            queued = self._queued[sid] = _Outbound()
        queued.data += data
        queued.end_stream |= end_stream
        if trailers is not None:
            queued.trailers = trailers
        self._pump(sid)

    def _pump(self, sid: int) -> None:
        queued = self._queued.get(sid)
        if queued is None or sid not in self.windows:
            return
        data = queued.data
        ending = queued.end_stream and queued.trailers is None
        while data:
            room = min(self.send_window, self.windows[sid], self.peer_frame, len(data))
            if room <= 0:
                return
            last = room == len(data)
            self.out += frame(DATA, END_STREAM if last and ending else 0, sid, bytes(data[:room]))
            del data[:room]
            self.send_window -= room
            self.windows[sid] -= room
            if last and ending:
                self._end_sent(sid)
                return
        if queued.trailers is not None:
            self.send_headers(sid, queued.trailers, end_stream=True)
        elif ending:
            self.out += frame(DATA, END_STREAM, sid)
            self._end_sent(sid)

    def _end_sent(self, sid: int) -> None:
        self.windows.pop(sid, None)
        self._queued.pop(sid, None)
        if sid not in self._stream_unacked:
            self._forget(sid)

    def take(self) -> bytes:
        """What is to be sent, once."""
        out = bytes(self.out)
        self.out.clear()
        return out
