"""The training loop on real synthesis output (the bundled sample), tiny network, CPU."""

import io
import pickle
from functools import partial
from pathlib import Path

import pytest
import torch

from cai_ray.detector.train import DetectorConfig, epoch_batches, train_detector
from cai_ray.io.stream import list_shards
from cai_ray.pipeline.synth import run_synth

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def synth_output(tmp_path_factory, demo_daad):
    from cai_ray.config import SynthConfig
    from tests.conftest import DEMO

    out = tmp_path_factory.mktemp("train") / "out"
    config = SynthConfig.model_validate(
        {
            "inputs": {"paths": [str(DEMO / "normal")], "limit": 4},
            "daad": {"path": demo_daad},
            "cai": {"quotas": {"large": 2, "medium": 1, "small": 1}},
            "output": {
                "path": str(out),
                "include_normal": True,
                "preview_samples": 0,
                "targets_per_shard": 1,
            },
            "resources": {"cpus_per_injection_actor": 0.5},
        }
    )
    run_synth(config, show_progress=False)
    return str(out)


def _config(synth_output, checkpoints, epochs):
    return DetectorConfig(
        data=[synth_output],
        checkpoint_dir=str(checkpoints),
        image_size=32,
        base_width=4,
        levels=3,
        epochs=epochs,
        batch_size=4,
        learning_rate=1e-2,
    )


def _seen(shards, config, epoch, rank=0, world_size=1):
    keys = []
    for images, masks in epoch_batches(shards, config, epoch, rank=rank, world_size=world_size):
        assert images.dtype == torch.float32 and images.shape[1:] == (1, 32, 32)
        assert masks.shape == (len(images), 32, 32) and set(masks.unique().tolist()) <= {0, 1}
        keys += [image.numpy().tobytes() for image in images]
    return keys


def test_streaming_visits_every_sample_once_per_epoch(synth_output, tmp_path):
    shards = list_shards([synth_output])
    total = sum(s.samples for s in shards)
    assert len(shards) == 4 and total > 12
    for buffer in (1, 3, 1024):
        config = _config(synth_output, tmp_path, 1).model_copy(
            update={"batch_size": 1, "shuffle_buffer": buffer}
        )
        first = _seen(shards, config, 0)
        assert len(first) == total and len(set(first)) == total
        assert _seen(shards, config, 0) == first  # a pure function of (seed, epoch)
        assert _seen(shards, config, 1) != first and set(_seen(shards, config, 1)) == set(first)


def test_decode_threads_change_no_batch(synth_output, tmp_path):
    shards = list_shards([synth_output])
    config = _config(synth_output, tmp_path, 1).model_copy(update={"shuffle_buffer": 5})
    one = _seen(shards, config.model_copy(update={"decode_workers": 1}), 0)
    assert one == _seen(shards, config.model_copy(update={"decode_workers": 3}), 0)


def test_data_parallel_ranks_stream_disjoint_shards_in_equal_steps(synth_output, tmp_path):
    shards = list_shards([synth_output])
    config = _config(synth_output, tmp_path, 1).model_copy(update={"batch_size": 2})
    rank0, rank1 = (_seen(shards, config, 0, rank, 2) for rank in (0, 1))
    assert len(rank0) == len(rank1) > 0 and not set(rank0) & set(rank1)
    with pytest.raises(ValueError, match="smaller than 4 workers"):
        next(epoch_batches(shards, config, 0, rank=0, world_size=4))


def test_training_learns_and_resumes_to_the_same_weights(synth_output, tmp_path, monkeypatch):
    straight = train_detector(_config(synth_output, tmp_path / "straight", 4))
    assert len(straight["losses"]) == 4 and straight["losses"][-1] < straight["losses"][0]

    from cai_ray.detector import train

    real_write = train.storage.write_bytes_atomic
    writes = []

    def crash_after_two_checkpoints(url, data):
        if len(writes) == 2:
            raise KeyboardInterrupt("killed")
        writes.append(url)
        real_write(url, data)

    monkeypatch.setattr(train.storage, "write_bytes_atomic", crash_after_two_checkpoints)
    with pytest.raises(KeyboardInterrupt):
        train_detector(_config(synth_output, tmp_path / "resumed", 4))
    monkeypatch.undo()
    resumed = train_detector(_config(synth_output, tmp_path / "resumed", 4))
    assert resumed["losses"] == pytest.approx(straight["losses"])
    for name, weights in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], weights)


def test_extending_a_run_follows_the_new_epoch_counts_schedule(synth_output, tmp_path):
    """DRAEM's steps (x0.2 at 80% and 90% of the epochs) follow the epochs asked for now: a
    2-epoch run decays at epoch 1; extended to 10 epochs it runs at the full rate again until
    epoch 8. The optimiser's rate after each epoch is the one that epoch trained with."""
    rates = []

    def record(state):
        rates.append(state["optimiser"]["param_groups"][0]["lr"])

    config = _config(synth_output, tmp_path / "ext", 2)
    train_detector(config, on_epoch=record)
    train_detector(config.model_copy(update={"epochs": 10}), on_epoch=record)
    full = config.learning_rate
    expected = [full, full * 0.04] + [full] * 6 + [full * 0.2, full * 0.04]
    assert rates == pytest.approx(expected)


def test_a_checkpoint_of_another_config_is_refused(synth_output, tmp_path):
    train_detector(_config(synth_output, tmp_path / "c", 1))
    other = _config(synth_output, tmp_path / "c", 2).model_copy(update={"base_width": 8})
    with pytest.raises(ValueError, match="another config"):
        train_detector(other)


def _one_process_two_halves(config: DetectorConfig) -> dict:
    """What two data-parallel workers must compute, in one process: every step, each rank's
    half of the global batch through the network (BatchNorm statistics per half, as each DDP
    worker has), the two losses averaged (DDP averages the gradients), one Adam step."""
    from cai_ray.detector.model import DiscriminativeUNet, focal_loss
    from cai_ray.detector.train import learning_rate_at

    torch.manual_seed(config.seed)
    network = DiscriminativeUNet(1, 2, config.base_width, config.levels)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    shards = list_shards(config.data)
    for epoch in range(config.epochs):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate_at(epoch, config)
        network.train()
        halves = zip(
            epoch_batches(shards, config, epoch, rank=0, world_size=2),
            epoch_batches(shards, config, epoch, rank=1, world_size=2),
            strict=True,
        )
        for (images0, masks0), (images1, masks1) in halves:
            loss = (focal_loss(network(images0), masks0) + focal_loss(network(images1), masks1)) / 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return {
        name: p.detach()
        for name, p in network.named_parameters()
        if name not in _biases_before_batch_norm(network)
    }


def _biases_before_batch_norm(network: torch.nn.Module) -> set[str]:
    """Biases of convolutions that feed a BatchNorm: it subtracts the batch mean, so their true
    gradient is zero and Adam turns float noise into full steps of either sign; not compared."""
    names = set()
    for prefix, module in network.named_modules():
        children = list(module.named_children())
        for (name, layer), (_, following) in zip(children, children[1:], strict=False):
            if isinstance(layer, torch.nn.Conv2d) and isinstance(following, torch.nn.BatchNorm2d):
                names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names


def test_ray_train_on_two_workers_averages_their_gradients(synth_output, tmp_path):
    """Two Ray Train workers give the weights of one process that sees both halves of every
    global batch (to float noise): workers that did not average their gradients would not."""
    from cai_ray.detector.train import checkpoint_url, read_checkpoint
    from cai_ray.train.runner import train_on_ray

    # one epoch, 5 steps: past that, the cancelled biases' float noise (through BatchNorm's
    # rounding) grows chaotically under Adam at this rate; learning is tested above
    config = _config(synth_output, tmp_path / "ray", 1)
    train_on_ray(train_detector, config, num_workers=2)
    state = read_checkpoint(checkpoint_url(config))
    assert state["epoch"] == 1 and len(state["losses"]) == 1
    expected = _one_process_two_halves(config)
    assert len(expected) >= 20  # every weight but the few biases BatchNorm cancels
    single = train_detector(_config(synth_output, tmp_path / "single", 1))

    def distance(model: dict) -> float:
        return float(sum(((model[k] - v) ** 2).sum() for k, v in expected.items()) ** 0.5)

    # Float noise only: a weight whose gradient is nearly zero takes Adam steps of noise (up to
    # 3e-4 on a few of thousands of weights), while a process that sees half of each batch
    # ends about 1e-3 away on nearly every weight: compare the distances over all weights.
    assert distance(state["model"]) < 0.1 * distance(single["model"])
    assert any(not torch.allclose(single["model"][k], v, atol=1e-3) for k, v in expected.items())


def _batches_seen(batches) -> list[list[bytes]]:
    return [[image.numpy().tobytes() for image in images] for images, _ in batches]


def test_ray_data_ingest_reads_every_sample_once_per_epoch(synth_output, tmp_path):
    """One process iterating the Ray Data dataset: each epoch every sample exactly once (the
    stream path's samples, decoded alike), in full batches but for the last, the order a
    function of (seed, epoch)."""
    from cai_ray.detector.train import dataset_batches, training_dataset

    config = _config(synth_output, tmp_path, 1).model_copy(
        update={"batch_size": 3, "shuffle_buffer": 5, "ingest": "ray_data"}
    )
    every = set(_seen(list_shards([synth_output]), config.model_copy(update={"batch_size": 1}), 0))
    dataset = training_dataset(config)
    first = _batches_seen(dataset_batches(dataset, config, 0))
    flat = [key for batch in first for key in batch]
    assert sorted(flat) == sorted(every) and len(flat) == len(every)
    assert [len(batch) for batch in first[:-1]] == [3] * (len(first) - 1)
    assert 0 < len(first[-1]) <= 3
    assert _batches_seen(dataset_batches(dataset, config, 0)) == first
    second = [key for batch in _batches_seen(dataset_batches(dataset, config, 1)) for key in batch]
    assert second != flat and sorted(second) == sorted(flat)


def test_ray_data_ingest_names_a_shard_whose_entry_miscounts(synth_output):
    from cai_ray.detector.train import network_sample
    from cai_ray.io.stream import ShardRef
    from cai_ray.train.data import shard_dataset

    shard = list_shards([synth_output])[0]
    wrong = ShardRef(shard.url, shard.samples + 1)
    decode = partial(network_sample, size=8, mode="grey")
    with pytest.raises(Exception, match=f"{shard.url} holds {shard.samples} usable samples"):
        shard_dataset([wrong], decode, ("image", "mask")).take_all()


def _record_keys(config, device, *, rank, world_size, data, prepare, on_epoch):
    """A Ray Train loop that only writes down which samples its worker got, per epoch."""
    from cai_ray.detector.train import dataset_batches

    for epoch in range(config.epochs):
        batches = dataset_batches(data, config, epoch, rank=rank, world_size=world_size)
        keys = [key for batch in _batches_seen(batches) for key in batch]
        out = Path(config.checkpoint_dir) / f"epoch{epoch}_rank{rank}.pkl"
        out.write_bytes(pickle.dumps(keys))
    return {}


def test_ray_train_workers_split_every_epoch_between_them(synth_output, tmp_path):
    """Two Ray Train workers reading their dataset shards: each epoch, every sample goes to one
    worker only, both get as many, and none is left out but the odd one an equal split
    drops. A second run gives each worker the same samples in the same order."""
    from cai_ray.detector.train import training_dataset
    from cai_ray.train.runner import train_on_ray

    config = _config(synth_output, tmp_path, 2).model_copy(
        update={"batch_size": 2, "shuffle_buffer": 5, "ingest": "ray_data"}
    )
    every = set(_seen(list_shards([synth_output]), config.model_copy(update={"batch_size": 1}), 0))
    runs = []
    for run in ("first", "second"):
        out = tmp_path / run
        out.mkdir()
        train_on_ray(
            _record_keys,
            config.model_copy(update={"checkpoint_dir": str(out)}),
            num_workers=2,
            dataset=training_dataset(config),
            cpus_per_worker=0.5,
        )
        runs.append(
            [
                [pickle.loads((out / f"epoch{epoch}_rank{r}.pkl").read_bytes()) for r in (0, 1)]
                for epoch in range(2)
            ]
        )
    for ranks in runs[0]:
        assert len(ranks[0]) == len(ranks[1]) > 0
        seen = ranks[0] + ranks[1]
        assert len(set(seen)) == len(seen) and set(seen) <= every
        assert len(every) - len(seen) == len(every) % 2
    assert runs[0][0] != runs[0][1]  # another epoch, another order
    assert runs[1] == runs[0]


def test_ray_data_ingest_trains_here_and_on_ray_train(synth_output, tmp_path):
    """The detector trains on the ray_data path in one process (no Ray Train) and on two Ray
    Train workers; on several workers without the dataset it says what to pass."""
    from cai_ray.detector.train import checkpoint_url, read_checkpoint, training_dataset
    from cai_ray.train.runner import train_on_ray

    here = _config(synth_output, tmp_path / "here", 3).model_copy(update={"ingest": "ray_data"})
    state = train_detector(here)
    assert state["config"]["ingest"] == "ray_data" and len(state["losses"]) == 3
    assert state["losses"][-1] < state["losses"][0]

    config = _config(synth_output, tmp_path / "ray", 1).model_copy(update={"ingest": "ray_data"})
    with pytest.raises(ValueError, match="dataset shards"):
        train_detector(config, rank=0, world_size=2)
    train_on_ray(
        train_detector,
        config,
        num_workers=2,
        dataset=training_dataset(config),
        cpus_per_worker=0.5,
    )
    assert read_checkpoint(checkpoint_url(config))["epoch"] == 1


def test_a_checkpoint_from_before_the_ingest_setting_resumes(synth_output, tmp_path):
    """A checkpoint whose config has no ``ingest`` (written before it existed) streamed: it
    resumes with the default to the weights a checkpoint of today gives, and is refused for
    ray_data."""
    from cai_ray.detector.train import checkpoint_url, read_checkpoint

    today = _config(synth_output, tmp_path / "today", 1)
    train_detector(today)
    straight = train_detector(today.model_copy(update={"epochs": 2}))
    config = _config(synth_output, tmp_path / "old", 1)
    train_detector(config)
    state = read_checkpoint(checkpoint_url(config))
    del state["config"]["ingest"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    Path(checkpoint_url(config)).write_bytes(buffer.getvalue())

    with pytest.raises(ValueError, match="another config"):
        train_detector(config.model_copy(update={"epochs": 2, "ingest": "ray_data"}))
    resumed = train_detector(config.model_copy(update={"epochs": 2}))
    assert resumed["losses"] == straight["losses"]
    for name, weights in straight["model"].items():
        assert torch.equal(resumed["model"][name], weights)


def test_ray_data_ingest_reads_shards_on_s3(synth_output, s3_bucket, tmp_path):
    """The Ray Data tasks read s3:// shards with the driver's storage settings: the samples of
    the same output copied to the store."""
    from cai_ray.detector.train import dataset_batches, training_dataset
    from cai_ray.io import storage

    for path in Path(synth_output).rglob("*"):
        if path.is_file():
            url = f"{s3_bucket}/out/{path.relative_to(synth_output)}"
            storage.write_bytes_atomic(url, path.read_bytes())
    local = _config(synth_output, tmp_path, 1).model_copy(update={"ingest": "ray_data"})
    remote = local.model_copy(update={"data": [f"{s3_bucket}/out"]})

    def keys(config):
        return sorted(_batches_seen_flat(dataset_batches(training_dataset(config), config, 0)))

    assert keys(remote) == keys(local) and len(keys(local)) > 12


def _batches_seen_flat(batches) -> list[bytes]:
    return [key for batch in _batches_seen(batches) for key in batch]
