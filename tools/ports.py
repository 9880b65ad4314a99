"""Free loopback ports, for everything that starts a throwaway listener.

Private trees, fault proxies, benchmark baselines and test servers all ask here, so
there is one way to pick a port and one place that says what it promises.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing on ``host`` listens on at this moment.

    The port is released before the caller binds it, so another process could take
    it in between; on a test machine that is rare, and a clash fails loudly at bind
    rather than silently sharing a port.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
