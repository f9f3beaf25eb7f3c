"""The preview sheet shows the variety of an output."""

from cai_ray.pipeline.preview import PreviewSample, pick_varied


def test_preview_prefers_new_targets_then_classes_then_scales():
    def candidate(target, anomaly_class, scale):
        return PreviewSample(target, anomaly_class, {}, {"scale": scale})

    pool = [
        candidate("a", "crack", "large"),
        candidate("a", "hole", "small"),
        candidate("b", "crack", "large"),
        candidate("b", "crack", "small"),
        candidate("b", "stain", "large"),
        candidate("c", "crack", "medium"),
    ]
    chosen = pick_varied(pool, 4)
    assert [(c.target, c.anomaly_class, c.meta["scale"]) for c in chosen] == [
        ("a", "crack", "large"),
        ("b", "stain", "large"),
        ("c", "crack", "medium"),
        ("a", "hole", "small"),
    ]
    assert pick_varied(pool, 10) == pick_varied(pool, 6) and len(pick_varied(pool, 10)) == 6
