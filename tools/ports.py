"""Free loopback ports, for everything that starts a throwaway listener.

Private trees, fault proxies, benchmark baselines and test servers all ask here, so
there is one way to pick a port and one place that says what it promises.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing on ``host`` listens on at this moment.

    The port is released before the caller binds it, so another process could take
    it in between; on a test machine that is rare, and a clash fails loudly at bind
    rather than silently sharing a port.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (Linux /proc).

    With SO_REUSEPORT several processes listen on one port; this tells whether a
    given one (a gateway just restarted) is among them.
    """
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
        lines += Path("/proc/net/tcp6").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            if fields[9] in inodes:
                return True
    return False
