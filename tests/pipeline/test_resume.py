"""A resume refuses an output whose sources changed since it was started, naming what changed:
the DAAD rebuilt in place, an input image's pixels replaced, a synthesizer's files replaced.
Run in-process (executor: local): the check is the driver's, before any stage."""

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
import yaml

from cai_ray.config import SynthConfig
from cai_ray.daad.builders import DaadSpec, build_daad
from cai_ray.io.codecs import ChangedInputError
from cai_ray.io.layout import OutputMismatchError
from cai_ray.pipeline.synth import run_synth
from tests.conftest import DEMO, REPO


@pytest.fixture
def sources(tmp_path):
    """Copies a job may see change: input tiles, a DAAD built from the bundled defects."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for image in sorted((DEMO / "normal").glob("*.jpg"))[:4]:
        shutil.copy(image, inputs / image.name)
    daad = tmp_path / "daad"
    build_daad(
        DaadSpec.from_yaml(REPO / "configs" / "daad" / "demo.yaml"), DEMO / "defects", str(daad)
    )
    return inputs, daad


def _config(inputs: Path, daad: Path, out: Path, **synthesizer) -> SynthConfig:
    raw = {
        "inputs": {"paths": [str(inputs)]},
        "daad": {"path": str(daad)},
        "cai": {"quotas": {"large": 1, "medium": 1, "small": 0}},
        "output": {"path": str(out), "targets_per_shard": 2, "preview_samples": 0},
        "resources": {"executor": "local"},
    }
    if synthesizer:
        raw["synthesizer"] = synthesizer
    return SynthConfig.model_validate(raw)


def _interrupted(config: SynthConfig) -> None:
    """Run the job, then undo its last shard: a run that crashed before the end."""
    run_synth(config, show_progress=False)
    out = Path(config.output.path)
    for name in ("shard-000001.tar", "shard-000001.json"):
        (out / name).unlink()


def test_an_unchanged_job_resumes(sources, tmp_path):
    config = _config(*sources, tmp_path / "out")
    _interrupted(config)
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and manifest["shards_made"] == 1


def test_a_daad_rebuilt_in_place_is_refused(sources, tmp_path):
    inputs, daad = sources
    config = _config(inputs, daad, tmp_path / "out")
    _interrupted(config)
    spec = yaml.safe_load((REPO / "configs" / "daad" / "demo.yaml").read_text())
    spec["sources"] = spec["sources"][:2]  # the same path, other records
    shutil.rmtree(daad)
    build_daad(DaadSpec.model_validate(spec), DEMO / "defects", str(daad))
    with pytest.raises(OutputMismatchError, match=f"the DAAD at {daad} changed"):
        run_synth(config, show_progress=False)
    assert not (tmp_path / "out" / "shard-000001.tar").exists()  # nothing mixed in


def test_an_input_with_new_pixels_is_refused_by_name(sources, tmp_path):
    inputs, daad = sources
    config = _config(inputs, daad, tmp_path / "out")
    _interrupted(config)
    first, second = sorted(inputs.glob("*.jpg"))[:2]
    first.write_bytes(second.read_bytes())  # same name, other pixels
    with pytest.raises(OutputMismatchError, match=f"1 input changed.*{first.name}"):
        run_synth(config, show_progress=False, relist=True)


def test_a_resume_reads_the_list_the_output_keeps(sources, tmp_path):
    """Without --relist a resume lists nothing: an input added to the folder since is not
    taken, and an input touched since (a re-copied dataset's new times) does not stop it."""
    inputs, daad = sources
    config = _config(inputs, daad, tmp_path / "out")
    _interrupted(config)
    first, second = sorted(inputs.glob("*.jpg"))[:2]
    shutil.copy(first, inputs / "zz-added.jpg")
    os.utime(second, ns=(0, second.stat().st_mtime_ns + 10**9))
    manifest = run_synth(config, show_progress=False)
    assert manifest["complete"] and manifest["shards_made"] == 1
    assert manifest["targets"] == 4
    with pytest.raises(OutputMismatchError, match="the input list differs"):
        run_synth(config, show_progress=False, relist=True)


def test_a_resume_stops_at_an_input_whose_size_changed_since_it_was_listed(sources, tmp_path):
    """Without --relist a resume reads the list it keeps; the shard's reader still sees an
    input of another size than listed (its pixels changed) and stops the job, naming it."""
    inputs, daad = sources
    config = _config(inputs, daad, tmp_path / "out")
    _interrupted(config)
    files = sorted(inputs.glob("*.jpg"))
    third = files[2]  # a target of the shard the crash undid
    other = next(f for f in files if f.stat().st_size != third.stat().st_size)
    third.write_bytes(other.read_bytes())
    with pytest.raises(ChangedInputError, match=f"{third.name} is .* it changed since.*--relist"):
        run_synth(config, show_progress=False)
    assert not (tmp_path / "out" / "shard-000001.tar").exists()
    with pytest.raises(OutputMismatchError, match=f"1 input changed.*{third.name}"):
        run_synth(config, show_progress=False, relist=True)


def test_a_resume_from_other_sources_lists_them(sources, tmp_path):
    """The kept list is reused only for the sources that made it: a job naming another folder
    of the same images lists that folder and resumes (the keys are the same), and the list it
    leaves is not taken for the first folder's; a folder with an image less is refused."""
    inputs, daad = sources
    config = _config(inputs, daad, tmp_path / "out")
    _interrupted(config)
    same = tmp_path / "same"
    shutil.copytree(inputs, same)
    at_same = config.model_copy(
        update={"inputs": config.inputs.model_copy(update={"paths": [str(same)]})}
    )
    assert run_synth(at_same, show_progress=False)["shards_made"] == 1
    kept = (tmp_path / "out" / "inputs.parquet").read_bytes()
    assert str(same).encode() in kept
    (tmp_path / "out" / "shard-000001.json").unlink()
    manifest = run_synth(config, show_progress=False)  # lists the first folder again
    assert manifest["complete"] and manifest["shards_made"] == 1
    assert str(same).encode() not in (tmp_path / "out" / "inputs.parquet").read_bytes()
    moved = tmp_path / "moved"
    shutil.copytree(inputs, moved)
    (moved / sorted(inputs.glob("*.jpg"))[0].name).unlink()
    other = config.model_copy(
        update={"inputs": config.inputs.model_copy(update={"paths": [str(moved)]})}
    )
    with pytest.raises(OutputMismatchError, match="the input list differs"):
        run_synth(other, show_progress=False)


def test_a_changed_texture_of_the_synthesizer_is_refused(sources, tmp_path):
    inputs, daad = sources
    textures = tmp_path / "textures"
    textures.mkdir()
    for image in sorted((DEMO / "normal").glob("*.jpg"))[4:6]:
        shutil.copy(image, textures / image.name)
    config = _config(inputs, daad, tmp_path / "out", method="draem", textures=[str(textures)])
    _interrupted(config)
    texture = sorted(textures.glob("*.jpg"))[0]
    os.utime(texture, ns=(0, texture.stat().st_mtime_ns + 10**9))  # rewritten a second later
    with pytest.raises(OutputMismatchError, match="the synthesizer's files changed"):
        run_synth(config, show_progress=False)


def test_a_changed_config_names_the_settings(sources, tmp_path):
    config = _config(*sources, tmp_path / "out")
    _interrupted(config)
    other = config.model_copy(update={"seed": 8})
    with pytest.raises(OutputMismatchError, match="config differs: seed"):
        run_synth(other, show_progress=False)
    flipped = dataclasses.replace(config.cai, match_scale=not config.cai.match_scale)
    renamed = config.model_copy(update={"cai": flipped})  # the identity keeps it as stm
    with pytest.raises(OutputMismatchError, match=r"config differs: cai\.match_scale\)"):
        run_synth(renamed, show_progress=False)


def test_more_than_99_samples_per_target_verify(sources, tmp_path):
    """Sample keys widen past two digits (s-0000000-100) and verify accepts them."""
    from cai_ray.io.layout import sample_key, sample_key_pattern
    from cai_ray.pipeline.verify import verify_output

    inputs, daad = sources
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(inputs)], "limit": 1},
            "synthesizer": {"method": "cutpaste", "anomalies_per_target": 100},
            "output": {"path": str(tmp_path / "out"), "preview_samples": 0, "include_normal": True},
            "resources": {"executor": "local"},
        }
    )
    manifest = run_synth(config, show_progress=False)
    assert manifest["samples"] + len(manifest["failed_samples"]) == 101
    report = verify_output(str(tmp_path / "out"))
    assert report.ok, report.problems
    match = sample_key_pattern("s").match(sample_key("s", 12_345_678, 100))
    assert match and match.groups() == ("12345678", "100")  # past 10 million targets too


def test_an_even_median_size_is_a_config_error(sources, tmp_path):
    raw = _config(*sources, tmp_path / "out").model_dump()
    with pytest.raises(ValueError, match="median_size must be odd"):
        SynthConfig.model_validate({**raw, "cai": {**raw["cai"], "median_size": 4}})


def test_changed_inputs_are_counted_in_one_pass_and_the_first_named(tmp_path):
    """The refusal reread the recorded stamps once per shard (quadratic on
    a large job) and held every changed key; now one pass, a count and the first five keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cai_ray.config import load_config
    from cai_ray.pipeline.synth import _changed_inputs, plan_job

    paths = [f"/data/images/{i:04d}.jpg" for i in range(100)]
    listed = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": paths, "stamp": ["1:1"] * 100}), listed)
    out = tmp_path / "out"
    out.mkdir()
    recorded = ["1:1"] * 10 + ["2:2"] * 90  # rows 10 to 99 changed since
    pq.write_table(pa.table({"path": paths, "stamp": recorded}), out / "inputs.parquet")
    config = load_config(REPO / "configs" / "demo.yaml")
    config.inputs.paths, config.color, config.daad = [str(listed)], "grey", None
    config.output.targets_per_shard = 8
    plan = plan_job(config, str(tmp_path))
    every = list(range(plan.num_shards))
    assert _changed_inputs(plan, every, str(out)) == (90, [f"{i:04d}.jpg" for i in range(10, 15)])
    assert _changed_inputs(plan, [12], str(out)) == (4, [f"{i:04d}.jpg" for i in range(96, 100)])
