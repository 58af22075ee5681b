"""checker/cluster.py starts its nodes even when a free port it picked is taken before the node binds it
(the suites start many servers at once): that node is started again on new ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from checker import cluster
from storage.embedded import free_port


def test_a_node_whose_port_was_taken_is_started_on_new_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket()  # bound, not listening: as the local port of another process's connection
    taken.bind(("127.0.0.1", 0))
    busy = taken.getsockname()[1]

    def ports() -> Iterator[int]:
        yield busy  # the first node's port: bound by someone else already
        while True:
            yield free_port()

    picks = ports()
    monkeypatch.setattr(cluster, "free_port", lambda: next(picks))
    try:
        with cluster.ValkeyCluster(masters=3, replicas=0) as c:
            assert busy not in c.ports and len(c.ports) == 3
            assert len(c.masters()) == 3
            assert "cluster_state:ok" in c.cli("-p", str(c.ports[0]), "cluster", "info")
    finally:
        taken.close()
