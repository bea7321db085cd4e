"""Training: fit an architecture on a dataset folder with per-epoch checkpoints, resume, history and a card.

``train_model(data_dir, run_dir, config)`` indexes the data into ``run_dir/index``, decodes the images once
(see :mod:`fruitlens.inputs`), and fits. After every epoch it writes, each atomically (temp file +
``os.replace``): ``checkpoints/best.keras`` when the monitored validation metric improved,
``checkpoints/last.keras`` (with optimizer state) and then ``checkpoints/state.json`` (epochs done, history
rows, best value, early-stopping counters, dropout RNG states, classes, dataset fingerprint). ``resume=True``
loads ``last.keras`` and continues at the next epoch; it refuses, in one line, a checkpoint made with another
configuration (checked before any data is read), other classes or another dataset (fingerprint). Temp files
a killed checkpoint write left behind are removed at the start of every run.

Each epoch's sample order is a stateless function of (seed, epoch), augmentation generators are reseeded
from (seed, epoch) at each epoch's first batch, the initial weights and dropout seeds are derived from the
seed alone (``models.with_seeds``; no global random state), and the dropout generators' states (which
Keras does not save with a model) are restored, so a resumed run retraces the uninterrupted one exactly,
even in another process (tests and the benchmark check the histories are equal). At the end it writes
``model.keras`` (the best epoch's weights, no optimizer), ``model.json``, ``history.parquet`` and
``curves.png``.

``refit=True``: once the run with its holdout is done, a fresh model (same seed, same recipe) is trained on
the training and validation images together for as many epochs as the kept epoch (``REFIT_DIR/checkpoints``,
no validation), and that model is saved as ``model.keras``; the card's ``config.trained`` says what the saved
model was trained on (images, epochs, refit or not), ``config.validation`` what picked the epoch. A refit
killed half-way is redone from its start by ``resume=True`` (it is deterministic, so the result is the same).

``mode="bottleneck"`` (transfer architectures): the backbones run once over the training and validation
images, the pooled features are cached in ``run_dir/cache``, the head is trained on them (checkpoints are
the head's), and the saved model is the whole thing: backbones + head, taking [0, 1] images.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.augment import AugmentConfig
from fruitlens.checkpoints import (
    STATE_FILE,
    make_checkpointer,
    make_early_stopping,
    resumable_state,
    seed_variables,
)

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
REFIT_DIR = "refit"  # the refit's own checkpoints, under the run folder
# Keys that may change between a killed run and its resumption.
RESUMABLE_CHANGES = {"epochs", "early_stopping", "tensorboard", "memory_limit", "refit"}


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed: it belongs to other data or another configuration."""


# TrainConfig lives with every other option in fruitlens.config; the data with fruitlens.train_data.
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.train_data import TrainData, class_weights_for, holdout_record, prepare_data  # noqa: E402

# -------------------------------------------------------------------------------------------- training


_RESUME_HINT = "train into a new --out or without --resume"


def _check_same_config(saved: dict, config: TrainConfig) -> None:
    """Refuse (one-line ValueError) to resume a checkpoint made with another config (arch, size, seed, ...)."""
    # options added since the checkpoint was written count as their defaults
    before, now = {**TrainConfig().to_dict(), **saved["config"]}, config.to_dict()
    changed = sorted(k for k in set(before) | set(now) if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ResumeError(f"cannot resume: the configuration changed ({detail}); {_RESUME_HINT}")


def _check_same_data(saved: dict, data: TrainData) -> None:
    """Refuse (one-line ValueError) to resume a checkpoint made on other classes or another dataset."""
    hint = _RESUME_HINT
    if list(saved["classes"]) != list(data.classes):
        raise ResumeError(f"cannot resume: the classes changed ({', '.join(saved['classes'])} -> "
                         f"{', '.join(data.classes)}); {hint}")
    # checkpoints written before the fingerprint was recorded are let through (nothing to compare)
    if saved.get("fingerprint") not in (None, data.fingerprint):
        raise ResumeError(f"cannot resume: the dataset changed (fingerprint {saved['fingerprint'][:16]} -> "
                         f"{data.fingerprint[:16]}: files added, removed or edited); {hint}")


def remove_leftover_temp_files(ckpt_dir: Path) -> list[Path]:
    """Delete temp files a killed checkpoint write left in ``ckpt_dir`` (``.best.*.tmp.keras`` ...)."""
    return tables.remove_temp_files(ckpt_dir)


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote and how it went.

    Attributes:
        model_path, card_path, history_path, curves_path: the files written into the run folder.
        epochs: epochs in the history; resumed_from: epochs already done when it started (0: a fresh run).
        stopped_early: early stopping ended it; best_epoch: the epoch whose weights were saved.
        metrics: the card's metrics at the best epoch; counts: images per split; classes: in output order.
        validation: what was held out for validation, why, and which epoch was kept (``holdout_record`` plus
            ``kept_epoch``; the card's ``config.validation``).
        trained: what the saved model was trained on: images, epochs, refit or not (``trained_record``; the
            card's ``config.trained``).
        seconds: the whole call; timings: indexing/decoding phases, fit_seconds and other_seconds.
    """

    model_path: str
    card_path: str
    history_path: str
    curves_path: str
    epochs: int
    resumed_from: int
    stopped_early: bool
    best_epoch: int
    metrics: dict[str, float]
    counts: dict[str, int]
    classes: tuple[str, ...]
    validation: dict[str, Any]
    trained: dict[str, Any]
    seconds: float
    timings: dict[str, float]


@dataclass
class _Trainee:
    """The model being fitted and its inputs (``full``: the whole model of a bottleneck run, whose head is fitted)."""

    model: Any
    train: Any
    val: Any
    full: Any = None
    augmenter: Any = None
    recipe: Any = None  # fruitlens.recipes' resolved recipe (None: a bottleneck run)


def train_model(data_dir: str | os.PathLike, run_dir: str | os.PathLike, config: TrainConfig | None = None, *,
                resume: bool = False, verbose: int = 0, callbacks: Sequence = (), workers: int | None = None
                ) -> TrainResult:
    """Train ``config.arch`` on ``data_dir`` into ``run_dir`` (see the module docstring for what is written).

    Five steps: checks (before any data is read), build (the model and its datasets, or the checkpoint's),
    callbacks, fit, finalize (the best weights, history, curves and card).

    Args:
        data_dir: dataset root (any layout ``fruitlens.dataset`` reads); without a val split one is carved from
            train.
        run_dir: the run folder.
        config: the TrainConfig (default: TrainConfig()).
        resume: continue from ``checkpoints/last.keras`` at the next epoch (a fresh run if there is none).
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch); the CLI passes 1.
        callbacks: extra Keras callbacks, run after the checkpointer.
        workers: image decoding processes (default: all cores).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: bad config, fewer than 2 classes, a resume whose configuration changed, weights that
            cannot be loaded (models.ModelError). DatasetError: the data folder cannot be indexed.
    """
    config = config or TrainConfig()
    start = time.perf_counter()
    run = Path(run_dir)
    ckpt, saved = _checks(run, config, resume)
    data = prepare_data(data_dir, run, config, workers=workers)
    state = _initial_state(config, data, saved, ckpt)  # a resume on other data: refused before any warning
    holdout = holdout_record(data, config)
    if holdout["warning"]:
        log.warning("%s", holdout["warning"])
    trainee = _build(config, data, state, run, ckpt, resumed=saved is not None)
    monitor = config.monitor if data.val is not None else config.monitor.replace("val_", "")
    seed_vars = seed_variables(trainee.model, trainee.augmenter)
    if saved is not None and len(state.get("seed_states") or []) == len(seed_vars):
        for var, value in zip(seed_vars, state["seed_states"], strict=True):  # same dropout/augment noise
            var.assign(np.asarray(value, dtype=var.dtype))
    initial_epoch = int(state["epoch"])
    cbs = _callbacks(config, run, ckpt, state, monitor, seed_vars, callbacks)
    t_fit = time.perf_counter()
    _fit(config, data, trainee, state, cbs, verbose)
    fit_seconds = time.perf_counter() - t_fit
    refit = None
    if config.refit and data.both is not None:
        refit = _refit(config, data, run, kept_epoch(state, holdout, ckpt), verbose)
    return _finalize(config, data, trainee, state, run, ckpt, Path(data_dir).name, initial_epoch, holdout,
                     start=start, fit_seconds=fit_seconds, refit=refit)


def _checks(run: Path, config: TrainConfig, resume: bool) -> tuple[Path, dict | None]:
    """The checkpoint folder (cleaned of temp files) and the saved state to resume from (None: a fresh run);
    weights and a changed configuration are refused here, before any data is read."""
    from fruitlens import models

    ckpt = run / CHECKPOINTS
    ckpt.mkdir(parents=True, exist_ok=True)
    remove_leftover_temp_files(ckpt)
    models.check_weights(config.arch, config.weights, config.alpha)  # before reading any data
    saved = resumable_state(ckpt) if resume else None  # a damaged checkpoint: said, set aside, fresh start
    if saved is not None:
        _check_same_config(saved, config)  # before reading any data
    return ckpt, saved


def _initial_state(config: TrainConfig, data: TrainData, saved: dict | None, ckpt: Path) -> dict[str, Any]:
    """The checkpointer's state: the saved one (same data) when resuming, else a fresh one (old files removed)."""
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None,
                             "config": config.to_dict(), "classes": list(data.classes),
                             "fingerprint": data.fingerprint, "stopped_early": False}
    if saved is not None:
        _check_same_data(saved, data)
        state.update({k: v for k, v in saved.items() if k != "config"})
    else:
        for name in ("best.keras", "last.keras", STATE_FILE):
            (ckpt / name).unlink(missing_ok=True)
    return state


def _build(config: TrainConfig, data: TrainData, state: dict, run: Path, ckpt: Path, *, resumed: bool) -> _Trainee:
    """The model to fit (built and compiled, or the checkpoint's) and its training and validation datasets; a
    bottleneck run fits the head on cached features, any other run follows its recipe (``fruitlens.recipes``)."""
    import keras

    from fruitlens import models, recipes
    from fruitlens.bottleneck import bottleneck_features, cache_key_of, features_dataset, weights_tag
    from fruitlens.inputs import build_augmenter, make_dataset

    full = None
    num_classes = len(data.classes)
    if config.is_bottleneck or not resumed:
        full = models.build_model(config.arch, len(data.classes), config.size, weights=config.weights,
                                  mode=config.mode, alpha=config.alpha, seed=config.seed)
    if config.is_bottleneck:
        tag = weights_tag(config)
        cache = run / "cache"
        train_x = bottleneck_features(full, data.train, cache, f"{tag}-{cache_key_of(data.train)}")
        val_x = (bottleneck_features(full, data.val, cache, f"{tag}-{cache_key_of(data.val)}")
                 if data.val is not None else None)
        head = full.get_layer("head")
        model = keras.models.load_model(ckpt / "last.keras") if resumed else models.compile_model(
            keras.models.clone_model(head), config.arch, config.mode, config.learning_rate)
        if not resumed:
            model.set_weights(head.get_weights())
        train = features_dataset(train_x, data.train.labels, config.batch_size, shuffle=True, seed=config.seed,
                                  epochs=config.epochs, initial_epoch=state["epoch"])
        val = features_dataset(val_x, data.val.labels, 1024, shuffle=False, seed=0) if val_x is not None else None
        return _Trainee(model, train, val, full=full)
    recipe = recipes.resolved(config)
    per_epoch = math.ceil(len(data.train) / config.batch_size)
    model = (keras.models.load_model(ckpt / "last.keras") if resumed
             else recipes.compile_with(full, config, recipe, per_epoch))
    augmenter = (build_augmenter(AugmentConfig(**dict(config.augment_options)), seed=config.seed)
                 if config.augment and recipe.augment_policy == "classic" else None)
    train = make_dataset(data.train, config.batch_size, shuffle=True, seed=config.seed, epochs=config.epochs,
                         initial_epoch=state["epoch"], augmenter=augmenter)
    train = recipes.finish_train(train, config, recipe, num_classes, int(state["epoch"]) * per_epoch)
    val = recipes.finish_eval(make_dataset(data.val, 256) if data.val is not None else None, recipe, num_classes)
    return _Trainee(model, train, val, augmenter=augmenter, recipe=recipe)


def _callbacks(config: TrainConfig, run: Path, ckpt: Path, state: dict, monitor: str, seed_vars,
               extra: Sequence) -> list:
    """Early stopping (when asked), the checkpointer, TensorBoard (when asked), then ``extra``."""
    import keras

    cbs: list = []
    if config.early_stopping:
        stopper = make_early_stopping(monitor, config.early_stopping, state.get("early_stopping"))
        state["_stopper"] = stopper
        cbs.append(stopper)
    cbs.append(make_checkpointer(ckpt, state, monitor, seed_vars))
    if config.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("tensorboard=True: the tensorboard package is not installed (pip install tensorboard)")
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run / "logs")))
    cbs.extend(extra)
    return cbs


def _fit(config: TrainConfig, data: TrainData, trainee: _Trainee, state: dict, cbs: list, verbose: int) -> None:
    """Fit from the state's epoch to ``config.epochs`` (nothing when done or stopped early)."""
    initial_epoch = int(state["epoch"])
    if initial_epoch >= config.epochs or state.get("stopped_early"):
        return
    class_weight = (class_weights_for(data.train.labels, len(data.classes)) if config.class_weights == "balanced"
                    else None)
    trainee.model.fit(trainee.train, epochs=config.epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=math.ceil(len(data.train) / config.batch_size), validation_data=trainee.val,
                      callbacks=cbs, class_weight=class_weight, verbose=verbose, shuffle=False)


def kept_epoch(state: dict, holdout: dict[str, Any], ckpt: Path) -> int:
    """The epoch whose weights the run keeps: the best by the monitor, or the last (``keep`` last, no
    validation images, or nothing monitored)."""
    last = int(state["history"][-1]["epoch"]) if state["history"] else 0
    if holdout["keep"] == "last" or not (ckpt / "best.keras").is_file():
        return last
    return int(state.get("best_epoch") or last)


@dataclass(frozen=True)
class Refit:
    """The model refitted on train + val, and what it was trained on (the card's ``config.trained``)."""

    model: Any  # the whole model to save (backbones + head for a bottleneck run)
    images: int
    epochs: int
    history: list[dict[str, Any]]
    seconds: float


def _refit(config: TrainConfig, data: TrainData, run: Path, epochs: int, verbose: int) -> Refit:
    """Train a fresh model (same seed, same recipe, same batch size) on train + val for ``epochs`` epochs, with
    no validation; checkpoints in ``run/REFIT_DIR`` (a fresh start every time). The caller's extra callbacks
    are not run here: they follow the run whose epochs the history table holds."""
    import dataclasses

    start = time.perf_counter()
    both = TrainData(train=data.both, val=None, classes=data.classes, fingerprint=data.fingerprint,
                     counts={"train": len(data.both), "val": 0}, val_source="none (refit on train + val)")
    refit_config = dataclasses.replace(config, epochs=max(1, epochs), early_stopping=0, val_fraction=0.0,
                                       refit=False)
    ckpt = run / REFIT_DIR / CHECKPOINTS
    ckpt.mkdir(parents=True, exist_ok=True)
    remove_leftover_temp_files(ckpt)
    state = _initial_state(refit_config, both, None, ckpt)
    log.info("refit: %d images (train + val), %d epochs", len(data.both), refit_config.epochs)
    trainee = _build(refit_config, both, state, run, ckpt, resumed=False)
    monitor = config.monitor.replace("val_", "")
    cbs = _callbacks(refit_config, run / REFIT_DIR, ckpt, state, monitor,
                     seed_variables(trainee.model, trainee.augmenter), ())
    _fit(refit_config, both, trainee, state, cbs, verbose)
    model = trainee.model
    if config.is_bottleneck:
        trainee.full.get_layer("head").set_weights(model.get_weights())
        model = trainee.full
    return Refit(model=model, images=len(data.both), epochs=refit_config.epochs, history=list(state["history"]),
                 seconds=time.perf_counter() - start)


def trained_record(data: TrainData, validation: dict[str, Any], refit: Refit | None) -> dict[str, Any]:
    """What the saved model was trained on (the card's ``config.trained``): images, epochs, refit or not."""
    if refit is not None:
        last = refit.history[-1] if refit.history else {}
        return {"images": refit.images, "epochs": refit.epochs, "refit": True,
                "what": (f"refit: a fresh model trained on the {refit.images} training and validation images "
                         f"together for {refit.epochs} epoch(s), the epoch the validation images picked"),
                "train_loss": last.get("loss"), "train_accuracy": last.get("accuracy"),
                "seconds": round(refit.seconds, 2)}
    return {"images": validation["trained_on"], "epochs": validation["kept_epoch"], "refit": False,
            "what": (f"the run's epoch {validation['kept_epoch']}, trained on {validation['trained_on']} images"
                     + (f"; {validation['held_out']} validation images never trained on"
                        if validation["held_out"] else ""))}


def _finalize(config: TrainConfig, data: TrainData, trainee: _Trainee, state: dict, run: Path, ckpt: Path,
              data_name: str, initial_epoch: int, holdout: dict[str, Any], *, start: float,
              fit_seconds: float, refit: Refit | None = None) -> TrainResult:
    """Save the final model (the best epoch's weights; the last epoch's with ``keep`` last, without validation
    images or where nothing was monitored; no optimizer), the history, the curves and the card (with what was
    held out and which epoch was kept: ``holdout_record``; with a refit, the refitted model and
    ``trained_record``)."""
    import keras

    from fruitlens import models
    from fruitlens.card import ModelCard, library_versions, write_card
    from fruitlens.layout import MODEL_FILE, RunLayout
    from fruitlens.plots import plot_history

    keep_last = holdout["keep"] == "last" or not (ckpt / "best.keras").is_file()
    best_path = ckpt / "last.keras" if keep_last else ckpt / "best.keras"
    best = keras.models.load_model(best_path, compile=False)
    if refit is not None:
        final = refit.model
    elif config.is_bottleneck:
        trainee.full.get_layer("head").set_weights(best.get_weights())
        final = trainee.full
    else:
        final = best
    model_path = run / MODEL_FILE
    with tables.atomic_path(model_path) as tmp:
        final.save(tmp)

    history = pd.DataFrame(state["history"], columns=tables.HISTORY_SCHEMA.names)
    lay = RunLayout(run)
    history_path = tables.write_table(history.astype({"epoch": "int32"}), lay.history, "history")
    curves_path = plot_history(history, lay.curves, title=f"{config.arch} on {data_name}")
    best_epoch = kept_epoch(state, holdout, ckpt)
    validation = {**holdout, "kept_epoch": int(best_epoch)}
    trained = trained_record(data, validation, refit)
    at_best = history[history["epoch"] == best_epoch].iloc[0] if len(history) else None
    metrics = {} if at_best is None else {
        "best_epoch": int(best_epoch), "epochs": int(len(history)),
        "train_loss": float(at_best["loss"]), "train_accuracy": float(at_best["accuracy"]),
        "val_loss": float(at_best["val_loss"]), "val_accuracy": float(at_best["val_accuracy"]),
        "seconds_per_epoch": float(history["seconds"].mean()),
    }
    card = ModelCard(classes=data.classes, image_size=config.size, arch=config.arch,
                     scaling=models.scaling_of(config.arch), fingerprint=data.fingerprint,
                     seed=config.seed, metrics={k: v for k, v in metrics.items() if not _isnan(v)},
                     config={**config.to_dict(), "counts": data.counts, "validation": validation,
                             "trained": trained,
                             **({"recipe": asdict(trainee.recipe)} if trainee.recipe is not None else {})},
                     versions=library_versions())
    card_path = write_card(run, card)
    seconds = time.perf_counter() - start
    return TrainResult(
        model_path=str(model_path), card_path=str(card_path), history_path=str(history_path),
        curves_path=str(curves_path), epochs=int(len(history)), resumed_from=initial_epoch,
        stopped_early=bool(state.get("stopped_early")), best_epoch=int(best_epoch), metrics=dict(card.metrics),
        counts=dict(data.counts), classes=tuple(data.classes), validation=validation, trained=trained,
        seconds=seconds,
        timings={**data.timings, "fit_seconds": fit_seconds,
                 "other_seconds": seconds - fit_seconds - sum(data.timings.values())})


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
