"""Frames written during one turn of the event loop go out in one system call."""

from __future__ import annotations

import asyncio


class CoalescingWriter:
    """Frames written during one turn of the event loop go out in one system call.

    Under load many calls (or replies) on one connection complete in the same turn;
    writing each at once costs a send() and, on the other side, a wake-up per frame.
    Holding them until the end of the turn (``call_soon``) adds no waiting of its
    own and turns N sends into one.
    """

    __slots__ = ("_chunks", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(data)

    def _flush(self) -> None:
        chunks, self._chunks = self._chunks, []
        if self._transport.is_closing():
            return  # the peer has gone; never write to a dead connection
        self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
