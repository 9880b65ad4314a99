"""The tests' name for chaos.proxied_tree: a tree with Redis and MariaDB behind fault proxies."""

from __future__ import annotations

from chaos.proxied_tree import ProxiedTree, ThreadedProxy, proxied_tree

__all__ = ["ProxiedTree", "ThreadedProxy", "proxied_tree"]
