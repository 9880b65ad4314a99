"""The fault proxy against a loopback echo server: pass, delay, reset, black hole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from chaos.proxy import FaultProxy, RemoteProxy, ThreadedProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    p = FaultProxy(target)
    await p.start()
    yield p
    await p.close()
    server.close()
    await server.wait_closed()


async def _open(p: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*p.addr)


async def _round_trip(p: FaultProxy, payload: bytes = b"ping") -> bytes:
    reader, writer = await _open(p)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 2)
    finally:
        writer.close()


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    assert await _round_trip(proxy, b"hello" * 10_000) == b"hello" * 10_000
    assert proxy.accepted == 1


async def test_delay_adds_latency_each_way(proxy: FaultProxy) -> None:
    proxy.set_mode("delay", 0.1)
    started = time.monotonic()
    assert await _round_trip(proxy) == b"ping"
    assert 0.2 <= time.monotonic() - started < 1.0
    proxy.set_mode("pass")
    started = time.monotonic()
    await _round_trip(proxy)
    assert time.monotonic() - started < 0.1


async def test_reset_cuts_open_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await _open(proxy)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    proxy.set_mode("reset")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        await _round_trip(proxy)
    proxy.set_mode("pass")
    assert await _round_trip(proxy) == b"ping"


async def test_blackhole_swallows_then_resets_broken_streams(proxy: FaultProxy) -> None:
    reader, writer = await _open(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    proxy.set_mode("blackhole")
    writer.write(b"lost")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.3)
    # New connections are accepted (connect succeeds) but never answered.
    r2, w2 = await _open(proxy)
    w2.write(b"b")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r2.readexactly(1), 0.3)
    proxy.set_mode("pass")
    # Both streams lost bytes: they are reset, never resumed half-way.
    for r in (reader, r2):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(r.readexactly(1), 2)
    writer.close()
    w2.close()
    assert await _round_trip(proxy) == b"ping"


async def test_target_down_is_a_reset() -> None:
    with ThreadedProxy(("127.0.0.1", 1)) as threaded:
        # The reset may arrive before the connection is even set up on this side.
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(*threaded.addr)
            try:
                await asyncio.wait_for(reader.readexactly(1), 3)
            finally:
                writer.close()
        assert threaded.status()["resets"] == 1


async def test_threaded_proxy_is_controlled_from_another_loop() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    with ThreadedProxy(target) as threaded:
        reader, writer = await asyncio.open_connection(*threaded.addr)
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"1"
        await asyncio.to_thread(threaded.set_mode, "blackhole")
        writer.write(b"2")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        assert threaded.status()["mode"] == "blackhole"
        writer.close()
    server.close()


async def test_program_control_port(tmp_path: object) -> None:
    from tools.ports import free_port

    listen, control = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        ".venv/bin/python", "-m", "chaos.proxy", "--listen", f"127.0.0.1:{listen}",
        "--target", "127.0.0.1:1", "--control", f"127.0.0.1:{control}", "--max-seconds", "20",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 10)
        remote = RemoteProxy(("127.0.0.1", control))
        await asyncio.to_thread(remote.set_mode, "delay", 0.25)
        status = await asyncio.to_thread(remote.status)
        assert status["mode"] == "delay" and status["delay_s"] == 0.25
        with pytest.raises(ValueError):
            await asyncio.to_thread(remote.command, "mode sideways")
    finally:
        proc.terminate()
        await proc.wait()
