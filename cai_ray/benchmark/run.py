"""The detector benchmark: for one target dataset and a list of synthesizers, synthesise from
the target's normal training images, train the detector with the same seed and settings, score
it on the real test defects, and report (table, CSV, pictures).

The protocol is the paper's (after DRAEM): the detector is trained from scratch on the
synthesizer's pseudo-anomalies plus the normal images, scored every ``eval_every`` epochs, and
the best epoch of the fixed budget is reported (by pixel AP), with the last epoch beside it.
Training runs in this process, on the GPU when there is one. Everything is resumable: synthesis
outputs and checkpoints are reused, finished runs are read back from their ``result.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from cai_ray.benchmark.config import BenchmarkConfig, SynthesizerEntry
from cai_ray.benchmark.report import read_synth_images, write_report
from cai_ray.config import SynthConfig
from cai_ray.detector.evaluate import default_device, score_checkpoint
from cai_ray.detector.target_specs import load_target_spec
from cai_ray.detector.target_splits import TargetSplit, load_target_split
from cai_ray.detector.targets import (
    TestSet,
    job_geometry,
    job_image_size,
    load_test_set,
    scoring_size,
)
from cai_ray.detector.train import DetectorConfig, checkpoint_url, read_checkpoint, train_detector
from cai_ray.io import layout, storage
from cai_ray.io.inputs import recorded_paths
from cai_ray.io.settings import ConfigError

log = logging.getLogger(__name__)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def synth_config(
    config: BenchmarkConfig, entry: SynthesizerEntry, seed: int, inputs: str
) -> SynthConfig:
    raw = _merge(config.synth, entry.settings)
    for reserved in ("inputs", "seed"):
        if reserved in raw:
            raise ConfigError(f"synthesizer {entry.name!r}: the benchmark sets {reserved!r}")
    raw["inputs"] = {"paths": [inputs], "geometry": asdict(config.geometry)}
    raw["seed"] = seed
    raw.setdefault("name", entry.name)
    raw["output"] = {**raw.get("output", {}), "path": synth_output(config, entry, seed)}
    try:
        return SynthConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"synthesizer {entry.name!r}: invalid synth settings:\n{exc}") from exc


def run_name(entry: SynthesizerEntry, seed: int) -> str:
    return f"{entry.name}-s{seed}"


def synth_output(config: BenchmarkConfig, entry: SynthesizerEntry, seed: int) -> str:
    if entry.data is not None:
        return entry.data.replace("{seed}", str(seed))
    return str(Path(config.out, "synth", run_name(entry, seed)))


def _check_given_output(config: BenchmarkConfig, out: str, seed: int, inputs: str) -> dict:
    """The manifest of a ready-made output, once it is known to be complete, made with this
    seed and only from the training normals (a test image among its inputs would leak)."""
    manifest_url = storage.join(out, layout.MANIFEST_FILE)
    if not storage.exists(manifest_url):
        raise ConfigError(f"{out} holds no finished 'cai-ray synth' output (no manifest.json)")
    manifest = layout.read_json(manifest_url)
    if not manifest["complete"]:
        raise ConfigError(f"{out} is incomplete: resume its 'cai-ray synth' first")
    job = layout.read_json(storage.join(out, layout.JOB_FILE))
    if job["config"]["seed"] != seed:
        raise ConfigError(f"{out} was made with seed {job['config']['seed']}, not {seed}")
    made_with = job_geometry(job)
    if made_with != config.geometry:
        raise ConfigError(
            f"{out} was cut by geometry {made_with}, the benchmark by {config.geometry}"
        )
    used = recorded_paths(out) or []
    allowed = {Path(p).name for p in Path(inputs).read_text().split()}
    strangers = sorted(Path(p).name for p in used if Path(p).name not in allowed)
    if strangers:
        raise ConfigError(
            f"{out} was made from {len(strangers)} images that are not this benchmark's "
            f"training normals (e.g. {strangers[0]}): the test set would leak into training"
        )
    return dict(manifest)


def data_size(config: BenchmarkConfig, entry: SynthesizerEntry, seed: int, inputs: str) -> int:
    """The ``image_size`` of a run's training data: its synth settings' (shared, or its row's
    ``settings``), or a ready-made output's (from its ``job.json``)."""
    if entry.data is None:
        return synth_config(config, entry, seed, inputs).image_size
    job = layout.read_json(storage.join(synth_output(config, entry, seed), layout.JOB_FILE))
    return job_image_size(job)


class RunTestSets:
    """The target's test set as each run scores it: cut like the run's training data (under
    ``crop`` and ``tile``, tiles of its ``image_size``, each resized to the detector's), each
    cut loaded once. ``shared`` is the cut of the shared synth settings; its skips are the
    ones ``split.skipped`` lists (they do not depend on the cut, nor then do the images)."""

    def __init__(self, config: BenchmarkConfig, split: TargetSplit, inputs: str) -> None:
        self._config, self._split, self._inputs = config, split, inputs
        self._loaded: dict[int, TestSet] = {}
        self._sizes: dict[tuple[str, int], int] = {}
        self.shared = self.at(config.synth_image_size)

    def at(self, size: int) -> TestSet:
        """The test set for training data of ``image_size`` ``size``."""
        config = self._config
        network = config.detector.image_size
        cut = scoring_size(config.geometry, size, network)
        if cut not in self._loaded:
            split = replace(self._split, skipped=[]) if self._loaded else self._split
            self._loaded[cut] = load_test_set(
                split, network, config.detector.color, config.geometry, data_size=size
            )
        return self._loaded[cut]

    def of(self, entry: SynthesizerEntry, seed: int) -> TestSet:
        """The test set of a run (a ready-made output's job.json is read, once: check the
        output first)."""
        run = (entry.name, seed)
        if run not in self._sizes:
            self._sizes[run] = data_size(self._config, entry, seed, self._inputs)
        return self.at(self._sizes[run])


def _detector_config(
    config: BenchmarkConfig, data: str, run_dir: Path, seed: int
) -> DetectorConfig:
    settings = config.detector.model_dump(exclude={"eval_every"})
    return DetectorConfig(data=[data], checkpoint_dir=str(run_dir), seed=seed, **settings)


def _pick_examples(test_masks: list[np.ndarray], defects: list[str], count: int) -> list[int]:
    """Test defects to show: one per defect type in turn, the largest of each first."""
    by_defect: dict[str, list[int]] = {}
    for index, defect in enumerate(defects):
        if defect != "good":
            by_defect.setdefault(defect, []).append(index)
    for indices in by_defect.values():
        indices.sort(key=lambda i: -int(test_masks[i].sum()))
    chosen: list[int] = []
    while len(chosen) < count and any(by_defect.values()):
        for indices in by_defect.values():
            if indices and len(chosen) < count:
                chosen.append(indices.pop(0))
    return chosen


def run_one(
    config: BenchmarkConfig,
    entry: SynthesizerEntry,
    seed: int,
    inputs: str,
    tests: RunTestSets,
    examples: list[int],
) -> dict:
    """Synthesise, train and score one (synthesizer, seed); resumable at every step."""
    from cai_ray.pipeline.synth import run_synth

    name = run_name(entry, seed)
    run_dir = Path(config.out, "runs", name)
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return dict(json.loads(result_file.read_text()))
    run_dir.mkdir(parents=True, exist_ok=True)
    data = synth_output(config, entry, seed)
    if entry.data is not None:
        manifest = _check_given_output(config, data, seed, inputs)
    else:
        log.info("%s: synthesising into %s", name, data)
        manifest = run_synth(synth_config(config, entry, seed, inputs), show_progress=False)
    test = tests.of(entry, seed)
    epochs_file = run_dir / "epochs.json"
    scored: list[dict] = json.loads(epochs_file.read_text()) if epochs_file.is_file() else []
    best_maps_file = run_dir / "examples.npy"
    device = default_device()

    def score(state: dict) -> None:
        epoch = state["epoch"]
        if epoch % config.detector.eval_every and epoch != config.detector.epochs:
            return
        scores = score_checkpoint(state, test, device=device)
        metrics, maps = scores.metrics, scores.maps
        nonlocal scored
        scored = [s for s in scored if s["epoch"] < epoch]
        if all(metrics["pixel_ap"] > s["pixel_ap"] for s in scored):
            shown = test.thumbnails([maps[i] for i in examples], config.detector.image_size)
            np.save(best_maps_file, shown.astype(np.float16))
        scored.append({"epoch": epoch, "loss": state["losses"][-1], **metrics})
        storage.write_bytes_atomic(str(epochs_file), json.dumps(scored, indent=1).encode())
        log.info("%s epoch %d: %s", name, epoch, {k: round(v, 4) for k, v in metrics.items()})

    detector = _detector_config(config, data, run_dir, seed)
    checkpoint = Path(checkpoint_url(detector))
    if checkpoint.is_file():  # a crash between a checkpoint and its scoring: score it now
        state = read_checkpoint(str(checkpoint))
        if all(s["epoch"] != state["epoch"] for s in scored):
            score(state)
    final = train_detector(detector, device, on_epoch=score)
    best = max(scored, key=lambda s: s["pixel_ap"])
    result = {
        "name": entry.name,
        "seed": seed,
        "samples": manifest["samples"],
        "failed_samples": len(manifest["failed_samples"]),
        "best": best,
        "last": scored[-1],
        "losses": final["losses"],
        "curve": scored,
    }
    storage.write_bytes_atomic(str(result_file), json.dumps(result, indent=1).encode())
    return result


def _by_defect(
    config: BenchmarkConfig,
    entry: SynthesizerEntry,
    result: dict,
    tests: RunTestSets,
) -> dict | None:
    """The metrics per defect type (each type's images plus every normal test image) of a
    finished run's last checkpoint, computed once and kept beside its result; None when the
    checkpoint is gone. Pixel metrics over the whole test set are dominated by the types with
    the largest defects: this says which kinds a synthesizer teaches."""
    run_dir = Path(config.out, "runs", f"{result['name']}-s{result['seed']}")
    kept = run_dir / "by_defect.json"
    if kept.is_file():
        return dict(json.loads(kept.read_text()))
    checkpoint = checkpoint_url(_detector_config(config, "unused", run_dir, result["seed"]))
    if not Path(checkpoint).is_file():
        return None
    scores = score_checkpoint(
        read_checkpoint(checkpoint), tests.of(entry, result["seed"]), by_defect=True
    )
    by_defect = {"epoch": scores.epoch, "defects": scores.by_defect}
    storage.write_bytes_atomic(str(kept), json.dumps(by_defect, indent=1).encode())
    return by_defect


def _finished(config: BenchmarkConfig, entry: SynthesizerEntry, seed: int) -> dict | None:
    result_file = Path(config.out, "runs", run_name(entry, seed), "result.json")
    return dict(json.loads(result_file.read_text())) if result_file.is_file() else None


def run_benchmark(
    config: BenchmarkConfig, *, only: list[str] | None = None, seeds: list[int] | None = None
) -> dict:
    """The (synthesizer, seed) runs asked for (all by default: ``only`` names synthesizers,
    ``seeds`` picks seeds of the config's), then the report over every run finished so far,
    this call's or an earlier one's (each run is kept in its own folder): so the benchmark can
    run a row at a time, in any order, on any machine sharing ``out``. Returns the summary,
    with ``missing``: the runs not in the table yet."""
    names = [entry.name for entry in config.synthesizers]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"no synthesizer named {unknown} in {config.name} (it has {names})")
    stray = sorted(set(seeds or []) - set(config.seeds))
    if stray:
        raise ValueError(f"seeds {stray} are not among the config's {config.seeds}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_target_split(load_target_spec(config.target), config.data_root)
    train = split.train[: config.train_limit] if config.train_limit else split.train
    inputs = out / "train-normals.txt"
    inputs.write_text("".join(f"{p.resolve()}\n" for p in train))
    tests = RunTestSets(config, split, str(inputs))
    test = tests.shared
    defects = [item.defect for item in test.items]
    examples = _pick_examples(test.masks, defects, config.examples)
    log.info(
        "target %s: %d training normals, %d test images (%d skipped)",
        split.name,
        len(train),
        len(test.items),
        len(split.skipped),
    )
    for seed in config.seeds:
        for entry in config.synthesizers:
            if (only is None or entry.name in only) and (seeds is None or seed in seeds):
                run_one(config, entry, seed, str(inputs), tests, examples)
    results, missing = [], []
    for seed in config.seeds:
        for entry in config.synthesizers:
            result = _finished(config, entry, seed)
            if result is None:
                missing.append(run_name(entry, seed))
            else:
                by_defect = _by_defect(config, entry, result, tests)
                results.append({**result, "by_defect": by_defect})
    if not results:
        raise ValueError(f"no finished run in {config.out} yet")
    fid = _fid_scores(config, tests) if config.fid and not missing else {}
    size = config.detector.image_size
    shown_images = test.thumbnails(test.stitch(test.targets, examples), size)
    shown_masks = test.thumbnails([test.masks[i].astype(np.float32) for i in examples], size)
    summary = write_report(
        config,
        results,
        fid=fid,
        examples=(
            np.rint(shown_images).astype(np.uint8),
            shown_masks > 0.5,
            [defects[i] for i in examples],
        ),
        target={
            **split.counts(),
            "name": split.name,
            "train": len(train),
            "skipped": split.skipped,
        },
    )
    return {**summary, "missing": missing}


def _fid_scores(config: BenchmarkConfig, tests: RunTestSets) -> dict[str, float]:
    """FID of each synthesizer's anomalies (first seed) against the real test defects (the
    test targets that show some, cut as its training data was)."""
    from cai_ray.detector.fid import fid_of, load_inception

    assert config.fid is not None
    model = load_inception(config.fid.weights)
    scores = {}
    for entry in config.synthesizers:
        test = tests.of(entry, config.seeds[0])
        real = test.targets[test.target_masks.any(axis=(1, 2))]
        fake = read_synth_images(
            synth_output(config, entry, config.seeds[0]),
            config.detector.image_size,
            config.detector.color,
            config.fid.samples,
        )
        scores[entry.name] = fid_of(model, fake, real)
    return scores
