"""Bottleneck training's features: a backbone's pooled features computed once, cached, and fed to the head."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fruitlens import tables


def bottleneck_features(full_model, data, cache_dir: Path, key: str, batch_size: int = 64) -> np.ndarray:
    """Pooled backbone features (N, D) of ``data``, computed once and cached as ``.npy``."""
    from fruitlens.inputs import make_dataset
    from fruitlens.runs import predict_batches

    path = cache_dir / f"features-{key}.npy"
    if path.is_file():
        feats = np.load(path)
        if len(feats) == len(data):
            return feats
    from fruitlens.models import features_model

    fm = features_model(full_model)
    parts = [predict_batches(fm, x.numpy(), batch_size) for x in make_dataset(data, 256, labels=False)]
    feats = np.concatenate(parts) if parts else np.zeros((0, int(fm.output_shape[-1])), np.float32)
    with tables.atomic_path(path) as tmp:
        np.save(tmp, feats)
    return feats


def features_dataset(feats: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int,
                     epochs: int = 1, initial_epoch: int = 0):
    """A tf.data dataset of (features, label) batches, in each epoch's stateless order when shuffled."""
    import tensorflow as tf

    from fruitlens.inputs import epoch_order

    x, y, n = tf.constant(feats), tf.constant(labels, tf.int32), len(labels)
    if shuffle:
        ds = tf.data.Dataset.range(initial_epoch, epochs).flat_map(
            lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, e)).batch(batch_size))
    else:
        ds = tf.data.Dataset.range(n).batch(batch_size)
    return ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(tf.data.AUTOTUNE)


def weights_tag(config) -> str:
    """A digest of what decides a backbone's features: arch, alpha, seed, size and the weights (file bytes)."""
    import hashlib

    h = hashlib.sha256(f"{config.arch}|{config.alpha}|{config.seed}|{config.size}".encode())
    for w in str(config.weights).split(","):
        p = Path(w)
        h.update(p.read_bytes() if p.is_file() else w.encode())
    return h.hexdigest()[:16]


def cache_key_of(data) -> str:
    """A digest of decoded pixels (for naming feature caches)."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(data.images).data)
    h.update(np.ascontiguousarray(data.labels).data)
    return h.hexdigest()[:16]
