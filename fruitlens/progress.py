"""Progress a person can follow: one line per training epoch, for logs and consoles without ANSI codes."""

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
