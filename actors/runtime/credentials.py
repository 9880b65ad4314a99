"""Where an actor finds its credentials: the certificates set-up made for its kind.

Every actor on a host reads the same directory (``<USERHUB_VAR>/pki`` unless
``USERHUB_PKI_DIR`` says otherwise); tools.pki makes it and rotates it.
"""

from __future__ import annotations

from actors.runtime.config import CommonConfig
from actors.wire.identity import Identity


def identity(common: CommonConfig, kind: str) -> Identity:
    """This process's TLS identity as ``kind``; a missing file stops the process at start."""
    return Identity.load(common.pki_dir, kind)
