"""Training benchmark, side by side in one run (results/training.json).

On the 33 Fruits-360 classes, 20x20, 10 epochs, batch 32, the tutorial's seed_cnn trained three ways:

- ``tutorial``: plain Keras as the tutorial does it, ``image_dataset_from_directory`` (decodes every
  epoch) with a 15% validation subset, pixels / 255, ``model.fit``;
- ``in_memory``: the same model on numpy arrays already in memory (decoding not timed), 15% validation;
- ``fruitlens``: ``train_model`` (index, decode once, checkpoints every epoch, 15% validation carved
  from Training), from a fresh run folder (nothing cached).

Then the better default (``fruit_net`` at 32x32), and resume equivalence: the fruitlens run killed after
5 epochs and resumed with ``resume=True``, against the uninterrupted run. Test accuracy is on the Test
folder for every variant. Seconds per epoch are measured by the same callback (epoch begin to end,
validation included).

    python -m benchmarks.bench_training [--epochs 10] [--only tutorial,in_memory,fruitlens,fruit_net,resume]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._common import FRUITS360, write_result  # noqa: E402

SEED = 42
SIZE = 20
BATCH = 32


def _epoch_timer():
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    return Timer()


def _seed_cnn(num_classes: int):
    import keras

    from fruitlens.models import compile_model, seed_cnn

    keras.utils.set_random_seed(SEED)
    return compile_model(seed_cnn(num_classes, (SIZE, SIZE)), "seed_cnn")


def _summary(seconds: list[float], test_accuracy: float, wall: float, epochs: int) -> dict:
    return {"test_accuracy": round(float(test_accuracy), 4),
            "seconds_per_epoch": round(float(np.mean(seconds)), 3),
            "seconds_per_epoch_after_first": round(float(np.mean(seconds[1:])), 3) if len(seconds) > 1 else None,
            "first_epoch_seconds": round(float(seconds[0]), 3),
            "wall_seconds": round(wall, 2), "wall_seconds_per_epoch": round(wall / epochs, 3)}


def bench_tutorial(epochs: int) -> dict:
    """The tutorial's way: image_dataset_from_directory, decoded every epoch."""
    import keras

    start = time.perf_counter()
    kw = dict(image_size=(SIZE, SIZE), batch_size=BATCH, label_mode="int", seed=SEED, verbose=False)
    train = keras.utils.image_dataset_from_directory(FRUITS360 / "Training", validation_split=0.15,
                                                     subset="training", shuffle=True, **kw)
    val = keras.utils.image_dataset_from_directory(FRUITS360 / "Training", validation_split=0.15,
                                                   subset="validation", shuffle=False, **kw)
    test = keras.utils.image_dataset_from_directory(FRUITS360 / "Test", shuffle=False, **kw)
    n_classes = len(train.class_names)

    def scale(ds):
        return ds.map(lambda x, y: (x / 255.0, y))

    model = _seed_cnn(n_classes)
    timer = _epoch_timer()
    model.fit(scale(train), validation_data=scale(val), epochs=epochs, callbacks=[timer], verbose=0)
    wall = time.perf_counter() - start
    _, acc = model.evaluate(scale(test), verbose=0)
    return _summary(timer.seconds, acc, wall, epochs)


def _decoded(split_rows, index):
    from fruitlens.inputs import load_images

    return load_images(split_rows, SIZE)


def bench_in_memory(epochs: int) -> dict:
    """The same model on numpy arrays already in memory (decoding not timed)."""
    from fruitlens.dataset import index_dataset, split_validation

    index = index_dataset(FRUITS360, seed=SEED)
    train_rows, val_rows = split_validation(index.paths("train"), 0.15, SEED)
    train, val, test = (_decoded(r, index) for r in (train_rows, val_rows, index.paths("test")))
    x, y = train.floats(), train.labels
    xv, yv = val.floats(), val.labels
    model = _seed_cnn(len(index.classes))
    timer = _epoch_timer()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, validation_data=(xv, yv), callbacks=[timer],
              verbose=0)
    wall = time.perf_counter() - start
    _, acc = model.evaluate(test.floats(), test.labels, batch_size=256, verbose=0)
    return _summary(timer.seconds, acc, wall, epochs)


def _fruitlens_run(run: Path, config, callbacks=(), resume=False) -> dict:
    from fruitlens.training import train_model

    return train_model(FRUITS360, run, config, callbacks=callbacks, resume=resume)


def bench_fruitlens(epochs: int, work: Path, arch: str = "seed_cnn", size: int = SIZE) -> dict:
    from fruitlens.config import TrainConfig
    from fruitlens.inference import evaluate_run
    from fruitlens.tables import read_table

    run = work / f"{arch}_{size}"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    result = _fruitlens_run(run, TrainConfig(arch=arch, image_size=size, epochs=epochs, batch_size=BATCH, seed=SEED))
    wall = time.perf_counter() - start
    metrics = evaluate_run(run, FRUITS360, run / "eval")
    seconds = read_table(run / "history.parquet")["seconds"].tolist()
    out = _summary(seconds, metrics["accuracy"], wall, epochs)
    out.update(best_epoch=result.best_epoch, val_accuracy=round(result.metrics["val_accuracy"], 4),
               setup_seconds=round(wall - sum(seconds), 2), macro_f1=round(metrics["macro"]["f1-score"], 4),
               timings={k: round(v, 2) for k, v in result.timings.items()})
    return out


def bench_resume(epochs: int, work: Path, reference: dict | None) -> dict:
    import keras

    from fruitlens.config import TrainConfig
    from fruitlens.inference import evaluate_run
    from fruitlens.tables import read_table

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == epochs // 2:
                raise KeyboardInterrupt

    run = work / "resumed"
    shutil.rmtree(run, ignore_errors=True)
    config = TrainConfig(arch="seed_cnn", image_size=SIZE, epochs=epochs, batch_size=BATCH, seed=SEED)
    try:
        _fruitlens_run(run, config, callbacks=[Kill()])
    except KeyboardInterrupt:
        pass
    result = _fruitlens_run(run, config, resume=True)
    history = read_table(run / "history.parquet")
    metrics = evaluate_run(run, FRUITS360, run / "eval")
    out = {"killed_after_epoch": epochs // 2, "resumed_from": result.resumed_from,
           "history_epochs": history["epoch"].tolist(), "test_accuracy": round(metrics["accuracy"], 4),
           "val_accuracy": round(result.metrics["val_accuracy"], 4)}
    if reference:
        ref_hist = read_table(work / f"seed_cnn_{SIZE}" / "history.parquet")
        out["uninterrupted_test_accuracy"] = reference["test_accuracy"]
        out["max_abs_val_loss_diff_vs_uninterrupted"] = round(float(np.max(np.abs(
            history["val_loss"].to_numpy() - ref_hist["val_loss"].to_numpy()))), 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fruit-net-epochs", type=int, default=None)
    parser.add_argument("--only", default="tutorial,in_memory,fruitlens,fruit_net,resume")
    args = parser.parse_args()
    which = args.only.split(",")
    if not (FRUITS360 / "Training").is_dir():
        raise SystemExit(f"Fruits-360 not found at {FRUITS360}")
    from fruitlens.config import TrainConfig

    fruit_net = TrainConfig(arch="fruit_net", image_size=32, epochs=8, batch_size=32)  # the benchmark's setting

    work = Path(tempfile.mkdtemp(prefix="bench_training_"))
    results: dict = {"dataset": str(FRUITS360), "epochs": args.epochs, "batch_size": BATCH, "image_size": SIZE}
    try:
        for name in which:
            t = time.perf_counter()
            if name == "tutorial":
                results["tutorial"] = bench_tutorial(args.epochs)
            elif name == "in_memory":
                results["in_memory"] = bench_in_memory(args.epochs)
            elif name == "fruitlens":
                results["fruitlens"] = bench_fruitlens(args.epochs, work)
            elif name == "fruit_net":
                ep = args.fruit_net_epochs or fruit_net.epochs
                results["fruit_net"] = {"image_size": fruit_net.image_size, "epochs": ep,
                                        **bench_fruitlens(ep, work, "fruit_net", fruit_net.image_size)}
            elif name == "resume":
                results["resume"] = bench_resume(args.epochs, work, results.get("fruitlens"))
            print(f"{name}: {results.get(name)} ({time.perf_counter() - t:.0f}s)", flush=True)
        if "tutorial" in results and "fruitlens" in results:
            results["ratio_fruitlens_to_tutorial_seconds_per_epoch"] = round(
                results["fruitlens"]["wall_seconds_per_epoch"] / results["tutorial"]["wall_seconds_per_epoch"], 3)
        if "in_memory" in results and "fruitlens" in results:
            results["throughput_fruitlens_vs_in_memory"] = round(
                results["in_memory"]["seconds_per_epoch"] / results["fruitlens"]["seconds_per_epoch"], 3)
            results["throughput_fruitlens_wall_vs_in_memory"] = round(
                results["in_memory"]["seconds_per_epoch"] / results["fruitlens"]["wall_seconds_per_epoch"], 3)
        write_result("training", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
