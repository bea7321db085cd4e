"""Run folders: the model card that travels with a saved model, loading a run, batched prediction.

A run folder holds ``model.keras`` and ``model.json`` (the card). The model takes NHWC float32 RGB in
[0, 1] at ``card.image_size`` and does its own scaling inside, so every caller feeds it the same images.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from fruitlens.card import read_card
from fruitlens.errors import RunError
from fruitlens.layout import MODEL_FILE


def load_run(run_dir: str | os.PathLike):
    """Load ``(model, card)`` from a run folder (through :class:`fruitlens.modelio.ModelSource`).

    Raises:
        RunError: the folder has no ``model.keras`` or no readable ``model.json``, or the model cannot be loaded.
    """
    from fruitlens.modelio import ModelSource

    run = Path(run_dir)
    path = run / MODEL_FILE
    if not path.is_file():
        raise RunError(f"{path}: no saved model; expected a run folder written by `fruitlens train`")
    read_card(run)
    return ModelSource(str(run)).load()


def model_digest(run_dir: str | os.PathLike) -> str:
    """sha256 of the saved model file (a cache key for everything computed from the model)."""
    from fruitlens.modelfiles import file_sha256

    return file_sha256(Path(run_dir) / MODEL_FILE)


def as_predict_fn(model_or_fn):
    """A function (N, H, W, 3) -> (N, C) numpy for a Keras model or a plain function.

    A Keras model runs through its compiled predict step (``predict_on_batch``: traced once, inference mode,
    no per-call ``predict`` setup), faster than an eager ``model(x)`` on small convnets (benchmarks/README.md,
    "LIME": the model alone).
    """
    keras = sys.modules.get("keras")  # not loaded: cannot be a Keras model (and a plain function needs no TF)
    if keras is not None and isinstance(model_or_fn, keras.Model):
        return lambda batch: np.asarray(model_or_fn.predict_on_batch(batch))
    if not callable(model_or_fn):
        raise ValueError(f"model_or_fn of type {type(model_or_fn).__name__}: expected a Keras model or a function")
    return lambda batch: np.asarray(model_or_fn(batch))


def predict_batches(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run ``model`` on (N, H, W, 3) [0, 1] images in batches; returns (N, C) float32 (see ``as_predict_fn``)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images of shape {images.shape}: expected (N, H, W, 3)")
    predict = as_predict_fn(model)
    outs = [predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    if not outs:
        return np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)
