"""What unit tests need to run actors on loopback: certificates and a common config.

One throwaway tree CA per test session (tools.pki), and the CommonConfig an actor
under test reads, pointed at it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from actors.runtime.config import CommonConfig
from actors.wire.identity import Identity
from tools import pki


@functools.cache
def pki_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="uh-pki-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    pki.ensure(directory)
    return directory


@functools.cache
def identity(kind: str) -> Identity:
    return Identity.load(pki_dir(), kind)


def common_config(manager_port: int, var_dir: Path, advertise: str = "127.0.0.1") -> CommonConfig:
    """Settings for an actor on loopback whose pool manager listens on ``manager_port``."""
    return CommonConfig(
        manager_addr=("127.0.0.1", manager_port),
        bind_host="127.0.0.1",
        advertise_host=advertise,
        request_timeout_s=1.0,
        max_frame=1 << 20,
        var_dir=var_dir,
        log_level="warning",
        pki_dir=pki_dir(),
    )
