import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cai_ray.cli import main
from tests.conftest import DEMO, REPO


def test_daad_build_and_stats(tmp_path, capsys):
    out = tmp_path / "daad"
    spec = REPO / "configs" / "daad" / "demo.yaml"
    assert (
        main(
            [
                "daad",
                "build",
                "--spec",
                str(spec),
                "--data-root",
                str(DEMO / "defects"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "27 records" in capsys.readouterr().out
    assert main(["daad", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 27 and stats["by_domain"] == {"magnetic_tile": 27}
    assert main(["daad", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"DAAD {out}: 27 records, 4 classes, 1 domains")
    assert "near-duplicate images" in text
    assert "tags: none" in text  # the demo spec tags no source


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: {paths: []}\ncai: {blend: glue}\n")
    assert main(["synth", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "invalid config" in err and "blend" in err
    assert main(["synth", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_daad_is_a_clear_error(tmp_path, capsys):
    config = _config_file(
        tmp_path,
        {
            "inputs": {"paths": [str(DEMO / "normal")]},
            "daad": {"path": str(tmp_path / "nodaad")},
            "output": {"path": str(tmp_path / "o")},
        },
    )
    assert main(["synth", "--config", str(config)]) == 2
    assert "not a DAAD" in capsys.readouterr().err


def _config_file(tmp_path: Path, raw: dict) -> Path:
    """``raw`` as a config file in ``tmp_path`` (JSON is YAML)."""
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(raw))
    return path


def _demo_config(tmp_path: Path, **synthesizer) -> Path:
    """configs/demo.yaml with its locations in ``tmp_path`` (and another synthesizer)."""
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["inputs"]["paths"] = [str(DEMO / "normal")]
    raw["daad"] = {
        "path": str(tmp_path / "daad"),
        "build": {"spec": str(REPO / "configs/daad/demo.yaml"), "data_root": str(DEMO / "defects")},
    }
    raw["output"]["path"] = str(tmp_path / "out")
    if synthesizer:
        raw["synthesizer"] = synthesizer
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# Runs the cai-ray CLI in a fresh interpreter in which torch and diffusers cannot be imported,
# as on the base install (a module set to None in sys.modules raises ImportError on import).
WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None
sys.modules["diffusers"] = None
from cai_ray.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in ("torch", "diffusers") if sys.modules.get(m) is not None)
assert not loaded, f"imported {loaded}"
sys.exit(code)
"""


def _cli_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_base_install_runs_synthesis_without_torch(tmp_path):
    """The demo job's whole path (DAAD build, foreground, CAI, shards, manifest, preview,
    verify, daad stats) with torch and diffusers impossible to import."""
    config = _demo_config(tmp_path)
    done = _cli_without_torch("synth", "--config", str(config), "--local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "120 samples in 3 shard(s)" in done.stdout
    verified = _cli_without_torch("verify", str(tmp_path / "out"), cwd=tmp_path)
    assert verified.returncode == 0 and "OK: 3 shard(s), 120 samples" in verified.stdout
    stats = _cli_without_torch("daad", "stats", str(tmp_path / "daad"), "--json", cwd=tmp_path)
    assert stats.returncode == 0 and json.loads(stats.stdout)["records"] == 27


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["detector", "train", "--config", "none.yaml"], "train"),
        (["cdm", "train", "--config", "none.yaml"], "cdm"),
        (["benchmark", "--config", "none.yaml"], "bench"),
    ],
)
def test_commands_that_need_torch_name_their_extra(args, extra, tmp_path):
    done = _cli_without_torch(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert f'pip install -e ".[{extra}]"' in done.stderr and "Traceback" not in done.stderr


def test_a_cdm_job_without_torch_names_the_cdm_extra(tmp_path):
    config = _demo_config(tmp_path, method="cdm", checkpoint=str(tmp_path / "cdm"))
    done = _cli_without_torch("synth", "--config", str(config), "--local", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "synthesizer method 'cdm' needs torch" in done.stderr
    assert 'pip install -e ".[cdm]"' in done.stderr


def test_help_opens_with_what_the_tool_does():
    done = subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},  # a standard terminal: the line must fit it
    )
    assert done.returncode == 0
    description = done.stdout.split("\n\n")[1]
    assert description == (
        "cai-ray injects real defects into normal images to train anomaly detectors."
    )


def _run_job(script: str, *args: str) -> subprocess.CompletedProcess:
    """A jobs/ entry point as a Ray job runs it: ``python -m jobs.<name>`` in the uploaded
    working dir (here the repository), with nothing added to the Python path."""
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{script.removesuffix('.py')}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ""},
    )


def test_job_scripts_build_and_synthesize(tmp_path):
    """jobs/build_daad.py and jobs/synthesize.py run their subcommands for real."""
    built = _run_job(
        "build_daad.py",
        *("--spec", str(REPO / "configs/daad/demo.yaml")),
        *("--data-root", str(DEMO / "defects"), "--out", str(tmp_path / "daad")),
    )
    assert built.returncode == 0, built.stderr
    assert "27 records" in built.stdout
    config = _demo_config(tmp_path)
    made = _run_job("synthesize.py", "--config", str(config), "--local")
    assert made.returncode == 0, made.stderr
    assert "120 samples in 3 shard(s)" in made.stdout
    again = _run_job("synthesize.py", "--config", str(config), "--local")
    assert "nothing to do: 3 of 3 shards committed" in again.stdout


@pytest.mark.parametrize(
    ("script", "what"),
    [("train_detector.py", "detector"), ("train_cdm.py", "CDM"), ("benchmark.py", "benchmark")],
)
def test_training_job_scripts_load_their_command(script, what, tmp_path):
    """Each training script imports its command and reads its config (a missing one here)."""
    done = _run_job(script, "--config", str(tmp_path / "none.yaml"))
    assert done.returncode == 2
    assert "not found" in done.stderr and "none.yaml" in done.stderr, done.stderr


def test_every_shipped_config_validates():
    """Each YAML in configs/ loads with the model that reads it (a typo fails here, not at
    the start of a cluster job)."""
    from cai_ray.cdm.train import CDMConfig
    from cai_ray.config import load_config
    from cai_ray.detector.train import DetectorConfig

    for path in (
        sorted((REPO / "configs").glob("*.yaml"))
        + sorted((REPO / "configs" / "cdm").glob("*_data.yaml"))
        + sorted((REPO / "configs" / "cdm").glob("*_synth.yaml"))
    ):
        assert load_config(path).output.path, path
    trainers = {"cdm": CDMConfig, "detector": DetectorConfig}
    for folder, model in trainers.items():
        for path in sorted((REPO / "configs" / folder).glob("*.yaml")):
            if path.stem.endswith(("_data", "_synth")):
                continue
            model.model_validate(yaml.safe_load(path.read_text()))


@pytest.mark.slow
def test_a_successful_ray_run_prints_only_our_lines(tmp_path):
    """Ray's token notice, Ray Data's plan and warnings, and the core worker's E-level line
    stay in Ray's log folder; -v lets them through. The quiet run also has torch and diffusers
    blocked in every process (a sitecustomize that Ray's workers inherit through PYTHONPATH), as
    on the base install."""
    config = _demo_config(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['torch'] = None\nsys.modules['diffusers'] = None\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "synth", "--config", str(config), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(blocker)},
        cwd=tmp_path,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "120 samples in 3 shard(s)" in quiet.stdout
    assert quiet.stderr == ""
    verbose = subprocess.run(
        [sys.executable, "-m", "cai_ray.cli", "-v", "synth", "--config", str(config)]
        + ["--out", str(tmp_path / "out-verbose"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "Starting execution of Dataset" in verbose.stderr


def test_inputs_list_then_a_dry_run_of_a_job_on_it(demo_daad, tmp_path, capsys):
    """One listing feeds the job; the dry run counts, probes and writes nothing, then says what
    a resume would skip."""
    listed = tmp_path / "normals.parquet"
    assert main(["inputs", "list", str(DEMO / "normal"), "--out", str(listed)]) == 0
    assert capsys.readouterr().out.startswith(f"12 inputs -> {listed}; 0 files left out")
    out = tmp_path / "out"
    config = _config_file(
        tmp_path,
        {
            "inputs": {"paths": [str(listed)]},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 1, "medium": 1, "small": 0}},
            "output": {"path": str(out), "targets_per_shard": 5, "preview_samples": 0},
            "resources": {"executor": "local"},
        },
    )
    assert main(["synth", "--config", str(config), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "12 targets in 3 shards of 5" in text and "samples: about 24 " in text
    assert "bytes: about " in text and "all 3 shards to make" in text
    assert not out.exists()
    assert main(["synth", "--config", str(config), "--no-progress"]) == 0
    for name in ("shard-000002.tar", "shard-000002.json"):
        (out / name).unlink()
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    assert main(["synth", "--config", str(config), "--dry-run"]) == 0
    assert "resume: 2 shards committed (skipped), 1 to make" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == before
    assert main(["verify", str(out)]) == 1  # a shard missing: the list beside the output read


def test_a_dry_run_whose_probed_inputs_are_skipped_says_why(demo_daad, tmp_path, capsys):
    """Probed inputs that cannot be read give no estimate of 0 samples but the reason."""
    listed = tmp_path / "missing.txt"
    listed.write_text("".join(f"{tmp_path}/gone/{i}.jpg\n" for i in range(3)))
    config = _config_file(
        tmp_path,
        {
            "color": "grey",
            "inputs": {"paths": [str(listed)]},
            "daad": {"path": demo_daad},
            "output": {"path": str(tmp_path / "out")},
        },
    )
    assert main(["synth", "--config", str(config), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"the first 2 inputs were all skipped, e.g. {tmp_path}/gone/0.jpg" in text
    assert "not found" in text and "about 0" not in text


def test_a_job_counts_every_file_left_out_and_names_the_first(
    demo_daad, tmp_path, capsys, monkeypatch
):
    """job.json and the manifest count every file of the input folder that is not an image
    (left_out_inputs) and name the first LEFT_OUT_NAMED; the summary counts them all."""
    from cai_ray.io import inputs

    monkeypatch.setattr(inputs, "LEFT_OUT_NAMED", 2)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(sorted((DEMO / "normal").glob("*.jpg"))[:3]):
        (folder / f"{i}.jpg").write_bytes(image.read_bytes())
        (folder / f"{i}.txt").write_text("a label")
    out = tmp_path / "out"
    config = _config_file(
        tmp_path,
        {
            "inputs": {"paths": [str(folder)]},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 1, "medium": 0, "small": 0}},
            "output": {"path": str(out), "preview_samples": 0},
            "resources": {"executor": "local"},
        },
    )
    assert main(["synth", "--config", str(config), "--no-progress"]) == 0
    assert "skipped inputs: 3," in capsys.readouterr().out
    job = json.loads((out / "job.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert job["left_out_inputs"] == manifest["left_out_inputs"] == 3
    assert [s["path"] for s in manifest["skipped_inputs"]] == [
        str(folder / "0.txt"),
        str(folder / "1.txt"),
    ]


def test_verify_repair_removes_the_damaged_shards_and_synth_rewrites_them(
    demo_daad, tmp_path, capsys
):
    """verify names the damaged shards and the repair command; --repair removes them (and the
    manifest) and says the job's synth rewrites them; synth then makes exactly those, the same
    bytes."""
    out = tmp_path / "out"
    config = _config_file(
        tmp_path,
        {
            "inputs": {"paths": [str(DEMO / "normal")]},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 1, "medium": 0, "small": 0}},
            "output": {"path": str(out), "targets_per_shard": 3, "preview_samples": 0},
            "resources": {"executor": "local"},
        },
    )
    assert main(["synth", "--config", str(config), "--no-progress"]) == 0
    whole = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    tar = out / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-1024])  # truncated
    (out / "shard-000002.json").unlink()
    capsys.readouterr()

    assert main(["verify", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "PROBLEM shard-000001.tar: " in printed and "(truncated or replaced)" in printed
    assert "PROBLEM shard-000002.tar: its entry shard-000002.json is missing" in printed
    assert (
        f"2 damaged shard(s) (shard-000001.tar, shard-000002.tar): 'cai-ray verify {out} "
        "--repair' removes them" in printed
    )
    assert main(["verify", str(out), "--repair", "--no-progress"]) == 1
    assert "removed 2 damaged shard(s) (shard-000001.tar, shard-000002.tar)" in (
        capsys.readouterr().out
    )
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(
        name for name in whole if not name.startswith(("shard-000001", "shard-000002"))
    )
    assert not (out / "manifest.json").exists()
    assert main(["synth", "--config", str(config), "--no-progress"]) == 0
    assert {p.name: p.read_bytes() for p in out.glob("shard-*")} == whole
    assert main(["verify", str(out), "--no-progress"]) == 0


def test_synth_and_repair_on_an_output_another_run_holds_refuse_naming_it(
    demo_daad, tmp_path, capsys
):
    from cai_ray.pipeline.lease import holding

    out = tmp_path / "out"
    config = _config_file(
        tmp_path,
        {
            "inputs": {"paths": [str(DEMO / "normal")]},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 1, "medium": 0, "small": 0}},
            "output": {"path": str(out), "preview_samples": 0},
            "resources": {"executor": "local"},
        },
    )
    assert main(["synth", "--config", str(config), "--no-progress"]) == 0
    (out / "shard-000000.json").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    with holding(str(out), "cai-ray synth", timeout_s=300, heartbeat_s=30):
        assert main(["synth", "--config", str(config), "--no-progress"]) == 2
        assert main(["verify", str(out), "--repair", "--no-progress"]) == 2
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 2
        for error in errors:
            assert error.startswith(
                f"cai-ray: error: {out} is being written by another run: cai-ray synth on host "
            )
            assert f", pid {os.getpid()}, started " in error
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "owner.json"} == before
