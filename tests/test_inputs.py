"""The input pipeline: same pixels as read_rgb for every mode, caching, seeded resumable order, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitlens.images import read_rgb
from fruitlens.inputs import (
    AugmentConfig,
    DecodedImages,
    augment_preview,
    build_augmenter,
    decode_images,
    load_images,
    make_dataset,
)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """One file per awkward mode: RGB JPEG, gray PNG, CMYK JPEG, RGBA PNG, 16-bit PNG, palette GIF."""
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    paths = []
    Image.fromarray(rgb).save(d / "rgb.jpg", quality=90)
    Image.fromarray(rgb[..., 0]).save(d / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    rgba = np.dstack([rgb, rng.integers(0, 256, (37, 23), dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(d / "alpha.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(d / "deep.png")
    Image.fromarray(rgb).convert("P").save(d / "palette.gif")
    for name in ("rgb.jpg", "gray.png", "cmyk.jpg", "alpha.png", "deep.png", "palette.gif"):
        paths.append(d / name)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return paths, d / "broken.jpg"


@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_decode_matches_read_rgb_for_every_mode(odd_files, size):
    paths, _ = odd_files
    images, errors = decode_images(paths, size)
    assert images.dtype == np.uint8 and images.shape == (len(paths), *size, 3)
    assert errors == [""] * len(paths)
    expected = np.stack([read_rgb(p, size) for p in paths])
    np.testing.assert_array_equal(images.astype(np.float32) / 255.0, expected)


def test_bad_file_gets_an_error_and_does_not_stop(odd_files):
    paths, broken = odd_files
    images, errors = decode_images([paths[0], broken, paths[1]], 8)
    assert errors[0] == "" and errors[2] == ""
    assert "broken.jpg" in errors[1] and "\n" not in errors[1]
    assert images[1].max() == 0 and images[0].max() > 0


def test_decode_on_processes_equals_one_process(odd_files, monkeypatch):
    import fruitlens.inputs as inputs

    monkeypatch.setattr(inputs, "MIN_PARALLEL", 100)
    paths, _ = odd_files
    many = paths * 50  # 300 files > MIN_PARALLEL: the process pool path
    a, _ = decode_images(many, 8, workers=2)
    b, _ = decode_images(paths, 8, workers=1)
    np.testing.assert_array_equal(a, np.concatenate([b] * 50))


def _rows(paths):
    return pd.DataFrame({"abs_path": [str(p) for p in paths], "label_index": np.arange(len(paths)) % 2,
                         "sha256": [f"h{i}" for i in range(len(paths))]})


def test_disk_cache_is_reused_and_memory_mapped_when_large(odd_files, tmp_path, monkeypatch):
    paths, _ = odd_files
    broken = tmp_path / "src" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png")
    rows = _rows([*paths, broken])
    tmp_path = tmp_path / "cache"
    first = load_images(rows, 10, cache_dir=tmp_path)
    assert first.errors[-1] and not any(first.errors[:-1])
    assert first.location == "memory" and len(list(tmp_path.glob("pixels-*.npy"))) == 1
    import fruitlens.inputs as inputs

    calls = []
    monkeypatch.setattr(inputs, "decode_images", lambda *a, **k: calls.append(1))
    again = load_images(rows, 10, cache_dir=tmp_path)
    assert not calls
    np.testing.assert_array_equal(again.images, first.images)
    assert again.errors == first.errors
    (errors_file,) = tmp_path.glob("pixels-*.errors.json")  # only the rows that failed, no blank lines
    meta = json.loads(errors_file.read_text())
    assert meta["rows"] == len(rows) and all(meta["errors"].values())
    assert sorted(meta["errors"]) == sorted(str(i) for i, e in enumerate(first.errors) if e)
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir()) == ["errors.json", "npy"]
    mapped = load_images(rows, 10, cache_dir=tmp_path, memory_limit=10)
    assert mapped.location.endswith(".npy") and isinstance(mapped.images, np.memmap)
    batches = [x.numpy() for x, _ in make_dataset(mapped, 4, shuffle=True, seed=1)]
    ref = [x.numpy() for x, _ in make_dataset(first, 4, shuffle=True, seed=1)]
    for a, b in zip(batches, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def _data(n=10, size=4):
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, size, size, 3), np.uint8)
    return DecodedImages(images, np.arange(n, dtype=np.int32) % 3, ("",) * n, "memory")


def test_dataset_values_shapes_and_order():
    data = _data()
    batches = list(make_dataset(data, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype.name == "float32" and x.shape == (4, 4, 4, 3)
    np.testing.assert_allclose(x.numpy()[:, 0, 0, 0], np.arange(4) / 255.0)
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2, 0])


def test_shuffled_epochs_are_seeded_and_resumable():
    data = _data(10)

    def ids(ds):
        return [int(round(v * 255)) for x, _ in ds for v in x.numpy()[:, 0, 0, 0]]

    full = ids(make_dataset(data, 3, shuffle=True, seed=7, epochs=3))
    assert len(full) == 30
    epochs = [full[:10], full[10:20], full[20:]]
    assert all(sorted(e) == list(range(10)) for e in epochs)  # each epoch sees every sample once
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    assert full == ids(make_dataset(data, 3, shuffle=True, seed=7, epochs=3))  # same seed, same order
    assert ids(make_dataset(data, 3, shuffle=True, seed=7, epochs=3, initial_epoch=2)) == epochs[2]  # resume
    assert ids(make_dataset(data, 3, shuffle=True, seed=8, epochs=1)) != epochs[0]


def test_augmenter_train_only_changes_images_and_keeps_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 20, 24, 3)).astype(np.float32)
    before = x.copy()
    aug = build_augmenter(AugmentConfig(), seed=0)
    y = np.asarray(aug(x, training=True))
    np.testing.assert_array_equal(x, before)  # caller's array untouched
    assert y.shape == x.shape and not np.allclose(y, x)
    assert y.min() >= -1e-5 and y.max() <= 1 + 1e-5
    np.testing.assert_allclose(np.asarray(aug(x, training=False)), x)


def test_augment_preview_count_and_seed():
    x = np.random.default_rng(1).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    a = augment_preview(x, 20, seed=3)
    assert a.shape == (20, 16, 16, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_allclose(a, augment_preview(x, 20, seed=3))


def test_augment_config_rejects_bad_values():
    with pytest.raises(ValueError, match="fill_mode 'mirror'"):
        AugmentConfig(fill_mode="mirror")
    with pytest.raises(ValueError, match="rotation"):
        AugmentConfig(rotation=-1)


def test_augmented_epochs_are_repeatable_and_resumable():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    data = DecodedImages(images, np.zeros(6, np.int32), ("",) * 6, "memory")

    def run(initial_epoch=0):
        aug = build_augmenter(AugmentConfig(), seed=0)
        ds = make_dataset(data, 4, shuffle=True, seed=1, epochs=2, initial_epoch=initial_epoch, augmenter=aug)
        return [x.numpy() for x, _ in ds]

    full = run()
    assert len(full) == 4 and not np.allclose(full[0], full[2][: len(full[0])])
    for a, b in zip(full, run(), strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same augmented batches
    for a, b in zip(full[2:], run(initial_epoch=1), strict=True):
        np.testing.assert_array_equal(a, b)  # a resumed epoch gets the same noise
