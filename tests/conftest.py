"""Shared fixtures: real data (../shared/data and the bundled demo sample) and a local Ray."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cai_ray.core.cai import SourcePattern
from cai_ray.io.codecs import decode_image, decode_mask, resize
from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3, local_s3
from tests.smalldisk import MountRefused, SmallDisk

# Test credentials for the SeaweedFS fixture, set before any Ray worker starts so that workers
# inherit them; only that local server accepts them.
os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# A closed port on this machine: an S3 client that a test forgot to point at its server fails
# here instead of reaching AWS. Test servers are always passed explicitly.
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
SHARED_DATA = Path(os.environ.get("CAI_RAY_SHARED_DATA", REPO.parent / "shared" / "data"))


# A test that needs any of these (directly or through another fixture) starts Ray, an S3 server
# or a Ray cluster, or trains a network: it is 'slow', outside the quick lane
# (pytest -m "not slow").
SLOW_FIXTURES = {"ray_local", "s3_server", "s3_bucket", "restartable_s3", "local_cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real defect datasets. Absent on a user's clone: skipped there, but CI must have them."""
    if not (SHARED_DATA / "magnetic_tile").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the real datasets at {SHARED_DATA}")
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set CAI_RAY_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tile_targets() -> list[np.ndarray]:
    """Real defect-free magnetic tiles from the bundled sample, grey, 256x256."""
    files = sorted((DEMO / "normal").glob("*.jpg"))
    return [resize(decode_image(f.read_bytes(), "grey"), 256) for f in files]


def _patterns(pairs: list[tuple[Path, Path]], anomaly_class: str, domain: str) -> list:
    """Grey source patterns from (image, mask) files, skipping empty masks."""
    patterns = []
    for image_path, mask_path in pairs:
        mask = decode_mask(mask_path.read_bytes())
        if mask.any():
            patterns.append(
                SourcePattern.from_full_image(
                    decode_image(image_path.read_bytes(), "grey"),
                    mask,
                    anomaly_class=anomaly_class,
                    domain=domain,
                    record_id=f"{domain}-{image_path.stem}",
                )
            )
    return patterns


@pytest.fixture(scope="session")
def crack_patterns() -> list[SourcePattern]:
    """Real magnetic-tile cracks from the bundled sample (5, able to make every scale on a
    256x256 target: longest sides 44 to 383 px), as grey source patterns."""
    images = sorted((DEMO / "defects" / "MT_Crack" / "Imgs").glob("*.jpg"))
    return _patterns([(p, p.with_suffix(".png")) for p in images], "crack", "magnetic_tile")


@pytest.fixture(scope="session")
def deepcrack_patterns(shared_data: Path) -> list[SourcePattern]:
    """Real DeepCrack cracks (another domain than the tiles), from ../shared/data."""
    images = sorted((shared_data / "deepcrack" / "train_img").glob("*.jpg"))[:25]
    labels = shared_data / "deepcrack" / "train_lab"
    return _patterns([(p, labels / f"{p.stem}.png") for p in images], "crack", "deepcrack")


@pytest.fixture(scope="session")
def demo_daad(tmp_path_factory) -> str:
    """A DAAD built from the bundled defects (real magnetic-tile defects with masks)."""
    from cai_ray.daad.builders import DaadSpec, build_daad

    out = tmp_path_factory.mktemp("daad") / "demo"
    build_daad(
        DaadSpec.from_yaml(REPO / "configs" / "daad" / "demo.yaml"), DEMO / "defects", str(out)
    )
    return str(out)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, with fewer CPUs than a 2-core machine has threads."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 1 MiB at ``tmp_path / "disk"`` (a tmpfs; ``remount(size=...)``
    resizes it), for the out-of-space tests. Mounting needs root: skipped where it is not
    permitted, a failure under CI (which runs as root)."""
    try:
        disk = SmallDisk.mount(tmp_path / "disk", 1 << 20)
    except MountRefused as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must mount a tmpfs: {exc}")
        pytest.skip(f"cannot mount a small filesystem here: {exc}")
    try:
        yield disk
    finally:
        disk.unmount()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server on 127.0.0.1 (SeaweedFS) with the test credentials; stopped at the end."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the test server, with cai-ray's storage pointed at the server."""

    from cai_ray.io import storage

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = local_s3(s3_server.endpoint)
    fs.mkdir(name)
    storage.configure(endpoint_url=s3_server.endpoint)
    yield f"s3://{name}"
    storage.configure(endpoint_url=None)


def older_daad(daad: str | Path, out: Path, version: int, dropped: tuple[str, ...] = ()) -> Path:
    """A copy of ``daad`` as an older cai-ray wrote it: its index says format ``version`` and
    its records table lacks the ``dropped`` columns that format did not have."""
    import pyarrow.parquet as pq

    shutil.copytree(daad, out)
    index = json.loads((out / "daad.json").read_text())
    index["format_version"] = version
    (out / "daad.json").write_text(json.dumps(index))
    if dropped:
        table = pq.read_table(out / "records.parquet")
        pq.write_table(table.drop_columns(list(dropped)), out / "records.parquet")
    return out


def demo_tiles(folder: Path, count: int) -> list[Path]:
    """Copies of the first ``count`` bundled demo tiles in ``folder`` (made): inputs a test
    may change, break or add to."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for image in sorted((DEMO / "normal").glob("*.jpg"))[:count]:
        copies.append(Path(shutil.copy(image, folder / image.name)))
    return copies
