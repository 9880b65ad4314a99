"""A fault-injecting TCP proxy for loopback: pass, delay, reset, black hole.

It listens on a loopback port and forwards every connection to a target (Redis,
MariaDB, a worker). Point an actor's DSN at the proxy instead of the server and the
link between them can be broken on demand:

* ``pass``      bytes flow both ways untouched;
* ``delay``     every chunk waits ``delay_s`` before it is forwarded (each direction,
                so a round trip costs twice that);
* ``reset``     every open connection is cut with a TCP RST, and new ones are reset
                as soon as they are accepted (a crashed server or a firewall reject);
* ``blackhole`` connections stay open but nothing arrives on either side: bytes are
                read and dropped, new connections are accepted and never forwarded (a
                network partition: only timeouts notice).

Leaving ``blackhole`` resets the connections that lost bytes in it: their streams are
broken, as after a real partition. In-process use: :class:`FaultProxy` on the running
event loop, or :class:`ThreadedProxy` (its own loop in a thread, controlled from sync
code). As a program it runs until ``--max-seconds`` and takes commands on a control
port, one per line (``mode blackhole``, ``mode delay 0.2``, ``status``)::

    python -m chaos.proxy --listen 127.0.0.1:6390 --target 127.0.0.1:6380 \\
        --control 127.0.0.1:6391 --max-seconds 3600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "delay", "reset", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "delay", "reset", "blackhole")
T = TypeVar("T")
_CHUNK = 65536
_CONNECT_TIMEOUT_S = 2.0


def parse_mode(text: str) -> Mode:
    """The mode a control command names; ValueError for anything else."""
    for mode in MODES:
        if text == mode:
            return mode
    raise ValueError(f"unknown mode {text!r}")


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dropped_bytes: int = 0  # lost in a black hole: the stream is broken for good
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards ``listen`` -> ``target`` on the running loop, faults on demand."""

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.target = target
        self._listen = listen
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.accepted = 0
        self.resets = 0
        self.addr: tuple[str, int] = listen

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, *self._listen)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.addr = (host, port)
        return self.addr

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        previous, self.mode, self.delay_s = self.mode, mode, delay_s
        if mode == "reset":
            self._reset_where(lambda link: True)
        elif previous == "blackhole" and mode != "blackhole":
            self._reset_where(lambda link: link.upstream is None or link.dropped_bytes > 0)

    def _reset_where(self, pred: Callable[[_Link], bool]) -> None:
        for link in list(self._links):
            if pred(link):
                self.resets += 1
                link.reset()
                self._links.discard(link)

    def status(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "delay_s": self.delay_s,
            "listen": f"{self.addr[0]}:{self.addr[1]}",
            "target": f"{self.target[0]}:{self.target[1]}",
            "open_connections": self.open_connections,
            "accepted": self.accepted,
            "resets": self.resets,
        }

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.reset()
        self._links.clear()
        if self._server is not None:
            await self._server.wait_closed()

    # -- one connection ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            self.resets += 1
            _reset(writer)
            return
        link = _Link(client=writer)
        self._links.add(link)
        try:
            if self.mode == "blackhole":
                await self._swallow(reader, link)  # never connects upstream
                return
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), _CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                self.resets += 1
                _reset(writer)  # the target refused: so does the proxy
                return
            link.upstream = upstream
            loop = asyncio.get_running_loop()
            link.tasks = [
                loop.create_task(self._pump(reader, upstream, link)),
                loop.create_task(self._pump(up_reader, writer, link)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in link.tasks:
                task.cancel()
        finally:
            self._links.discard(link)
            for w in (writer, link.upstream):
                if w is not None and not w.transport.is_closing():
                    w.close()

    async def _swallow(self, reader: asyncio.StreamReader, link: _Link) -> None:
        while data := await reader.read(_CHUNK):
            link.dropped_bytes += len(data)

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await src.read(_CHUNK):
                if self.mode == "blackhole":
                    link.dropped_bytes += len(data)
                    continue
                if self.mode == "delay" and self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if link.dropped_bytes:
                    return  # the stream lost bytes earlier: never deliver a broken one
                dst.write(data)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()
            await asyncio.sleep(0)
        except (OSError, RuntimeError):
            return


class ThreadedProxy:
    """A FaultProxy on an event loop of its own, for tests and sync callers."""

    def __init__(self, target: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0)):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.proxy = FaultProxy(target, listen)
        self.addr: tuple[str, int] = listen

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        self.addr = self._run(self.proxy.start())
        return self.addr

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        async def apply() -> None:
            self.proxy.set_mode(mode, delay_s)

        self._run(apply())

    def status(self) -> dict[str, object]:
        async def get() -> dict[str, object]:
            return self.proxy.status()

        return self._run(get())

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self.proxy.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> ThreadedProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteProxy:
    """Controls a proxy started as a program, through its control port."""

    def __init__(self, control: tuple[str, int]) -> None:
        self.control = control

    def command(self, line: str) -> dict[str, object]:
        with socket.create_connection(self.control, timeout=5) as sock:
            sock.sendall(line.encode() + b"\n")
            reply = sock.makefile("rb").readline()
        body: dict[str, object] = json.loads(reply)
        if "error" in body:
            raise ValueError(body["error"])
        return body

    def set_mode(self, mode: Mode, delay_s: float = 0.0) -> None:
        self.command(f"mode {mode} {delay_s}")

    def status(self) -> dict[str, object]:
        return self.command("status")


async def _control(
    proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().split()
        if line[:1] == ["mode"] and len(line) >= 2:
            delay_s = float(line[2]) if len(line) > 2 else 0.0
            proxy.set_mode(parse_mode(line[1]), delay_s)
            reply = proxy.status()
        elif line[:1] == ["status"]:
            reply = proxy.status()
        else:
            reply = {"error": "commands: mode MODE [DELAY_S] | status"}
    except (ValueError, TimeoutError) as exc:
        reply = {"error": str(exc)}
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()
    writer.close()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError("the proxy is for loopback addresses only")
    return host, int(port)


async def _main(args: argparse.Namespace) -> None:
    proxy = FaultProxy(args.target, args.listen)
    await proxy.start()
    control = await asyncio.start_server(lambda r, w: _control(proxy, r, w), *args.control)
    print(json.dumps({"proxy": proxy.status(), "control": f"{args.control[0]}:{args.control[1]}"}))
    try:
        await asyncio.sleep(args.max_seconds)  # bounded: it stops by itself
    finally:
        control.close()
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.proxy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--listen", type=_addr, required=True, help="loopback host:port")
    parser.add_argument("--target", type=_addr, required=True, help="loopback host:port")
    parser.add_argument("--control", type=_addr, required=True, help="loopback host:port")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
