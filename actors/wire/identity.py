"""Who is on the other end of an actor link: mutual TLS with the tree's own CA.

Set-up (tools.pki) makes a certificate authority for the tree and one certificate
per kind of actor, each naming its kind in a ``userhub:kind:<kind>`` URI. Every
link, loopback included, is TLS 1.3 with certificates required on both sides:
until the handshake has proved that the peer holds a key the tree's CA certified,
not one byte of a frame is read. Each side then reads the other's kind from its
certificate: a server decides by it what the client may ask (actors.wire.roles),
and a client refuses a server that is not the kind it meant to reach (a gateway
leasing a db_worker talks only to a db_worker).

docs/security.md records what the encryption costs per request and why it is on
for loopback links too.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from actors.wire.roles import KINDS

KIND_URI_PREFIX: Final = "userhub:kind:"
CA_FILE: Final = "ca.crt"
HANDSHAKE_TIMEOUT_S: Final = 5.0


def cert_file(kind: str) -> str:
    return f"{kind}.crt"


def key_file(kind: str) -> str:
    return f"{kind}.key"


@dataclass(frozen=True, slots=True)
class Identity:
    """One process's credentials: its kind, and TLS contexts for both ends of a link."""

    kind: str
    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def load(cls, directory: Path, kind: str) -> Identity:
        """The credentials set-up made for ``kind`` under ``directory``."""
        if kind not in KINDS:
            raise ValueError(f"no actor kind {kind!r}")
        ca = directory / CA_FILE
        cert, key = directory / cert_file(kind), directory / key_file(kind)
        for path in (ca, cert, key):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: run `python -m tools.pki ensure {directory}` first"
                )
        return cls(kind, _context(ssl.PROTOCOL_TLS_SERVER, ca, cert, key),
                   _context(ssl.PROTOCOL_TLS_CLIENT, ca, cert, key))  # fmt: skip


def _context(protocol: int, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    # The peer is identified by the kind its certificate names, not by a host name:
    # workers move between addresses, their kind does not.
    context.check_hostname = False
    return context


def peer_kind(transport: asyncio.BaseTransport) -> str | None:
    """The kind the peer's verified certificate names, or None if it names none."""
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    kinds = [
        value[len(KIND_URI_PREFIX) :]
        for name, value in cert.get("subjectAltName", ())
        if name == "URI" and isinstance(value, str) and value.startswith(KIND_URI_PREFIX)
    ]
    if len(kinds) != 1 or kinds[0] not in KINDS:
        return None
    return kinds[0]
