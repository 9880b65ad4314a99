"""Certificates for unit tests: one throwaway tree CA per test session (tools.pki)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

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
