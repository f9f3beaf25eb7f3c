"""A full disk under a local output (a row of docs/RELIABILITY.md): the job stops with one
clear error naming the file, the bytes it needed and the bytes free, whoever met it (a worker
writing a shard, or the driver writing its own files); nothing half-written counts as
committed; and a rerun once space is freed completes the job exactly once."""

import re
import shutil
import time
from pathlib import Path

import pytest

from cai_ray.io import layout, storage
from cai_ray.pipeline.synth import RESUME_HINT, run_synth
from cai_ray.pipeline.verify import verify_output
from tests.faultmatrix import assert_exactly_once, compare, record, shard_tars
from tests.smalldisk import PAGE, pages

pytestmark = [pytest.mark.timeout(400), pytest.mark.fault_matrix]


def test_a_full_disk_stops_the_job_with_one_clear_error_and_a_rerun_resumes(
    ray_local, undisturbed, make_config, small_disk
):
    reference = Path(undisturbed.output.path)
    sizes = {p.name: p.stat().st_size for p in reference.iterdir()}
    whole = sum(map(pages, sizes.values()))
    small_disk.remount(size=pages(whole // 2))  # room for about half the shards
    config = make_config(out="disk/out", output={"targets_per_shard": 1})
    out = Path(config.output.path)
    started = time.monotonic()
    with pytest.raises(storage.OutOfSpaceError) as raised:
        run_synth(config, show_progress=False)
    stopped_s = time.monotonic() - started
    error = str(raised.value)
    found = re.fullmatch(
        rf"no space left on {re.escape(str(small_disk.path))} writing {re.escape(str(out))}/"
        rf"(shard-\d{{6}}\.(?:tar|json)): ([\d,]+) bytes needed, ([\d,]+) free; {RESUME_HINT}",
        error,
    )
    assert found, error
    name, needed, free = found[1], int(found[2].replace(",", "")), int(found[3].replace(",", ""))
    assert needed == sizes[name] > free
    committed = layout.committed_indices(str(out))
    shards = layout.read_json(str(reference / layout.JOB_FILE))["shards"]
    assert 0 < len(committed) < shards
    for index in committed:  # a committed shard is whole: the undisturbed run's bytes
        for member in (layout.shard_name(index), layout.entry_name(index)):
            assert (out / member).read_bytes() == (reference / member).read_bytes()

    small_disk.remount(size=2 * whole)  # space freed
    started = time.monotonic()
    manifest = run_synth(config, show_progress=False)
    resume_s = time.monotonic() - started
    assert manifest["complete"] and manifest["shards_made"] == shards - len(committed)
    assert verify_output(str(out)).ok
    assert not list(out.glob(".*.tmp"))
    assert (out / layout.MANIFEST_FILE).read_bytes() == (
        reference / layout.MANIFEST_FILE
    ).read_bytes()
    figures = compare(shard_tars(str(out)), shard_tars(str(reference)))
    record(
        "disk full on a local output",
        **figures,
        committed_before_error=len(committed),
        error=error,
        stopped_s=round(stopped_s, 1),
        resume_s=round(resume_s, 1),
    )
    assert_exactly_once(figures)


@pytest.mark.parametrize(
    "name", [layout.INPUT_LIST_FILE, layout.JOB_FILE, layout.MANIFEST_FILE, layout.PREVIEW_FILE]
)
def test_a_full_disk_at_a_write_of_the_driver_names_that_file(make_config, small_disk, name):
    """The driver's own files, in the order it writes them, each on a disk with room for what
    comes before it and not for it. The local executor: the driver's writes are the same."""
    config = make_config(
        out="disk/out", output={"targets_per_shard": 1}, resources={"executor": "local"}
    )
    out = Path(config.output.path)
    small_disk.remount(size=16 << 20)
    run_synth(config, show_progress=False)  # with room: an undisturbed run, its sizes and bytes
    taken = {p.name: p.stat().st_blocks * 512 for p in out.iterdir()}
    size = (out / name).stat().st_size
    tars, manifest = shard_tars(str(out)), (out / layout.MANIFEST_FILE).read_bytes()
    shutil.rmtree(out)
    shard_files = sorted(n for n in taken if layout.SHARD_PATTERN.match(n))
    written = [
        layout.INPUT_LIST_FILE,
        layout.JOB_FILE,
        *shard_files,
        layout.MANIFEST_FILE,
        layout.PREVIEW_FILE,
    ]
    before = written[: written.index(name)]
    # room for what comes before it and the lease's owner file (a page, held while the run
    # writes), and with another's file of a page (a disk is never empty), a page less than it
    # takes
    (small_disk.path / "ballast").write_bytes(bytes(PAGE))
    small_disk.remount(size=sum(taken[n] for n in before) + PAGE + taken[name])

    with pytest.raises(storage.OutOfSpaceError) as raised:
        run_synth(config, show_progress=False)
    assert str(raised.value) == (
        f"no space left on {small_disk.path} writing {out / name}: {size:,} bytes needed, "
        f"{taken[name] - PAGE:,} free; {RESUME_HINT}"
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # and no temporary
    committed = layout.committed_indices(str(out))

    small_disk.remount(size=16 << 20)
    started = time.monotonic()
    assert run_synth(config, show_progress=False)["complete"]
    resume_s = time.monotonic() - started
    assert verify_output(str(out)).ok
    assert (out / layout.MANIFEST_FILE).read_bytes() == manifest
    assert (out / layout.PREVIEW_FILE).is_file()
    figures = compare(shard_tars(str(out)), tars)
    record(
        f"disk full at the driver's {name}",
        **figures,
        committed_before_error=len(committed),
        error=str(raised.value),
        resume_s=round(resume_s, 1),
    )
    assert_exactly_once(figures)
