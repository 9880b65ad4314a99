"""A private tree whose workers reach Redis and MariaDB through fault proxies.

The proxies (chaos.proxy.ThreadedProxy) run in this process, each on an event loop
of its own, listen on free loopback ports and forward to the private servers, which
supervisord still starts on ports of their own: with a DSN pointing elsewhere the
configuration would not start them, so USERHUB_START_REDIS/MYSQL are set
explicitly. The tests of dependency faults and ``chaos.run --private-tree`` use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chaos.proxy import ThreadedProxy
from tools.ports import free_port
from tools.private_tree import PrivateTree, private_tree

__all__ = ["ProxiedTree", "ThreadedProxy", "proxied_tree"]


@dataclass
class ProxiedTree:
    tree: PrivateTree
    redis: ThreadedProxy
    mysql: ThreadedProxy


@contextmanager
def proxied_tree(**overrides: str) -> Iterator[ProxiedTree]:
    """A tree with servers of its own, each behind a proxy; ``overrides`` as private_tree's."""
    redis_port, mysql_port = free_port(), free_port()
    with (
        ThreadedProxy(("127.0.0.1", redis_port)) as redis_proxy,
        ThreadedProxy(("127.0.0.1", mysql_port)) as mysql_proxy,
    ):
        env = {
            "USERHUB_REDIS_PORT": str(redis_port),
            "USERHUB_MYSQL_PORT": str(mysql_port),
            # The accounts the private servers get; their passwords come from the
            # tree's secret files, as with the default DSN and URL.
            "USERHUB_REDIS_URL": f"redis://userhub@127.0.0.1:{redis_proxy.addr[1]}/0",
            "USERHUB_MYSQL_DSN": f"mysql://userhub@127.0.0.1:{mysql_proxy.addr[1]}/userhub",
            "USERHUB_START_REDIS": "true",
            "USERHUB_START_MYSQL": "true",
            **overrides,
        }
        with private_tree(env) as tree:
            yield ProxiedTree(tree, redis_proxy, mysql_proxy)
