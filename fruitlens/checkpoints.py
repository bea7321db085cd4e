"""Which training checkpoint a resume may trust: whole files, and a state that agrees with itself.

Every epoch writes ``best.keras`` (when it improved), ``last.keras`` and then ``state.json``, whose
``checksums`` hold the sha256 of the checkpoint files it goes with. :func:`resumable_state` accepts a
checkpoint only if ``state.json`` reads as a state, its epoch count agrees with its history, and each file it
names has that checksum (checkpoints from before checksums: ``last.keras`` must be a whole zip). Anything else
is set aside in ``checkpoints/set-aside/`` (never deleted), said in one warning naming the file, and training
starts fresh: a rerun never fails again and again on the same broken file. The callbacks that write them
(:func:`make_checkpointer`, a resumable early stopping) live here too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fruitlens import tables
from fruitlens.digests import file_digest

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_FILES = ("best.keras", "last.keras")
SET_ASIDE = "set-aside"


def checksums(ckpt_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of each checkpoint file present in ``ckpt_dir`` (recorded in ``state.json``)."""
    ckpt = Path(ckpt_dir)
    return {name: file_digest(ckpt / name) for name in CHECKPOINT_FILES if (ckpt / name).is_file()}


def _problem(ckpt: Path) -> tuple[str, dict[str, Any] | None]:
    """("", state) for a checkpoint a resume may trust, else (what is wrong, None)."""
    state_path = ckpt / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{state_path} cannot be read ({type(exc).__name__})", None
    if not isinstance(state, dict) or not {"epoch", "history", "config", "classes"} <= set(state):
        return f"{state_path} is not a training state (expected epoch, history, config, classes)", None
    epoch, history = state["epoch"], state["history"]
    epochs = [row.get("epoch") if isinstance(row, dict) else None for row in history] \
        if isinstance(history, list) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1 or epochs != list(range(1, epoch + 1)):
        return (f"{state_path} says epoch {str(epoch)[:20]} but its history holds "
                f"{len(history) if isinstance(history, list) else 'no'} epochs"), None
    recorded = state.get("checksums")
    if isinstance(recorded, dict):
        if "last.keras" not in recorded:
            return f"{state_path} records no checksum of last.keras", None
        for name, digest in recorded.items():
            path = ckpt / str(name)
            if not path.is_file():
                return f"{path} is missing", None
            if file_digest(path) != digest:
                return f"{path} does not match the checksum state.json recorded (damaged or replaced)", None
    else:  # written before checksums were recorded: at least a whole zip
        try:
            with zipfile.ZipFile(ckpt / "last.keras") as zf:
                bad = zf.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            return f"{ckpt / 'last.keras'} cannot be read ({type(exc).__name__})", None
        if bad is not None:
            return f"{ckpt / 'last.keras'} is damaged ({bad})", None
    return "", state


def set_aside(ckpt_dir: str | os.PathLike) -> Path:
    """Move the checkpoint files and state into ``checkpoints/set-aside/`` (replacing what an earlier run put
    there); returns that folder."""
    ckpt = Path(ckpt_dir)
    aside = ckpt / SET_ASIDE
    aside.mkdir(exist_ok=True)
    for name in (*CHECKPOINT_FILES, STATE_FILE):
        if (ckpt / name).exists():
            os.replace(ckpt / name, aside / name)
    return aside


def resumable_state(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The saved state of the checkpoint in ``ckpt_dir`` if a resume may trust it; else None (a fresh start),
    with one warning saying why and where the files were set aside."""
    ckpt = Path(ckpt_dir)
    if not (ckpt / STATE_FILE).is_file() or not (ckpt / "last.keras").is_file():
        if (ckpt / STATE_FILE).exists() or (ckpt / "last.keras").exists():
            log.warning("--resume: %s has %s but not %s; starting a fresh run (the files are set aside in %s)",
                        ckpt, *(("state.json", "last.keras") if (ckpt / STATE_FILE).exists()
                                else ("last.keras", "state.json")), set_aside(ckpt))
        else:
            log.warning("--resume: no checkpoint in %s; starting a fresh run", ckpt)
        return None
    problem, state = _problem(ckpt)
    if problem:
        log.warning("--resume: %s; starting a fresh run (the checkpoint is set aside in %s)", problem, set_aside(ckpt))
        return None
    return state


# --------------------------------------------------------------------------------- the callbacks that write them


def _float(value) -> float:
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return float("nan")


def seed_variables(*objs) -> list:
    """The random-number states of dropout/augmentation layers (Keras does not save them with a model)."""
    return [v for obj in objs if obj is not None for v in obj.variables if v.path.endswith("seed_generator_state")]


def make_checkpointer(ckpt_dir: Path, state: dict, monitor: str, seed_vars=(), on_epoch=None):
    """The Keras callback that writes the checkpoint of every epoch (``state`` is updated in place)."""
    import keras

    class Checkpointer(keras.callbacks.Callback):
        """Per epoch: history row, best.keras (if improved), last.keras, then state.json; all atomic."""

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1, "loss": _float(logs.get("loss")), "accuracy": _float(logs.get("accuracy")),
                   "val_loss": _float(logs.get("val_loss", np.nan)),
                   "val_accuracy": _float(logs.get("val_accuracy", np.nan)),
                   "learning_rate": _float(self.model.optimizer.learning_rate),
                   "seconds": time.perf_counter() - self._start}
            state["history"] = [h for h in state["history"] if h["epoch"] < row["epoch"]] + [row]
            value = _float(logs.get(monitor, np.nan))
            sign = -1.0 if monitor.endswith("loss") else 1.0
            # accuracy ties (common once it saturates) go to the lower loss of the same split
            tie_key = monitor.replace("accuracy", "loss") if monitor.endswith("accuracy") else None
            tie = _float(logs.get(tie_key, np.nan)) if tie_key else np.nan
            best, best_tie = state.get("best"), state.get("best_tiebreak")
            better = best is None or sign * value > sign * best or (
                value == best and not math.isnan(tie) and best_tie is not None and tie < best_tie)
            if not math.isnan(value) and better:
                state.update(best=value, best_epoch=row["epoch"], best_tiebreak=None if math.isnan(tie) else tie)
                with tables.atomic_path(ckpt_dir / "best.keras") as tmp:
                    self.model.save(tmp)
            with tables.atomic_path(ckpt_dir / "last.keras") as tmp:
                self.model.save(tmp)
            state["checksums"] = checksums(ckpt_dir)  # what a resume verifies (fruitlens.checkpoints)
            state["epoch"] = row["epoch"]
            state["seed_states"] = [np.asarray(v).tolist() for v in seed_vars]
            stopper = state.get("_stopper")
            if stopper is not None:
                state["early_stopping"] = {"wait": int(stopper.wait), "best": _float(stopper.best)}
            state["stopped_early"] = bool(self.model.stop_training)
            tables.write_json(ckpt_dir / STATE_FILE, {k: v for k, v in state.items() if not k.startswith("_")})
            if on_epoch is not None:
                on_epoch(row)

    return Checkpointer()


def make_early_stopping(monitor: str, patience: int, restored: dict | None):
    """Keras' early stopping, its counters restored from a resumed state (``restored``)."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if restored:
                self.wait = int(restored["wait"])
                self.best = float(restored["best"])

    return ResumableEarlyStopping(monitor=monitor, patience=patience, mode="auto")
