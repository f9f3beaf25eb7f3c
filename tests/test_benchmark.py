"""The benchmark command end to end on the bundled sample: two synthesizers, two seeds, a tiny
detector; the report's numbers are checked against an independent 'cai-ray detector eval'."""

import csv
import json
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from cai_ray.benchmark.config import BenchmarkConfig, SynthesizerEntry, load_benchmark_config
from cai_ray.benchmark.run import _check_given_output, run_benchmark
from cai_ray.cli import main
from cai_ray.io.settings import ConfigError
from tests.conftest import DEMO

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("ray_local")]
ROOT = Path(__file__).resolve().parents[1]


class _MeanFeatures(torch.nn.Module):
    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float()
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory, demo_daad):
    tmp = tmp_path_factory.mktemp("benchmark")
    weights = tmp / "inception.pt"
    torch.jit.script(_MeanFeatures()).save(str(weights))
    raw = yaml.safe_load((ROOT / "configs/benchmark/demo.yaml").read_text())
    raw["out"] = str(tmp / "out")
    raw["target"] = str(ROOT / raw["target"])
    raw["data_root"] = str(DEMO)
    raw["synth"]["daad"] = {"path": demo_daad}
    raw["fid"] = {"weights": str(weights), "samples": 10}
    config = BenchmarkConfig.model_validate(raw)
    partial = run_benchmark(config, only=["cutpaste"], seeds=[0])  # one row first, as on a
    assert [row["synthesizer"] for row in partial["rows"]] == ["cutpaste"]  # busy machine
    assert partial["rows"][0]["seeds"] == 1 and "fid" not in partial["rows"][0]
    assert partial["missing"] == ["cai-normal-s0", "cai-normal-s1", "cutpaste-s1"]
    with pytest.raises(ValueError, match=r"no synthesizer named \['glass'\]"):
        run_benchmark(config, only=["glass"])
    with pytest.raises(ValueError, match=r"seeds \[7\] are not among"):
        run_benchmark(config, seeds=[7])
    return config, run_benchmark(config)  # the rest, merged with the row already run


def test_the_shipped_benchmark_configs_load():
    for path in sorted((ROOT / "configs/benchmark").glob("*.yaml")):
        config = load_benchmark_config(path)
        assert len(config.seeds) >= 2 and config.synthesizers


def test_report_has_a_row_per_run_and_the_pictures(benchmark_run):
    assert benchmark_run[1]["missing"] == []
    config, summary = benchmark_run
    out = Path(config.out)
    with (out / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["name"], r["seed"]) for r in rows] == [
        ("cai-normal", "0"),
        ("cutpaste", "0"),
        ("cai-normal", "1"),
        ("cutpaste", "1"),
    ]
    for row in rows:
        for metric in ("pixel_auroc", "pixel_ap", "pro", "image_auroc"):
            assert 0 <= float(row[f"best_{metric}"]) <= 1
        assert float(row["best_pixel_ap"]) >= float(row["last_pixel_ap"])
        assert float(row["fid"]) >= 0 and int(row["samples"]) > 0
    assert rows[0]["best_pixel_ap"] != rows[2]["best_pixel_ap"]  # seeds differ
    table = (out / "results.md").read_text()
    assert "| cai-normal |" in table and "| cutpaste |" in table and "±" in table
    # per defect type: a row per synthesizer, a column per defect folder of the demo target
    by_defect = table.split("Per defect type")[1]
    header = next(line for line in by_defect.splitlines() if line.startswith("| synthesizer"))
    assert header.split(" | ")[1:-2] == ["blowhole", "break", "crack", "fray", "uneven"]
    lines = [line for line in by_defect.splitlines() if line.startswith(("| cai", "| cut"))]
    assert [len(line.split(" / ")) - 1 for line in lines] == [6, 6]
    assert lines[0].endswith("| 0, 1 |")
    assert [r["synthesizer"] for r in summary["rows"]] == ["cai-normal", "cutpaste"]
    pictures = ["curves.png", "examples.png"] + [
        f"bars_{m}.png" for m in ("pixel_auroc", "pixel_ap", "pro", "image_auroc")
    ]
    for name in pictures:
        image = cv2.imread(str(out / name))
        assert image is not None and min(image.shape[:2]) > 100, name


def test_training_uses_only_the_training_normals(benchmark_run):
    config, summary = benchmark_run
    listed = (Path(config.out) / "train-normals.txt").read_text().split()
    held_out = sorted((DEMO / "normal").glob("*.jpg"))[3::4]
    assert len(listed) == 9 == summary["target"]["train"]
    assert not {str(p.resolve()) for p in held_out} & set(listed)


def test_reported_last_epoch_matches_an_independent_eval(benchmark_run, capsys):
    config, _ = benchmark_run
    run = Path(config.out, "runs", "cutpaste-s1")
    result = json.loads((run / "result.json").read_text())
    target = config.target
    assert (
        main(
            [
                "detector",
                "eval",
                "--checkpoint",
                str(run / "last.pt"),
                "--test",
                target,
                "--data-root",
                config.data_root,
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.split("\n  skipped")[0])
    assert printed["epoch"] == result["last"]["epoch"] == config.detector.epochs
    for metric in ("pixel_auroc", "pixel_ap", "pro", "image_auroc"):
        assert printed[metric] == pytest.approx(result["last"][metric], abs=1e-6)
    kept = json.loads((run / "by_defect.json").read_text())
    assert (
        kept["epoch"] == printed["epoch"] and kept["defects"].keys() == printed["by_defect"].keys()
    )
    for defect, metrics in printed["by_defect"].items():
        for metric, value in metrics.items():
            assert kept["defects"][defect][metric] == pytest.approx(value, abs=1e-6)


def test_a_rerun_reuses_every_finished_run(benchmark_run):
    config, summary = benchmark_run
    checkpoint = Path(config.out, "runs", "cai-normal-s0", "last.pt")
    before = checkpoint.stat().st_mtime_ns
    again = run_benchmark(config)
    assert again["rows"] == summary["rows"]
    assert checkpoint.stat().st_mtime_ns == before


def test_detector_train_command_and_a_missing_checkpoint(benchmark_run, tmp_path, capsys):
    config, _ = benchmark_run
    detector = {
        "data": [str(Path(config.out, "synth", "cai-normal-s0"))],
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "image_size": 32,
        "base_width": 4,
        "levels": 3,
        "epochs": 2,
        "batch_size": 4,
    }
    (tmp_path / "detector.yaml").write_text(yaml.safe_dump(detector))
    assert main(["detector", "train", "--config", str(tmp_path / "detector.yaml")]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    code = main(
        [
            "detector",
            "eval",
            "--checkpoint",
            str(tmp_path / "absent.pt"),
            "--test",
            config.target,
            "--data-root",
            config.data_root,
        ]
    )
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_a_crash_before_an_epoch_is_scored_is_made_good_on_resume(tmp_path, demo_daad, monkeypatch):
    from cai_ray.benchmark import run as module

    raw = yaml.safe_load((ROOT / "configs/benchmark/demo.yaml").read_text())
    raw |= {"out": str(tmp_path), "target": str(ROOT / raw["target"]), "data_root": str(DEMO)}
    raw |= {
        "seeds": [3],
        "synthesizers": [{"name": "cutpaste", "settings": raw["synthesizers"][1]["settings"]}],
    }
    raw["synth"]["daad"] = {"path": demo_daad}
    config = BenchmarkConfig.model_validate(raw)
    real = module.score_checkpoint
    calls = []

    def killed_at_the_second_scoring(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed after checkpoint 2, before scoring it")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "score_checkpoint", killed_at_the_second_scoring)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config)
    run = tmp_path / "runs" / "cutpaste-s3"
    assert [s["epoch"] for s in json.loads((run / "epochs.json").read_text())] == [1]
    monkeypatch.undo()
    summary = run_benchmark(config)
    result = json.loads((run / "result.json").read_text())
    assert [s["epoch"] for s in result["curve"]] == [1, 2]
    assert summary["rows"][0]["seeds"] == 1


def test_a_ready_made_output_trains_like_the_run_that_made_it(benchmark_run, tmp_path):
    """'data:' rows (e.g. CDM samples made on a GPU elsewhere) train on that output as is."""
    config, summary = benchmark_run
    made = str(Path(config.out, "synth", "cai-normal-s{seed}"))
    given = config.model_copy(
        update={
            "out": str(tmp_path / "given"),
            "synthesizers": [SynthesizerEntry(name="given", data=made)],
            "fid": None,
        }
    )
    rows = run_benchmark(given)["rows"]
    original = next(r for r in summary["rows"] if r["synthesizer"] == "cai-normal")
    assert rows[0]["synthesizer"] == "given"
    for metric in ("pixel_ap", "pro"):  # same data, seed and settings: the same detector
        assert rows[0][metric] == pytest.approx(original[metric])


def test_a_ready_made_output_is_checked_for_seed_and_leakage(benchmark_run, tmp_path):
    config, _ = benchmark_run
    made = str(Path(config.out, "synth", "cai-normal-s0"))
    inputs = Path(config.out, "train-normals.txt")
    assert _check_given_output(config, made, 0, str(inputs))["complete"]
    with pytest.raises(ConfigError, match="seed 0, not 1"):
        _check_given_output(config, made, 1, str(inputs))
    fewer = tmp_path / "train.txt"
    fewer.write_text("\n".join(inputs.read_text().split()[1:]))
    with pytest.raises(ConfigError, match="not this benchmark's training normals"):
        _check_given_output(config, made, 0, str(fewer))
    with pytest.raises(ConfigError, match="no manifest"):
        _check_given_output(config, str(tmp_path), 0, str(inputs))
    with pytest.raises(ValueError, match="not both"):
        SynthesizerEntry(name="x", data=made, settings={"cai": {}})


@pytest.mark.parametrize(
    ("geometry", "scored_as"),
    [
        ({"mode": "tile", "overlap": 8}, "tile"),
        ({"mode": "crop", "crops": 2}, "tile"),
        ({"mode": "letterbox"}, "letterbox"),
    ],
)
def test_a_benchmark_cut_by_a_geometry_scores_the_test_images_at_their_own_size(
    geometry, scored_as, tmp_path, demo_daad, capsys
):
    """A geometry cuts the training normals for the synth job, and the real test images into
    targets whose maps are stitched back; 'detector eval' finds the geometry in the training
    data and gives the same numbers. The detector takes 32 px squares, the synth job cuts 64:
    test tiles are cut at 64 and resized to 32, as the training tiles were."""
    raw = yaml.safe_load((ROOT / "configs/benchmark/demo.yaml").read_text())
    raw |= {"out": str(tmp_path), "target": str(ROOT / raw["target"]), "data_root": str(DEMO)}
    raw |= {
        "seeds": [0],
        "synthesizers": [{"name": "cutpaste", "settings": raw["synthesizers"][1]["settings"]}],
        "geometry": geometry,
        "examples": 2,
    }
    raw["synth"]["daad"] = {"path": demo_daad}
    raw["detector"]["image_size"] = 32
    config = BenchmarkConfig.model_validate(raw)
    summary = run_benchmark(config)
    job = json.loads((tmp_path / "synth" / "cutpaste-s0" / "job.json").read_text())
    assert job["config"]["inputs"]["geometry"]["mode"] == geometry["mode"]
    manifest = json.loads((tmp_path / "synth" / "cutpaste-s0" / "manifest.json").read_text())
    per_image = {"tile": 12, "crop": 2, "letterbox": 1}[geometry["mode"]]  # ~250x350 at 64
    assert manifest["views"] >= per_image * manifest["targets"] == per_image * 9
    result = json.loads((tmp_path / "runs" / "cutpaste-s0" / "result.json").read_text())
    assert summary["rows"][0]["synthesizer"] == "cutpaste"
    assert cv2.imread(str(tmp_path / "examples.png")) is not None
    code = main(
        [
            "detector",
            "eval",
            "--checkpoint",
            str(tmp_path / "runs" / "cutpaste-s0" / "last.pt"),
            "--test",
            config.target,
            "--data-root",
            config.data_root,
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out.split("\n  skipped")[0])
    assert printed["geometry"] == scored_as
    assert printed["view_size"] == (32 if scored_as == "letterbox" else 64)
    for metric in ("pixel_auroc", "pixel_ap", "pro", "image_auroc"):
        assert printed[metric] == pytest.approx(result["last"][metric], abs=1e-6)


def test_the_report_headlines_the_last_epoch_and_puts_the_best_beside_it():
    """The best epoch is chosen on the test set, so the table's metrics are the last
    epoch's (mean ± std over seeds); the best epoch's pixel AP is a second column."""
    from cai_ray.benchmark.report import markdown_table, summarize_runs

    def run(seed: int, best_ap: float, last_ap: float) -> dict:
        metrics = {"pixel_auroc": 0.6, "pro": 0.5, "image_auroc": 0.7}
        return {
            "name": "cai",
            "seed": seed,
            "best": {"epoch": 4, **metrics, "pixel_ap": best_ap},
            "last": {"epoch": 8, **metrics, "pixel_ap": last_ap},
        }

    [row] = summarize_runs([run(0, 0.30, 0.10), run(1, 0.20, 0.12)], {})
    assert row["pixel_ap"] == pytest.approx(0.11) and row["best_pixel_ap"] == pytest.approx(0.25)
    table = markdown_table([row])
    assert "AP (best epoch)" in table and "| 11.0 ± 1.4 |" in table and "| 25.0 |" in table
