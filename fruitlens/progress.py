"""Progress a person can follow, for logs and consoles without ANSI codes: one line per training epoch, and a text
progress bar with the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def epoch_lines(log: Callable[[str], None] | logging.Logger, epochs: int):
    """A Keras callback that says, after each epoch: ``epoch 3/6: loss 0.412, accuracy 0.881, ... (4.2s)``."""
    import keras

    emit = log.info if isinstance(log, logging.Logger | logging.LoggerAdapter) else log

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            values = ", ".join(f"{k} {float(v):.3f}" for k, v in (logs or {}).items()
                               if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
            emit(f"epoch {epoch + 1}/{epochs}: {values} ({time.perf_counter() - self.start:.1f}s)")

    return EpochLines()


def progress_line(what: str, done: int, total: int, seconds: float, unit: str = "images") -> str:
    """``explained: 48/300 images (16%) [##........] 12s, about 1m03s left``: a text progress bar with an ETA."""
    share = done / total if total else 1.0
    bar = "#" * round(10 * share) + "." * (10 - round(10 * share))
    left = seconds / done * (total - done) if done else float("nan")
    eta = "" if done == 0 or done >= total else f", about {_duration(left)} left"
    return f"{what}: {done}/{total} {unit} ({share:.0%}) [{bar}] {_duration(seconds)}{eta}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.0f}s"
