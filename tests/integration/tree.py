"""The integration tests' names for the private-tree harness (tools.private_tree).

``running_tree(**settings)`` is a tree with a private MariaDB and Redis of its own;
``Tree`` is its handle. Everything else lives in tools/, shared with the benchmarks
and chaos runs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from tools.ports import free_port
from tools.private_tree import PYTHON, private_tree
from tools.private_tree import PrivateTree as Tree
from tools.supervisorctl import ROOT, wait_until

__all__ = ["PYTHON", "ROOT", "Tree", "free_port", "running_tree", "wait_until"]


def running_tree(**settings: str) -> AbstractContextManager[Tree]:
    """A started tree with servers of its own and ``settings`` (USERHUB_* names)."""
    return private_tree(settings)
