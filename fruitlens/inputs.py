"""The input pipeline: images table -> decoded uint8 tensors -> seeded tf.data batches, and augmentation.

Decoding does what :func:`fruitlens.images.read_rgb` does for every file (same pixels), so training, evaluation,
prediction and explanation see exactly the same pixels whatever the file's mode (RGB, gray, CMYK, alpha,
16-bit). Measured on Fruits-360 (100x100 JPEG -> 20x20): PIL decode + resize takes 0.22 ms per image on one
core, tf.io.decode_jpeg + tf.image.resize in a parallel tf.data map 0.33 ms (and differs by up to 8/255 from
PIL's resize), so files are decoded once with PIL (on all cores for big sets) into one uint8 array, which is
the cache: in memory when it fits under ``memory_limit``, else a memory-mapped ``.npy`` file on disk. The
array is also kept on disk (keyed by the files' content hashes and the size) so a resumed run, an
evaluation or a second run on the same data skips decoding.

Batches come from an index pipeline: for epoch ``e`` the order is a stateless shuffle seeded by
``(seed, e)``, so a resumed run sees the same order an uninterrupted one would, and the pipeline costs a
gather and a cast per batch.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fruitlens.augment import AugmentConfig  # noqa: F401 - the augmenter's options, part of this API
from fruitlens.images import read_uint8
from fruitlens.lifetime import die_with_parent
from fruitlens.sizes import DEFAULT_MEMORY_LIMIT, as_size

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MIN_PARALLEL = 4000  # fewer files than this are decoded in the calling process


# ------------------------------------------------------------------------------------------- decoding


def _read_uint8(path: str, size: tuple[int, int]) -> np.ndarray:
    """``read_rgb(path, size)`` as uint8: the same open rule, EXIF orientation, reduced JPEG decode and resize."""
    return read_uint8(path, size)


def _decode_chunk(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    out = np.zeros((len(paths), size[0], size[1], 3), dtype=np.uint8)
    errors = [""] * len(paths)
    for i, path in enumerate(paths):
        try:
            out[i] = _read_uint8(path, size)
        except ValueError as exc:
            errors[i] = str(exc).replace("\n", " ")
    return out, errors


def decode_images(paths: Sequence[str | os.PathLike], image_size: int | Sequence[int], *,
                  workers: int | None = None, out: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode files to (N, H, W, 3) uint8 with ``read_rgb`` (same pixels as everywhere else in fruitlens).

    Args:
        paths: image files.
        image_size: (height, width) or one int.
        workers: processes (default: cores - 1, leaving one to the caller; one process below 4,000 files).
            Measured on 2 shared cores: 15,506 Fruits-360 files take 4.2 s in one process and 7.2 s on a
            2-process pool (start-up and imports cost more than the second core gives), hence the default.
        out: optional preallocated (N, H, W, 3) uint8 array (e.g. a memmap) to fill.

    Returns:
        (images, errors): errors[i] is "" or the one-line reason file i could not be read (its pixels
        are zero); one bad file never stops the run.
    """
    size = as_size(image_size)
    paths = [str(p) for p in paths]
    if out is None:
        out = np.zeros((len(paths), size[0], size[1], 3), dtype=np.uint8)
    workers = workers or max(1, (os.cpu_count() or 1) - 1)
    errors: list[str] = []
    if workers == 1 or len(paths) < MIN_PARALLEL:
        arr, errors = _decode_chunk(paths, size)
        out[:] = arr
        return out, errors
    chunk = max(256, -(-len(paths) // (workers * 4)))
    starts = list(range(0, len(paths), chunk))
    # forkserver: the caller has TensorFlow loaded, and forking a threaded process can deadlock.
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent) as pool:
        for start, (arr, errs) in zip(starts, pool.map(_decode_chunk, [paths[s:s + chunk] for s in starts],
                                                        [size] * len(starts)), strict=True):
            out[start:start + len(arr)] = arr
            errors.extend(errs)
    return out, errors


def cache_key(rows: pd.DataFrame, image_size: tuple[int, int]) -> str:
    """Digest of the files' contents (sha256 column, else paths) in row order, and the size."""
    h = hashlib.sha256(f"{image_size[0]}x{image_size[1]}".encode())
    column = "sha256" if "sha256" in rows and rows["sha256"].astype(bool).all() else "abs_path"
    h.update("\n".join(rows[column].astype(str)).encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class DecodedImages:
    """Decoded pixels of a set of rows: ``images`` (N, H, W, 3) uint8 (array or memmap), labels (N,) int32."""

    images: np.ndarray
    labels: np.ndarray
    errors: tuple[str, ...]
    location: str  # "memory" or the .npy path of a memory-mapped array

    def __len__(self) -> int:
        return len(self.labels)

    def floats(self) -> np.ndarray:
        """(N, H, W, 3) float32 in [0, 1] (a copy)."""
        return self.images.astype(np.float32) / 255.0


def load_images(rows: pd.DataFrame, image_size: int | Sequence[int], *, cache_dir: str | os.PathLike | None = None,
                memory_limit: int = DEFAULT_MEMORY_LIMIT, workers: int | None = None) -> DecodedImages:
    """Decode the rows' images once, caching them on disk under ``cache_dir`` (content-keyed).

    Args:
        rows: `images` table rows with ``abs_path`` (see ``DatasetIndex.paths``) and ``label_index``.
        image_size: (height, width) or one int.
        cache_dir: where decoded arrays are kept between calls (None: no disk cache).
        memory_limit: arrays bigger than this many bytes stay memory-mapped on disk (needs ``cache_dir``).
        workers: decode processes.
    """
    size = as_size(image_size)
    labels = rows["label_index"].to_numpy(dtype=np.int32) if "label_index" in rows else np.full(len(rows), -1,
                                                                                                  np.int32)
    nbytes = len(rows) * size[0] * size[1] * 3
    if cache_dir is None:
        images, errors = decode_images(rows["abs_path"], size, workers=workers)
        return DecodedImages(images, labels, tuple(errors), "memory")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = cache_key(rows, size)
    path = cache / f"pixels-{key}.npy"
    err_path = cache / f"pixels-{key}.errors.json"
    in_memory = nbytes <= memory_limit
    if path.is_file() and err_path.is_file():
        images = np.load(path, mmap_mode=None if in_memory else "r")
        errors = _read_errors(err_path, len(rows))
        if images.shape == (len(rows), *size, 3) and errors is not None:
            log.info("reusing decoded images %s", path)
            return DecodedImages(images, labels, tuple(errors), "memory" if in_memory else str(path))
    tmp = cache / f".pixels-{key}.{os.getpid()}.tmp.npy"
    if in_memory:
        images, errors = decode_images(rows["abs_path"], size, workers=workers)
        np.save(tmp, images)
    else:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *size, 3))
        _, errors = decode_images(rows["abs_path"], size, workers=workers, out=mm)
        mm.flush()
        del mm
    os.replace(tmp, path)
    from fruitlens.tables import write_json

    write_json(err_path, {"rows": len(rows), "errors": {str(i): e for i, e in enumerate(errors) if e}})
    if not in_memory:
        images = np.load(path, mmap_mode="r")
    return DecodedImages(images, labels, tuple(errors), "memory" if in_memory else str(path))


def _read_errors(err_path: Path, n: int) -> list[str] | None:
    """The per-row decode errors of a cache entry ("" where the image decoded); None when unusable."""
    import json

    try:
        meta = json.loads(err_path.read_text(encoding="utf-8"))
        if meta["rows"] != n:
            return None
        errors = [""] * n
        for i, e in meta["errors"].items():
            errors[int(i)] = str(e)
        return errors
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("ignoring the decode cache's error list %s: %s", err_path, exc)
        return None


# ------------------------------------------------------------------------------------------- tf.data


def epoch_order(n: int, seed: int, epoch: int):
    """The seeded order of ``n`` samples in ``epoch`` (a tf int64 tensor); stateless, so resumable."""
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                    seed=tf.stack([tf.cast(seed, tf.int64), epoch]))


def make_dataset(data: DecodedImages, batch_size: int = 32, *, shuffle: bool = False, seed: int = 0,
                 epochs: int = 1, initial_epoch: int = 0, augmenter=None, labels: bool = True):
    """A tf.data pipeline of ``(images, labels)`` batches: float32 [0, 1] (B, H, W, 3) and int32 (B,).

    With ``shuffle`` the dataset runs epochs ``initial_epoch .. epochs-1`` back to back, each in the order
    :func:`epoch_order` gives (use ``steps_per_epoch = ceil(N / batch_size)`` with ``model.fit``); without it,
    one pass in row order. ``augmenter`` (a Keras layer, see :func:`build_augmenter`) is applied to the
    image batches (training only).
    """
    import tensorflow as tf

    n = len(data)
    on_disk = data.location != "memory"
    if on_disk:
        source = data.images

        def gather_np(idx):
            order = np.argsort(idx)  # sorted reads from the memmap, then back to the batch order
            out = np.empty((len(idx), *source.shape[1:]), np.uint8)
            out[order] = source[idx[order]]
            return out

        def gather(idx):
            x = tf.numpy_function(gather_np, [idx], tf.uint8, stateful=False)
            return tf.ensure_shape(x, (None, *source.shape[1:]))
    else:
        pixels = tf.constant(np.asarray(data.images))

        def gather(idx):
            return tf.gather(pixels, idx)
    label_t = tf.constant(data.labels, dtype=tf.int32)

    if shuffle:
        ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
            lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, e)).batch(batch_size).enumerate().map(
                lambda step, idx: (idx, e, step)))
    else:
        ds = tf.data.Dataset.range(n).batch(batch_size).map(
            lambda idx: (idx, tf.constant(0, tf.int64), tf.constant(-1, tf.int64)))

    def to_batch(idx, epoch, step):
        x = tf.cast(gather(idx), tf.float32) / 255.0
        return x, tf.gather(label_t, idx), epoch, step

    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augmenter is not None:
        states = [v.value for v in augmenter.variables if v.path.endswith("seed_generator_state")]

        def augment(x, y, epoch, step):
            # The random layers draw from stateful generators: reset them at each epoch's first batch to a
            # function of (seed, epoch), so a run is repeatable and a resumed epoch gets the same noise.
            def reset():
                ops = [s.assign(tf.cast(tf.stack([seed * 1_000_003 + epoch, tf.constant(i, tf.int64)]), s.dtype))
                       for i, s in enumerate(states)]
                with tf.control_dependencies(ops):
                    return tf.identity(x)

            x = tf.cond(tf.equal(step, 0), reset, lambda: tf.identity(x))
            return augmenter(x, training=True), y, epoch, step

        ds = ds.map(augment)  # in order: the generators' draws must follow the batch order
    ds = ds.map(lambda x, y, epoch, step: (x, y) if labels else x)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------- augmentation


def build_augmenter(config: AugmentConfig | None = None, seed: int = 0):
    """A ``keras.Sequential`` of random layers (active only with ``training=True``); input/output [0, 1]."""
    import keras

    c = config or AugmentConfig()
    layers = []
    if c.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if c.rotation:
        layers.append(keras.layers.RandomRotation(c.rotation / 360.0, fill_mode=c.fill_mode, seed=seed + 1))
    if c.shift:
        layers.append(keras.layers.RandomTranslation(c.shift, c.shift, fill_mode=c.fill_mode, seed=seed + 2))
    if c.shear:
        layers.append(keras.layers.RandomShear(x_factor=c.shear, y_factor=0.0, fill_mode=c.fill_mode,
                                               seed=seed + 3))
    if c.zoom:
        layers.append(keras.layers.RandomZoom(c.zoom, c.zoom, fill_mode=c.fill_mode, seed=seed + 4))
    return keras.Sequential(layers, name="augment")


def augment_preview(images: np.ndarray, n: int = 20, *, config: AugmentConfig | None = None,
                    seed: int = 0) -> np.ndarray:
    """``n`` augmented versions of ``images`` (cycled): (n, H, W, 3) float32 in [0, 1]; same seed, same output."""
    aug = build_augmenter(config, seed)
    batch = np.asarray(images, dtype=np.float32)[np.arange(n) % len(images)]
    return np.clip(np.asarray(aug(batch, training=True)), 0.0, 1.0).astype(np.float32)
