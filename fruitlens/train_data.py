"""The data a training run fits on: indexed, split into train and validation (with the reason), decoded once.

``prepare_data`` is what :func:`fruitlens.training.train_model` reads its images with; ``holdout_record`` is the
card's ``config.validation`` (what was held out, why, which epoch is kept) and ``holdout_warning`` its one line
on an empty or tiny validation split.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fruitlens.config import TrainConfig

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainData:
    """Decoded training and validation images, the class names and the dataset index."""

    train: Any  # inputs.DecodedImages
    val: Any | None
    classes: tuple[str, ...]
    fingerprint: str
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    val_source: str = ""  # where the validation images came from (for the card and the report)
    both: Any = None  # train and val images together (what a refit trains on); None: train alone


# Fewer validation images than this (or than one per class) and the best epoch is picked on noise.
TINY_VAL = 20


def holdout_record(data: TrainData, config: TrainConfig) -> dict[str, Any]:
    """What was held out for validation, why, and which epoch is kept (the card's ``config.validation``)."""
    n_val = data.counts.get("val", 0)
    keep = "last" if config.keep == "last" or n_val == 0 else "best"
    tiny = 0 < n_val < max(TINY_VAL, len(data.classes))
    return {"held_out": n_val, "trained_on": data.counts.get("train", 0), "source": data.val_source,
            "val_fraction": config.val_fraction, "keep": keep,
            "why": ("picks the best epoch by " + config.monitor) if keep == "best" else
                   ("monitored only, the last epoch is kept (keep=last)" if n_val else "nothing held out"),
            "warning": holdout_warning(n_val, data.counts.get("train", 0), len(data.classes), config)
            if (n_val == 0 and config.val_fraction > 0) or tiny else ""}


def holdout_warning(n_val: int, n_train: int, num_classes: int, config: TrainConfig) -> str:
    """One line on an empty or tiny validation split ('' when there is nothing to say)."""
    if n_val == 0:
        return (f"the validation split is empty (val_fraction {config.val_fraction} of {n_train} training "
                f"images in {num_classes} classes rounds to 0 per class): no val_accuracy, the last epoch is "
                "kept; pass --val-split 0 to say so, or give the data a val split")
    return (f"the validation split has only {n_val} image(s) for {num_classes} classes (fewer than "
            f"{max(TINY_VAL, num_classes)}): its accuracy moves in steps of {1 / n_val:.0%} and the best epoch "
            "is picked on noise; consider --val-split 0 (keep the last epoch) or more data")


def prepare_data(data_dir: str | os.PathLike, run_dir: str | os.PathLike, config: TrainConfig,
                 workers: int | None = None) -> TrainData:
    """Index ``data_dir`` into ``run_dir/index``, pick train/val rows, decode them (cached in ``run_dir/cache``).

    Raises:
        DatasetError: the folder cannot be indexed. ValueError: fewer than 2 classes or no training image.
    """
    from fruitlens.dataset import index_or_load, split_validation
    from fruitlens.inputs import load_images

    start = time.perf_counter()
    run = Path(run_dir)
    index = index_or_load(data_dir, run / "index", classes=config.classes, seed=config.seed)
    classes = tuple(sorted(index.classes, key=index.classes.get))
    if len(classes) < 2:
        raise ValueError(f"{data_dir}: {len(classes)} usable class(es); expected at least 2 to train a classifier")
    usable = index.paths()
    usable = usable[usable["label_index"] >= 0]
    train_rows = usable[usable["split"] == "train"]
    val_rows = usable[usable["split"] == "val"]
    if len(train_rows) == 0:
        raise ValueError(f"{data_dir}: no usable training image (split 'train')")
    val_source = "the data's val split"
    if len(val_rows) == 0 and config.val_fraction > 0:
        train_rows, val_rows = split_validation(train_rows, config.val_fraction, config.seed)
        val_source = (f"{config.val_fraction:.0%} of the training images, stratified by class (val_fraction)"
                      if len(val_rows) else f"none: val_fraction {config.val_fraction} of the training images "
                      "rounds to 0 per class")
    elif len(val_rows) == 0:
        val_source = "none (val_fraction 0: every training image is trained on)"
    t_index = time.perf_counter() - start
    # one decode for train and val together: one process pool, one cache file
    both = pd.concat([train_rows, val_rows], ignore_index=True)
    decoded = load_images(both, config.size, cache_dir=run / "cache", memory_limit=config.memory_limit,
                          workers=workers)
    n = len(train_rows)
    train = _drop_unreadable(_slice(decoded, slice(0, n)), train_rows)
    val = _drop_unreadable(_slice(decoded, slice(n, None)), val_rows) if len(val_rows) else None
    if val is not None and len(val) == 0:
        val = None
    both = _drop_unreadable(decoded, both) if val is not None else None
    return TrainData(train=train, val=val, both=both, classes=classes, fingerprint=index.fingerprint,
                     counts={"train": len(train), "val": len(val) if val is not None else 0},
                     val_source=val_source,
                     timings={"index_seconds": t_index, "decode_seconds": time.perf_counter() - start - t_index})


def _slice(data, part: slice):
    from fruitlens.inputs import DecodedImages

    return DecodedImages(data.images[part], data.labels[part], data.errors[part], data.location)


def _drop_unreadable(data, rows: pd.DataFrame):
    from fruitlens.inputs import DecodedImages

    bad = np.array([bool(e) for e in data.errors])
    if not bad.any():
        return data
    for path, err in zip(rows["path"][bad], np.array(data.errors)[bad], strict=True):
        log.warning("skipping unreadable image %s: %s", path, err)
    keep = ~bad
    return DecodedImages(np.asarray(data.images[keep]), data.labels[keep], tuple(np.array(data.errors)[keep]),
                         "memory")


def class_weights_for(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """``balanced`` weights n / (C * n_c) for the classes present (absent classes get 1.0)."""
    counts = np.bincount(labels, minlength=num_classes)
    present = max(1, int((counts > 0).sum()))
    return {c: (len(labels) / (present * counts[c]) if counts[c] else 1.0) for c in range(num_classes)}
