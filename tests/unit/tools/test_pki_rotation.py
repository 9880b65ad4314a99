"""tools.pki under a running tree: why a rotation stages the CA before reissuing.

A process reads the CA bundle when it starts. Real TLS over loopback between a
"running" identity (loaded before the change) and a "restarted" one (loaded after).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from actors.wire.identity import CA_FILE, Identity
from actors.wire.roles import DB_WORKER, GATEWAY
from tools import pki


async def handshake(server: Identity, client: Identity) -> bool:
    """Whether a mutual-TLS handshake between the two succeeds."""
    accepted = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result(True)
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server.server)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client.client, server_hostname="userhub"
            )
            # TLS 1.3: the server's verdict on the client's certificate arrives after
            # the client's side of the handshake is done; reading surfaces it.
            await reader.read(1)
            writer.close()
            await asyncio.wait_for(accepted, 1)
        return True
    except (ssl.SSLError, ConnectionResetError, TimeoutError):
        return False
    finally:
        listener.close()


async def test_a_one_step_rotation_breaks_links_to_running_processes(tmp_path: Path) -> None:
    pki.ensure(tmp_path)
    running = Identity.load(tmp_path, GATEWAY)
    pki.rotate(tmp_path)
    restarted = Identity.load(tmp_path, DB_WORKER)
    # The restarted one trusts both CAs, but the running one only the old.
    assert await handshake(restarted, running) is False
    assert await handshake(running, restarted) is False


async def test_stage_then_reissue_keeps_every_pair_talking(tmp_path: Path) -> None:
    pki.ensure(tmp_path)
    assert not pki.staged(tmp_path)
    before = Identity.load(tmp_path, GATEWAY)
    pki.stage(tmp_path)
    assert pki.staged(tmp_path)
    assert (tmp_path / CA_FILE).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    trusting_both = Identity.load(tmp_path, DB_WORKER)  # old certificate, both CAs
    assert await handshake(trusting_both, before) and await handshake(before, trusting_both)
    pki.reissue(tmp_path)
    assert not pki.staged(tmp_path)
    reissued = Identity.load(tmp_path, GATEWAY)
    assert await handshake(trusting_both, reissued) and await handshake(reissued, trusting_both)


def test_staged_is_false_for_a_fresh_directory(tmp_path: Path) -> None:
    assert not pki.staged(tmp_path)
    pki.ensure(tmp_path)
    assert not pki.staged(tmp_path)
