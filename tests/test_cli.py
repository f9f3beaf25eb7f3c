import json
import subprocess
import sys

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
    assert "20 records" in capsys.readouterr().out
    assert main(["daad", "stats", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["records"] == 20 and stats["by_domain"] == {"magnetic_tile": 20}


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: {paths: []}\ncai: {blend: glue}\n")
    assert main(["synth", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "invalid config" in err and "blend" in err
    assert main(["synth", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_missing_daad_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "inputs": {"paths": [str(DEMO / "normal")]},
                "daad": {"path": str(tmp_path / "nodaad")},
                "output": {"path": str(tmp_path / "o")},
            }
        )
    )
    assert main(["synth", "--config", str(config)]) == 2
    assert "not a DAAD" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("script", "command"),
    [
        ("synthesize.py", "synth"),
        ("build_daad.py", "daad build"),
        ("train_detector.py", "detector train"),
        ("train_cdm.py", "cdm train"),
        ("benchmark.py", "benchmark"),
    ],
)
def test_job_scripts_run_their_subcommand(script, command, tmp_path):
    """Each jobs/ script is the CLI subcommand it names, started by path as Ray jobs do."""
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr
    assert f"cai-ray {command}" in done.stdout


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
