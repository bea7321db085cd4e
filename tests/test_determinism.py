"""Determinism by construction: the same seed gives bit-identical models and training runs even while
another thread draws from every global random-number generator (Python, NumPy, Keras, TensorFlow)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fruitlens.augment import AugmentConfig  # noqa: E402
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.inputs import augment_preview, build_augmenter  # noqa: E402
from fruitlens.models import ARCHS, build_model, derive_seed, unseeded_parts  # noqa: E402
from fruitlens.training import train_model  # noqa: E402


@contextmanager
def hammering() -> Iterator[list[int]]:
    """A thread drawing from the global generators as fast as it can; yields its draw count (one item)."""
    stop = threading.Event()
    count = [0]

    def hammer() -> None:
        while not stop.is_set():
            random.random()
            np.random.random()
            keras.random.uniform((2,))
            tf.random.uniform((2,))
            count[0] += 1

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join(timeout=10)


def same_weights(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(3, 0) == derive_seed(3, 0)
    seeds = {derive_seed(3, i) for i in range(1000)} | {derive_seed(4, 0)}
    assert len(seeds) == 1001 and all(0 <= s < 2**31 for s in seeds)


@pytest.mark.parametrize("arch", [*ARCHS, "transfer:mobilenet_v2"])
def test_every_random_component_has_a_seed(arch):
    model = build_model(arch, 3, 32, weights="none", alpha=0.35, seed=7)
    assert unseeded_parts(model) == []
    assert unseeded_parts(build_model(arch, 3, 32, weights="none", alpha=0.35)) != []  # the check can fail


def test_augmenter_and_preview_are_seeded():
    assert unseeded_parts(build_augmenter(AugmentConfig(), seed=1)) == []
    x = np.random.default_rng(0).uniform(0, 1, (2, 12, 10, 3)).astype(np.float32)
    with hammering() as draws:
        a = augment_preview(x, 4, seed=5)
        random.seed(123)
        np.random.seed(123)
        b = augment_preview(x, 4, seed=5)
    assert draws[0] > 0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment_preview(x, 4, seed=6))


def test_transfer_backbone_weights_ignore_global_random_state():
    def build(seed):
        return build_model("transfer:mobilenet_v2", 2, 32, weights="none", mode="finetune", alpha=0.35,
                           seed=seed).get_weights()

    with hammering() as draws:
        a = build(11)
        b = build(11)
    assert draws[0] > 0
    assert same_weights(a, b)
    assert not same_weights(a, build(12))


def test_training_twice_under_a_hammering_thread_gives_identical_weights(demo_dir, tmp_path):
    """Dropout, augmentation, shuffling and initial weights all come from the config seed. The second run
    trains in a worker thread, as a Prefect task does."""
    config = TrainConfig(arch="seed_cnn", image_size=16, batch_size=16, epochs=2, seed=9, augment=True,
                         classes=("red_dot", "blue_dot", "cyan_ring"))

    def train(i: int):
        random.seed(i)  # different global states before each run must not matter
        np.random.seed(i)
        keras.utils.set_random_seed(1000 + i)
        train_model(demo_dir, tmp_path / f"run{i}", config)
        return keras.models.load_model(tmp_path / f"run{i}" / "model.keras", compile=False)

    with hammering() as draws:
        runs = [train(0)]
        with ThreadPoolExecutor(1) as pool:
            runs.append(pool.submit(train, 1).result())
    assert draws[0] > 0
    assert same_weights(runs[0].get_weights(), runs[1].get_weights())
    last = [keras.models.load_model(tmp_path / f"run{i}" / "checkpoints" / "last.keras") for i in range(2)]
    assert same_weights(last[0].get_weights(), last[1].get_weights())
    untrained = build_model(config.arch, 3, 16, seed=config.seed).get_weights()
    assert not same_weights(untrained, runs[0].get_weights())  # it did train
