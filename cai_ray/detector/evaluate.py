"""Scoring a trained detector on a target's test set: anomaly maps from a checkpoint, then the
metrics of :mod:`cai_ray.detector.metrics`. ``cai-ray detector eval``
(:func:`evaluate_checkpoint`) and the benchmark (:func:`score_checkpoint` on its own test sets)
score alike through here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cai_ray.detector.metrics import evaluate
from cai_ray.detector.model import DiscriminativeUNet, anomaly_map
from cai_ray.detector.target_splits import TargetSplit
from cai_ray.detector.targets import TestSet, load_test_set, training_cut
from cai_ray.detector.train import read_checkpoint


def default_device() -> str:
    """Where scoring runs: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def network_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> DiscriminativeUNet:
    config = state["config"]
    channels = 3 if config["color"] == "rgb" else 1
    network = DiscriminativeUNet(channels, 2, config["base_width"], config["levels"])
    network.load_state_dict(state["model"])
    return network.to(device).eval()


@torch.no_grad()
def predict_maps(
    network: torch.nn.Module,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Anomaly maps (N, S, S) float32 in [0, 1] for uint8 images (N, S, S[, 3])."""
    was_training = network.training
    network.eval()
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch = batch[..., None] if batch.ndim == 3 else batch
        tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
        maps.append(anomaly_map(network(tensor.to(device).float() / 255)).cpu().numpy())
    network.train(was_training)
    return np.concatenate(maps).astype(np.float32)


def evaluate_network(
    network: torch.nn.Module, test: TestSet, *, device: str | torch.device = "cpu"
) -> tuple[dict[str, float], list[np.ndarray]]:
    """The benchmark's metrics on one test set, and the per-image maps they were computed from
    (the targets' maps stitched back where the test images were cut into several)."""
    maps = test.stitch(predict_maps(network, test.targets, device=device))
    return evaluate(maps, test.masks), maps


def evaluate_by_defect(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    defects: list[str],
    normal: str = "good",
) -> dict[str, dict[str, float]]:
    """The metrics per defect type, each on that type's images plus every normal test image:
    shows which kinds of real defect a synthesizer teaches (pixel metrics over the whole test
    set are dominated by the types with the largest defects)."""
    by_kind = {}
    for kind in sorted(set(defects) - {normal}):
        chosen = [i for i, defect in enumerate(defects) if defect in (kind, normal)]
        by_kind[kind] = evaluate([maps[i] for i in chosen], [masks[i] for i in chosen])
    return by_kind


@dataclass(frozen=True)
class CheckpointScores:
    """A checkpoint's scores on one test set: the metrics, the per-image maps they were
    computed from, and, when asked for, the metrics per defect type."""

    epoch: int
    metrics: dict[str, float]
    maps: list[np.ndarray]
    by_defect: dict[str, dict[str, float]] | None = None


def score_checkpoint(
    state: dict,
    test: TestSet,
    *,
    device: str | torch.device | None = None,
    by_defect: bool = False,
) -> CheckpointScores:
    """The scores of the detector in ``state`` (a checkpoint dict) on ``test``."""
    device = device or default_device()
    metrics, maps = evaluate_network(network_from_checkpoint(state, device), test, device=device)
    defects = [item.defect for item in test.items]
    per_defect = evaluate_by_defect(maps, test.masks, defects) if by_defect else None
    return CheckpointScores(int(state["epoch"]), metrics, maps, per_defect)


def evaluate_checkpoint(
    url: str, split: TargetSplit, *, device: str | torch.device | None = None
) -> dict[str, Any]:
    """The report of ``cai-ray detector eval``: the checkpoint at ``url`` scored on the test
    images of ``split``, cut as its training data was (read from the synthesis jobs it was
    trained on), overall and per defect type. Unusable test images are added to
    ``split.skipped``."""
    state = read_checkpoint(url)
    trained = state["config"]
    geometry, data_size = training_cut(trained["data"])
    test = load_test_set(
        split, trained["image_size"], trained["color"], geometry, data_size=data_size
    )
    scores = score_checkpoint(state, test, device=device, by_defect=True)
    return {
        "epoch": scores.epoch,
        "test_images": len(test.items),
        "geometry": geometry.scoring().mode,
        "view_size": test.view_size,
        **scores.metrics,
        "by_defect": scores.by_defect,
    }
