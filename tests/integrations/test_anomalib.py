"""cai_ray.integrations.anomalib: the generator returns what anomalib's PerlinAnomalyGenerator
returns, deterministic by key, fresh without, and trains a real anomalib DRAEM in its place.
Runs only where the anomalib extra is installed (CI's second venv: pytest -m anomalib)."""

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.anomalib
torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("anomalib")

from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator  # noqa: E402

from cai_ray.integrations.anomalib import CAIAnomalyGenerator  # noqa: E402
from tests.conftest import DEMO, demo_tiles  # noqa: E402
from tests.docs import code_blocks, doc_section, run_python  # noqa: E402

SIZE = 128


def _tile(number: int = 0) -> np.ndarray:
    path = sorted((DEMO / "normal").glob("*.jpg"))[number]
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


def _image(number: int = 0) -> torch.Tensor:
    """A demo tile as anomalib gives it: float (3, H, W) in [0, 1], the grey channel three times."""
    return torch.from_numpy(_tile(number)).float().div(255).expand(3, SIZE, SIZE).clone()


def _batch() -> torch.Tensor:
    return torch.stack([_image(n) for n in range(4)])


@pytest.fixture
def cutpaste():
    return CAIAnomalyGenerator("cutpaste", probability=1.0, seed=0, anomalies_per_target=3)


@pytest.mark.parametrize("probability", [0.0, 1.0])
@pytest.mark.parametrize("batched", [False, True], ids=["image", "batch"])
def test_shapes_and_ranges_are_perlins(probability, batched):
    images = _batch() if batched else _image()
    ours = CAIAnomalyGenerator("cutpaste", probability=probability, seed=0)(images)
    perlin = PerlinAnomalyGenerator(probability=probability)(images)
    for mine, theirs in zip(ours, perlin, strict=True):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        assert mine.device == theirs.device
    image, mask = ours
    assert image.min() >= 0 and image.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    per_image = mask.reshape(mask.shape[0] if batched else 1, -1).amax(dim=1)
    if probability == 0:  # normal images: untouched, zero masks (Perlin's as well)
        assert torch.equal(image, images) and not mask.any() and not perlin[1].any()
    else:
        assert (per_image == 1).all() and not torch.equal(image, images)


def test_probability_is_per_image():
    generator = CAIAnomalyGenerator("cutpaste", probability=0.5, seed=0, anomalies_per_target=2)
    images = _image().expand(40, 3, SIZE, SIZE)
    _, masks = generator(images, keys=list(range(40)))
    anomalous = int((masks.reshape(40, -1).amax(dim=1) == 1).sum())
    assert 10 <= anomalous <= 30  # binomial(40, 0.5): outside this about once in 600


def test_keys_make_it_deterministic(cutpaste):
    images = _batch()
    first = cutpaste(images, keys=[10, 11, 12, 13])
    again = CAIAnomalyGenerator("cutpaste", probability=1.0, seed=0, anomalies_per_target=3)
    # a fresh generator, the images one at a time in the opposite order, keys as a tensor
    for n in reversed(range(4)):
        image, mask = again(images[n], keys=10 + n)
        assert torch.equal(image, first[0][n]) and torch.equal(mask, first[1][n])
    same = again(images, keys=torch.tensor([10, 11, 12, 13]))
    assert torch.equal(same[0], first[0]) and torch.equal(same[1], first[1])
    other = cutpaste(images, keys=["a", "b", "c", "d"])
    assert not torch.equal(other[1], first[1])
    reseeded = CAIAnomalyGenerator("cutpaste", probability=1.0, seed=1, anomalies_per_target=3)
    assert not torch.equal(reseeded(images, keys=[10, 11, 12, 13])[1], first[1])


def test_without_keys_each_call_is_fresh_and_torch_seeds_it(cutpaste):
    image = _image()
    torch.manual_seed(7)
    first = [cutpaste(image)[1] for _ in range(3)]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    torch.manual_seed(7)
    assert all(torch.equal(cutpaste(image)[1], mask) for mask in first)


def test_the_mask_is_where_the_image_changed(demo_daad):
    """CAI from the demo DAAD, published label rule: what visibly changed lies on the mask
    (within 3 px, as the synthesizers' contract has it), the mask's pixels changed, and every
    pixel the synthesizer left alone keeps its exact float input (inputs off the 1/255 grid
    show it)."""
    generator = CAIAnomalyGenerator(
        "cai", daad=demo_daad, probability=1.0, seed=0, cai={"label_rule": "published"}
    )
    offset = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.4 / 255
    images = (_batch() + offset).clamp(0, 1)
    made, masks = generator(images, keys=[0, 1, 2, 3])
    assert masks.sum() > 0
    for image, out, mask in zip(images, made, masks, strict=True):
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # still grey
        difference = ((out[0] - image[0]).abs() * 255).numpy()
        visible = cv2.medianBlur(((difference > 7) * 255).astype(np.uint8), 7) > 0
        label = mask[0].numpy().astype(np.uint8)
        near = cv2.dilate(label, np.ones((7, 7), np.uint8)) > 0
        assert (visible & ~near).sum() <= 0.01 * max(visible.sum(), 100)
        if label.any():
            assert (difference[label > 0] > 7).any()
        touched = out != image
        assert torch.equal(out[touched] * 255, (out[touched] * 255).round())


def test_colour_dtype_and_uint8(cutpaste):
    grey = _image()
    tinted = grey * torch.tensor([1.0, 0.8, 0.6])[:, None, None]
    image, _ = cutpaste(tinted, keys=1)
    assert not torch.equal(image[0], image[1])  # synthesized as RGB, channels kept apart
    one_channel, mask = cutpaste(grey[:1], keys=1)
    assert one_channel.shape == (1, SIZE, SIZE) and mask.any()
    as_grey, _ = cutpaste(grey, keys=1)
    assert torch.equal(as_grey[0], one_channel[0])  # three equal channels are grey
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out, mask = cutpaste(grey.to(dtype), keys=1)
        assert out.dtype == dtype and mask.dtype == torch.float32 and mask.any()
    pixels = torch.from_numpy(_tile()).expand(3, SIZE, SIZE).clone()
    out, mask = cutpaste(pixels, keys=1)
    assert out.dtype == torch.uint8 and torch.equal(mask, cutpaste(grey, keys=1)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_the_device_is_kept(cutpaste):
    image, mask = cutpaste(_image().cuda(), keys=1)
    assert image.is_cuda and mask.is_cuda


def test_bad_input_is_refused(cutpaste):
    never = CAIAnomalyGenerator("cutpaste", probability=0.0)
    for generator in (cutpaste, never):  # refused whether or not it would make an anomaly
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            generator(_image() * 2 - 1)  # an ImageNet-normalised image, say
    with pytest.raises(ValueError, match="float in"):
        cutpaste(_image().to(torch.int32))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        cutpaste(_image()[:2])
    with pytest.raises(ValueError, match="3 keys for a batch of 4"):
        cutpaste(_batch(), keys=[1, 2, 3])
    with pytest.raises(ValueError, match="probability"):
        CAIAnomalyGenerator("cutpaste", probability=1.5)
    with pytest.raises(ValueError, match="unknown synthesizer"):
        CAIAnomalyGenerator("perlin")


def test_samples_that_cannot_be_made_leave_the_image_normal_and_are_counted(demo_daad):
    """No label can reach a floor above the image's area: the image comes back as it was."""
    floor = {"min_mask_pixels": SIZE * SIZE + 1}
    generator = CAIAnomalyGenerator("cai", daad=demo_daad, probability=1.0, seed=0, cai=floor)
    image, mask = generator(_image(), keys=0)
    assert torch.equal(image, _image()) and not mask.any()
    assert sum(generator.failures.values()) == generator.synthesizer.anomalies_per_target


class Recording(CAIAnomalyGenerator):
    """The generator, keeping what it returned."""

    def forward(self, image, keys=None):
        made = super().forward(image, keys)
        self.returned.append(made)
        return made


@pytest.mark.slow
def test_one_real_draem_training_step(tmp_path, demo_daad):
    """anomalib's own Engine fits its DRAEM for one step on the demo tiles, with our generator
    in place of its Perlin one (one line), offline."""
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from anomalib.models import Draem
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms import v2

    demo_tiles(tmp_path / "normal", 4)
    (tmp_path / "no-dtd").mkdir()  # DRAEM downloads DTD where this folder is missing
    data = Folder(
        name="demo",
        root=tmp_path,
        normal_dir="normal",
        train_batch_size=4,
        num_workers=0,
        test_split_mode="none",
        val_split_mode="none",
    )
    model = Draem(
        dtd_dir=tmp_path / "no-dtd",
        pre_processor=PreProcessor(transform=v2.Resize((SIZE, SIZE))),
        evaluator=False,
        visualizer=False,
    )
    model.augmenter = Recording("cai", daad=demo_daad, probability=1.0, seed=0)
    model.augmenter.returned = []
    before = [p.detach().clone() for p in model.model.parameters()]
    engine = Engine(
        default_root_dir=tmp_path / "results",
        max_steps=1,
        accelerator="cpu",
        logger=False,
        limit_val_batches=0,
    )
    engine.fit(model=model, datamodule=data)
    assert model.trainer.global_step == 1
    [(images, masks)] = model.augmenter.returned
    assert images.shape == (4, 3, SIZE, SIZE) and masks.shape == (4, 1, SIZE, SIZE)
    assert masks.any()
    after = list(model.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.slow
def test_the_docs_recipe_runs(tmp_path):
    recipe = code_blocks(doc_section("docs/API.md", "anomalib:"), "python")[0]
    assert "CAIAnomalyGenerator" in run_python(recipe, tmp_path, timeout=600)
