"""The one module that owns the bytes on the wire.

A frame is a fixed 42-byte header followed by a body::

    offset size field
    0      2    magic        b"UH"
    2      1    version      1
    3      1    flags        bit 0: response, bit 1: error reply
    4      2    msg_type     code from actors.wire.messages.TYPE_CODES
    6      8    call_id      matches a response to its request on one connection
    14     8    deadline_ms  absolute deadline, Unix time in milliseconds
    22     16   trace_id     request id made at the gateway, logged by every actor
    38     4    body_len     length of the JSON body that follows

All integers are big-endian. The length prefix is checked against the maximum frame
size before a single body byte is buffered, so a peer can never make us hold more
than one maximum frame per connection. (The system userhub grew from ended packets
with a delimiter character; a length prefix needs no escaping and bounds memory
before reading, so it replaces that.)

Anything that does not decode raises :class:`ProtocolError`; the connection that
carried it is closed and never resynchronised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from actors.wire import messages
from actors.wire.errors import ProtocolError, UserhubError, from_code
from actors.wire.messages import Message

MAGIC: Final = b"UH"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBHQQ16sI")
HEADER_SIZE: Final = HEADER.size
DEFAULT_MAX_FRAME: Final = 1 << 20  # bytes of body; headers are extra

FLAG_RESPONSE: Final = 0x01
FLAG_ERROR: Final = 0x02
_KNOWN_FLAGS: Final = FLAG_RESPONSE | FLAG_ERROR
_MAX_U64: Final = (1 << 64) - 1

_encoder = msgspec.json.Encoder()
_decoders: dict[int, msgspec.json.Decoder[Any]] = {
    code: msgspec.json.Decoder(cls) for code, cls in messages.TYPES_BY_CODE.items()
}
_ERROR_CODE: Final = messages.TYPE_CODES[messages.Error]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the envelope fields and the typed message inside."""

    call_id: int
    deadline: float  # Unix seconds
    trace_id: str  # 32 hex characters
    message: Message
    is_response: bool

    @property
    def is_error(self) -> bool:
        return isinstance(self.message, messages.Error)


def encode(
    message: Message,
    *,
    call_id: int,
    deadline: float,
    trace_id: str,
    response: bool = False,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> bytes:
    """Serialise one message into a frame. Raises ProtocolError if it would be too big."""
    try:
        code = messages.TYPE_CODES[type(message)]
    except KeyError:
        raise ProtocolError(f"unregistered message type {type(message).__name__}") from None
    body = _encoder.encode(message)
    if len(body) > max_frame:
        raise ProtocolError(f"frame body of {len(body)} bytes exceeds {max_frame}")
    if not 0 <= call_id <= _MAX_U64:
        raise ProtocolError("call_id out of range")
    flags = (FLAG_RESPONSE if response else 0) | (FLAG_ERROR if code == _ERROR_CODE else 0)
    if deadline != deadline or deadline in (float("inf"), float("-inf")):
        raise ProtocolError("deadline must be a finite number")
    deadline_ms = min(max(int(deadline * 1000), 0), _MAX_U64)
    try:
        trace = bytes.fromhex(trace_id) if trace_id else b"\0" * 16
    except ValueError:
        raise ProtocolError("trace_id must be hex") from None
    if len(trace) != 16:
        raise ProtocolError("trace_id must be 16 bytes")
    header = HEADER.pack(MAGIC, VERSION, flags, code, call_id, deadline_ms, trace, len(body))
    return header + body


def error_message(exc: UserhubError) -> messages.Error:
    """The wire form of an error."""
    return messages.Error(
        code=exc.code,
        message=exc.message,
        retriable=exc.retriable,
        field=exc.field,
        retry_after_s=getattr(exc, "retry_after_s", 0),
    )


def raise_error(message: messages.Error) -> None:
    """Turn an error reply back into the exception the peer raised."""
    raise from_code(
        message.code, message.message, field=message.field, retry_after_s=message.retry_after_s
    )


class FrameDecoder:
    """Incremental decoder: feed it bytes as they arrive, get whole frames back.

    It copes with frames split at any byte boundary and with many frames in one
    read. After it raises once the stream is unusable; callers close the connection.
    """

    __slots__ = ("_buf", "_failed", "_header", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._header: tuple[int, int, int, int, bytes, int] | None = None
        self._failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed:
            raise ProtocolError("decoder already failed")
        self._buf += data
        frames: list[Frame] = []
        try:
            while True:
                if self._header is None:
                    if len(self._buf) < HEADER_SIZE:
                        break
                    self._header = self._parse_header(bytes(self._buf[:HEADER_SIZE]))
                    del self._buf[:HEADER_SIZE]
                body_len = self._header[5]
                if len(self._buf) < body_len:
                    break
                body = bytes(self._buf[:body_len])
                del self._buf[:body_len]
                header, self._header = self._header, None
                frames.append(self._make_frame(header, body))
        except ProtocolError:
            self._failed = True
            raise
        return frames

    def _parse_header(self, raw: bytes) -> tuple[int, int, int, int, bytes, int]:
        magic, version, flags, code, call_id, deadline_ms, trace, body_len = HEADER.unpack(raw)
        if magic != MAGIC:
            raise ProtocolError("bad magic")
        if version != VERSION:
            raise ProtocolError(f"unsupported protocol version {version}")
        if flags & ~_KNOWN_FLAGS:
            raise ProtocolError("unknown flags")
        if code not in _decoders:
            raise ProtocolError(f"unknown message type {code}")
        if body_len > self.max_frame:
            raise ProtocolError(f"frame body of {body_len} bytes exceeds {self.max_frame}")
        return flags, code, call_id, deadline_ms, trace, body_len

    @staticmethod
    def _make_frame(header: tuple[int, int, int, int, bytes, int], body: bytes) -> Frame:
        flags, code, call_id, deadline_ms, trace, _ = header
        if bool(flags & FLAG_ERROR) != (code == _ERROR_CODE):
            raise ProtocolError("error flag does not match message type")
        try:
            message = _decoders[code].decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"undecodable body: {exc}") from None
        return Frame(
            call_id=call_id,
            deadline=deadline_ms / 1000.0,
            trace_id=trace.hex(),
            message=message,
            is_response=bool(flags & FLAG_RESPONSE),
        )
