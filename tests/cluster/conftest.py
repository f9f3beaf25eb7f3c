"""A real multi-node Ray cluster on one machine (``ray.cluster_utils.Cluster``): a head and two
worker nodes of one CPU each, with the dashboard's job server for ``ray job submit``.

Jobs reach it as they would a real cluster: a driver process with RAY_ADDRESS, or a submission.
"""

from __future__ import annotations

import socket

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalCluster:
    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        port = _free_port()
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": port,
                # not the default 52365: a Ray the session started earlier (ray_local) holds it,
                # and a head without its agent cannot take job submissions
                "dashboard_agent_listen_port": _free_port(),
            },
        )
        self.dashboard = f"http://127.0.0.1:{port}"
        self.workers = [self.cluster.add_node(num_cpus=1) for _ in range(2)]
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def lose_worker(self, index: int) -> None:
        """Kill a worker node's raylet and every process on it, as a machine is lost."""
        self.cluster.remove_node(self.workers[index], allow_graceful=False)

    def restore_worker(self, index: int) -> None:
        """A fresh node in a lost one's place, as an autoscaler replaces a machine."""
        self.workers[index] = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()

    def actor_nodes(self, class_name: str) -> set[str]:
        """Nodes that ran actors of ``class_name`` (live or dead) during this cluster's life."""
        from ray.util.state import list_actors

        actors = list_actors(
            address=self.dashboard, limit=10_000, detail=True, raise_on_missing_output=False
        )
        return {a.node_id for a in actors if class_name in a.class_name and a.node_id}

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def local_cluster():
    cluster = LocalCluster()
    try:
        yield cluster
    finally:
        cluster.shutdown()
