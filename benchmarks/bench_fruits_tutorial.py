"""Fruits-360: the tutorial's own Keras code against `fruitlens train`, same model, same data, same run
(results/fruits_tutorial.json).

The model is the tutorial's (fruitlens' ``seed_cnn``: two 5x5 conv blocks with LeakyReLU and batch norm,
dense 100; RMSprop 1e-4 with decay 1e-6), 20x20, batch 32, 10 epochs, on the 33 Fruits-360 classes; test
accuracy on the Test folder (5,195 images), which neither side sees before the end. Variants:

- ``tutorial``: the tutorial's way, ``keras.utils.image_dataset_from_directory`` on Training (every image,
  no holdout, reshuffled each epoch, TF's bilinear resize), pixels / 255, ``model.fit``, the last epoch;
- ``tutorial_holdout``: the same code with a 15 % ``validation_split`` (what ``bench_training.py`` timed):
  the holdout alone, in the tutorial's pipeline;
- ``fruitlens``: ``train_model`` with its defaults (15 % carved from Training, best epoch by val_accuracy),
  evaluated by ``evaluate_run`` (what ``fruitlens train ... && fruitlens evaluate`` do);
- ``fruitlens_all``: ``train_model`` with ``val_fraction=0`` (``--val-split 0``: every training image, the
  last epoch kept);
- ``fruitlens_refit``: ``train_model`` with ``refit=True`` (``--refit``: 15 % held out picks the epoch, then a
  fresh model trains on every training image for that many epochs and is the one saved; the holdout run's
  own kept epoch is evaluated too, as ``holdout_model_test_accuracy``: the ``fruitlens`` variant's model);
- ``tutorial_fruitlens_pixels``: the tutorial's model and ``model.fit`` (Keras' own shuffling, global seed)
  on the pixels fruitlens decodes (PIL, JPEG draft + bilinear, uint8), every training image: the
  decoding alone;
- ``tutorial_fruitlens_init``: the same, with the initial weights and dropout seeds as fruitlens makes them
  (``models.build_model(..., seed=seed)``, every initializer seeded from the run's seed) instead of Keras'
  global seed: the initialisation alone.

    python -m benchmarks.bench_fruits_tutorial [--epochs 10] [--seeds 42] [--only tutorial,fruitlens_all,...]

Every variant runs once per seed, in this process, one after the other; minutes are wall time of training
(index/decode included for fruitlens, dataset listing for the tutorial), evaluation apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks._common import FRUITS360 as _BESIDE  # noqa: E402
from benchmarks._common import write_result

# beside the repository (a checkout in /work/main), else the shared copy (a worktree elsewhere), else --data
FRUITS360 = _BESIDE if (_BESIDE / "Training").is_dir() else Path("/work/shared/datasets/fruits360")

SIZE = 20
BATCH = 32
VARIANTS = ("tutorial", "tutorial_holdout", "fruitlens", "fruitlens_tutorial_recipe", "fruitlens_all",
            "fruitlens_refit", "tutorial_fruitlens_pixels", "tutorial_fruitlens_init")


def _load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bench_tutorial(epochs: int, seed: int, holdout: float) -> dict:
    """The tutorial's code: image_dataset_from_directory (all of Training, or a holdout), / 255, fit."""
    import keras

    from fruitlens.models import compile_model, seed_cnn

    keras.utils.set_random_seed(seed)
    load = _load_avg()
    start = time.perf_counter()
    kw = dict(image_size=(SIZE, SIZE), batch_size=BATCH, label_mode="int", seed=seed, verbose=False)
    if holdout:
        train = keras.utils.image_dataset_from_directory(FRUITS360 / "Training", validation_split=holdout,
                                                         subset="training", shuffle=True, **kw)
    else:
        train = keras.utils.image_dataset_from_directory(FRUITS360 / "Training", shuffle=True, **kw)
    n_classes = len(train.class_names)
    n_train = sum(int(b[1].shape[0]) for b in train)

    def scale(ds):
        return ds.map(lambda x, y: (x / 255.0, y))

    model = compile_model(seed_cnn(n_classes, (SIZE, SIZE)), "seed_cnn")
    model.fit(scale(train), epochs=epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    test = keras.utils.image_dataset_from_directory(FRUITS360 / "Test", shuffle=False, **kw)
    _, acc = model.evaluate(scale(test), verbose=0)
    return {"test_accuracy": round(float(acc), 4), "trained_on": n_train, "held_out": 15506 - n_train if holdout
            else 0, "epoch_kept": epochs, "train_minutes": round(train_seconds / 60, 2), "load_before": load,
            "load_after": _load_avg()}


def bench_tutorial_on_fruitlens_pixels(epochs: int, seed: int, fruitlens_init: bool = False) -> dict:
    """The tutorial's fit on fruitlens' decoded pixels (every training image), evaluated on fruitlens' test pixels."""
    import keras

    from fruitlens.dataset import index_dataset
    from fruitlens.inputs import load_images
    from fruitlens.models import compile_model, seed_cnn

    keras.utils.set_random_seed(seed)
    load = _load_avg()
    start = time.perf_counter()
    index = index_dataset(FRUITS360, seed=seed)
    train, test = load_images(index.paths("train"), SIZE), load_images(index.paths("test"), SIZE)
    if fruitlens_init:
        from fruitlens.models import build_model

        model = compile_model(build_model("seed_cnn", len(index.classes), SIZE, seed=seed), "seed_cnn")
    else:
        model = compile_model(seed_cnn(len(index.classes), (SIZE, SIZE)), "seed_cnn")
    model.fit(train.floats(), train.labels, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - start
    _, acc = model.evaluate(test.floats(), test.labels, batch_size=256, verbose=0)
    return {"test_accuracy": round(float(acc), 4), "trained_on": len(train), "held_out": 0, "epoch_kept": epochs,
            "train_minutes": round(train_seconds / 60, 2), "load_before": load, "load_after": _load_avg()}


def bench_fruitlens(epochs: int, seed: int, work: Path, val_fraction: float, refit: bool = False,
                    recipe: str = "default") -> dict:
    from fruitlens.config import TrainConfig
    from fruitlens.inference import evaluate_run
    from fruitlens.training import train_model

    run = work / f"fruitlens_{seed}_{val_fraction}_{refit}_{recipe}"
    shutil.rmtree(run, ignore_errors=True)
    load = _load_avg()
    start = time.perf_counter()
    config = TrainConfig(arch="seed_cnn", image_size=SIZE, epochs=epochs, batch_size=BATCH, seed=seed,
                         val_fraction=val_fraction, refit=refit, optimizer=recipe, schedule=recipe)
    result = train_model(FRUITS360, run, config, workers=2)
    train_seconds = time.perf_counter() - start
    metrics = evaluate_run(run, FRUITS360, run / "eval")
    v, t = result.validation, result.trained
    extra = {}
    if t["refit"]:  # the holdout run's own kept epoch, what the run would have saved without --refit
        kept = run / "holdout_model"
        kept.mkdir()
        best = run / "checkpoints" / ("best.keras" if (run / "checkpoints" / "best.keras").is_file() else "last.keras")
        shutil.copy(best, kept / "model.keras")
        shutil.copy(run / "model.json", kept / "model.json")
        held = evaluate_run(kept, FRUITS360, kept / "eval")
        extra = {"holdout_model_test_accuracy": round(float(held["accuracy"]), 4),
                 "refit_minutes": round(t["seconds"] / 60, 2)}
    return {"test_accuracy": round(float(metrics["accuracy"]), 4), "trained_on": t["images"],
            "held_out": v["held_out"], "epoch_kept": v["kept_epoch"], "refit": t["refit"],
            "epochs_trained": t["epochs"],
            "val_accuracy": round(result.metrics["val_accuracy"], 4) if "val_accuracy" in result.metrics
            else None, "train_minutes": round(train_seconds / 60, 2), "load_before": load,
            "load_after": _load_avg(), **extra}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="42", help="comma-separated seeds; every variant runs once per seed")
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--name", default="fruits_tutorial", help="results/<name>.json")
    parser.add_argument("--data", type=Path, default=None, help="the Fruits-360 root (default: found)")
    args = parser.parse_args()
    global FRUITS360
    FRUITS360 = args.data or FRUITS360
    if not (FRUITS360 / "Training").is_dir():
        raise SystemExit(f"Fruits-360 not found at {FRUITS360}")
    which = [v for v in args.only.split(",") if v]
    bad = [v for v in which if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--only {','.join(bad)}: expected some of {','.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_fruits_tutorial_"))
    results: dict = {"dataset": str(FRUITS360), "epochs": args.epochs, "batch_size": BATCH, "image_size": SIZE,
                     "runs": {}}
    try:
        for seed in seeds:
            for name in which:
                t = time.perf_counter()
                if name == "tutorial":
                    out = bench_tutorial(args.epochs, seed, 0.0)
                elif name == "tutorial_holdout":
                    out = bench_tutorial(args.epochs, seed, 0.15)
                elif name == "tutorial_fruitlens_pixels":
                    out = bench_tutorial_on_fruitlens_pixels(args.epochs, seed)
                elif name == "tutorial_fruitlens_init":
                    out = bench_tutorial_on_fruitlens_pixels(args.epochs, seed, fruitlens_init=True)
                elif name == "fruitlens":
                    out = bench_fruitlens(args.epochs, seed, work, 0.15)
                elif name == "fruitlens_tutorial_recipe":  # fruitlens with the tutorial's RMSprop 1e-4
                    out = bench_fruitlens(args.epochs, seed, work, 0.15, recipe="tutorial")
                elif name == "fruitlens_refit":
                    out = bench_fruitlens(args.epochs, seed, work, 0.15, refit=True)
                else:
                    out = bench_fruitlens(args.epochs, seed, work, 0.0)
                results["runs"].setdefault(name, {})[str(seed)] = out
                print(f"seed {seed} {name}: {out} ({time.perf_counter() - t:.0f}s)", flush=True)
                write_result(args.name, results)  # after every run: a killed benchmark keeps what it measured
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
