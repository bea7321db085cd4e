"""LIME: fruitlens vs the `lime` package (0.2.0.1), side by side in one run.

Parts (all on one machine, in one process unless noted):

1. speed: the same model, the same Fruits-360 test images, the same superpixels (SLIC, 50),
   1000 samples, top_labels=5, hide_color=0: `LimeImageExplainer.explain_instance` with ``model.predict``
   and its default batch_size=10 (the tutorials' call), the same with batch_size=1000, and
   `fruitlens.explain.lime.explain_lime` over many images in one call; plus the model alone over 1000 images.
2. agreement: Spearman correlation of the superpixel weights, fruitlens vs the reference and the reference
   with one seed vs the reference with another, over the same images and the 5 labels.
3. ``--full``: `fruitlens explain --method lime` over all Fruits-360 test images (5,195) with the seed_cnn-like
   model at 20x20, 1000 samples each, in a subprocess: wall time and peak memory (ru_maxrss).
4. ``--demo``: on the generated demo dataset, a small convnet trained on it; how often the top supporting
   superpixel of the predicted class overlaps the sticker that decides the class, vs chance.

Parts 1-2 run for three models (``--configs``), each trained briefly on Fruits-360 in the run (stated in the
result): ``seed_cnn_20``, the tutorial's seed_cnn as issue 3 describes it at 20x20 (3 epochs on all training
images); ``convnet_100``, a 3-block convnet at 100x100 (2 epochs on 100 images per class), where the
model's own compute dominates and bounds every ratio; and ``seed_cnn_on_photos_100``, the same seed_cnn
behind a Resizing(20, 20) layer, explaining the 100x100 photos themselves.

Run: ``python -m benchmarks.bench_lime [--full] [--demo]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks._common import FRUITS360, RESULTS, ROOT, write_result  # noqa: E402


def convnet(size: int, classes: int, seed: int = 0):
    """A 3-block convnet taking [0, 1] RGB at size x size (scales inside)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((size, size, 3)), keras.layers.Rescaling(2.0, offset=-1.0)]
    for filters in (16, 32, 64):
        layers += [keras.layers.Conv2D(filters, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D()]
    layers += [keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
               keras.layers.Dense(classes, activation="softmax")]
    return _compiled(keras.Sequential(layers))


def seed_cnn_like(size: int, classes: int, seed: int = 0):
    """The Fruits-360 tutorial's model as issue 3 describes it: two conv layers, leaky ReLU 0.5, batch norm,
    max-pool, dropout 0.25, dense 100, dropout 0.5, softmax (fruitlens.models is not on this branch)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    return _compiled(keras.Sequential([
        keras.Input((size, size, 3)), L.Rescaling(1.0),
        L.Conv2D(32, 3, padding="same"), L.LeakyReLU(0.5), L.BatchNormalization(),
        L.Conv2D(64, 3, padding="same"), L.LeakyReLU(0.5), L.BatchNormalization(), L.MaxPooling2D(),
        L.Dropout(0.25), L.Flatten(), L.Dense(100), L.LeakyReLU(0.5), L.BatchNormalization(), L.Dropout(0.5),
        L.Dense(classes, activation="softmax"),
    ]))


def seed_cnn_on_photos(size: int, classes: int, seed: int = 0):
    """The same seed_cnn-like model taking the 100x100 photos themselves and resizing them to 20x20 inside
    (a Keras Resizing layer), so LIME perturbs and explains the photo at its own resolution."""
    import keras

    inner = seed_cnn_like(20, classes, seed)
    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Resizing(20, 20), *inner.layers])
    return _compiled(model)


def _compiled(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


CONFIGS = {
    # name: (builder, input size, training images per class (None: all), epochs)
    "seed_cnn_20": (seed_cnn_like, 20, None, 3),
    "convnet_100": (convnet, 100, 100, 2),
    "seed_cnn_on_photos_100": (seed_cnn_on_photos, 100, None, 3),
}


def load_split(root: Path, split: str, size: int, per_class: int | None, seed: int = 0):
    """(images, labels, classes, paths) of a Training/Test folder, ``per_class`` random files per class."""
    from fruitlens.images import read_batch

    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (root / "Training").iterdir() if p.is_dir())
    paths, labels = [], []
    for i, name in enumerate(classes):
        files = sorted((root / split / name).glob("*.jpg"))
        if per_class is not None and len(files) > per_class:
            files = [files[j] for j in sorted(rng.choice(len(files), per_class, replace=False))]
        paths += files
        labels += [i] * len(files)
    return read_batch(paths, (size, size)), np.asarray(labels), classes, paths


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def reference_weights(exp, label: int, s: int) -> np.ndarray:
    w = np.zeros(s)
    for f, v in exp.local_exp[label]:
        w[f] = v
    return w


def part_speed_and_agreement(config: str, n_ref: int, n_ours: int, n_agree: int) -> dict:
    import lime.lime_image as lime_image

    from fruitlens.explain.lime import explain_lime
    from fruitlens.explain.segmentation import make_segmenter
    from fruitlens.lime_options import LimeOptions

    lime_image.tqdm = lambda rows: rows  # no progress bars (only makes the reference faster)
    build, size, per_class, epochs = CONFIGS[config]
    train_x, train_y, classes, _ = load_split(FRUITS360, "Training", size, per_class)
    test_x, test_y, _, _ = load_split(FRUITS360, "Test", size, 4, seed=1)
    model = build(size, len(classes))
    _, train_s = timed(model.fit, train_x, train_y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    accuracy = float((model.predict(test_x, verbose=0).argmax(1) == test_y).mean())
    print(f"[{config}] trained {epochs} epochs on {len(train_x)} images in {train_s:.0f} s; test accuracy "
          f"{accuracy:.3f} on {len(test_x)} images; {model.count_params()} parameters")

    order = np.random.default_rng(2).permutation(len(test_x))
    images = test_x[order[:max(n_ours, n_agree, n_ref)]]
    segmenter = make_segmenter("slic", n_superpixels=50)
    segments = segmenter.segment(images)
    n_sp = segments.reshape(len(segments), -1).max(1) + 1
    settings = dict(top_labels=5, hide_color=0, num_samples=1000)

    def reference(i: int, batch_size: int, seed: int, **overrides):
        explainer = lime_image.LimeImageExplainer(random_state=seed)
        return explainer.explain_instance(images[i].astype(np.float64), lambda b: model.predict(b, verbose=0),
                                          batch_size=batch_size, segmentation_fn=lambda _: segments[i],
                                          random_seed=0, **{**settings, **overrides})

    one_pass = np.repeat(images[:8], 125, axis=0)  # 1000 images

    def model_alone(batch_size: int):
        return [model.predict_on_batch(one_pass[i:i + batch_size]) for i in range(0, len(one_pass), batch_size)]

    # warm up every path once (traces, caches)
    reference(0, 10, 0)
    reference(0, 1000, 0)
    ours_options = LimeOptions.reference(**settings)  # the reference's own procedure, its settings
    explain_lime(model, images[:2], ours_options, segments=segments[:2])
    batch = int(np.clip((16 << 20) // (size * size * 12), 32, 1024))  # explain_lime's default batch
    model_alone(batch)
    model.predict(one_pass, verbose=0)

    # interleave the runs, so machine noise hits all of them alike
    ref10, ref1000, ours_one = [], [], []
    ref_runs: dict[int, list] = {}
    for i in range(n_ref):
        e10, t10 = timed(reference, i, 10, 1)
        e1000, t1000 = timed(reference, i, 1000, 2)
        _, t_one = timed(explain_lime, model, images[i:i + 1], ours_options, segments=segments[i:i + 1],
                         seed=[(0, i)])
        ref10.append(t10)
        ref1000.append(t1000)
        ours_one.append(t_one)
        ref_runs[i] = [e10, e1000]
        print(f"[{config}] image {i}: reference bs=10 {t10:.2f} s, bs=1000 {t1000:.2f} s, "
              f"fruitlens alone {t_one:.3f} s")
    ours, t_ours = timed(explain_lime, model, images[:n_ours], ours_options, segments=segments[:n_ours])
    _, t_model = timed(model_alone, batch)
    _, t_predict = timed(model.predict, one_pass, verbose=0)
    per_image = t_ours / n_ours
    fastest_model = min(t_model, t_predict)
    print(f"[{config}] fruitlens: {n_ours} images in {t_ours:.2f} s ({per_image:.3f} s/image); model alone on "
          f"1000 images: predict_on_batch x{batch} {t_model:.3f} s, model.predict {t_predict:.3f} s")

    # agreement: fruitlens (seed 0) vs the reference (seed 1), and the reference seed 1 vs seed 2
    def agreement(ours_exps, ref_pairs) -> dict:
        all_ours, all_ref, top_ours, top_ref = [], [], [], []
        for i, (r1, r2) in ref_pairs.items():
            for rank, label in enumerate(int(v) for v in r1.top_labels):
                if label not in ours_exps[i].weights:
                    continue
                w1, w2 = reference_weights(r1, label, n_sp[i]), reference_weights(r2, label, n_sp[i])
                a, b = spearman(ours_exps[i].weights[label], w1), spearman(w1, w2)
                all_ours.append(a)
                all_ref.append(b)
                if rank == 0:
                    top_ours.append(a)
                    top_ref.append(b)
        return {"images": len(ref_pairs), "label_pairs": len(all_ours),
                "fruitlens_vs_reference_top1": float(np.mean(top_ours)),
                "reference_vs_reference_top1": float(np.mean(top_ref)),
                "fruitlens_vs_reference_all5": float(np.mean(all_ours)),
                "reference_vs_reference_all5": float(np.mean(all_ref))}

    for i in range(n_agree):
        if i not in ref_runs:
            ref_runs[i] = [reference(i, 1000, 1), reference(i, 1000, 2)]
    black = agreement(ours, {i: ref_runs[i] for i in range(n_agree)})
    mean_ours = explain_lime(model, images[:n_agree], LimeOptions.reference(top_labels=5, num_samples=1000),
                             segments=segments[:n_agree])
    mean_refs = {i: [reference(i, 1000, 1, hide_color=None), reference(i, 1000, 2, hide_color=None)]
                 for i in range(n_agree)}
    mean = agreement(mean_ours, mean_refs)
    print(f"[{config}] agreement (Spearman, top label): hide_color=0 fruitlens-ref "
          f"{black['fruitlens_vs_reference_top1']:.3f} ref-ref {black['reference_vs_reference_top1']:.3f}; "
          f"mean colour fruitlens-ref {mean['fruitlens_vs_reference_top1']:.3f} "
          f"ref-ref {mean['reference_vs_reference_top1']:.3f}")
    return {
        "model": {"builder": build.__name__, "input": f"{size}x{size}", "params": int(model.count_params()),
                  "trained": f"{epochs} epochs on {len(train_x)} Fruits-360 training images",
                  "test_accuracy": accuracy},
        "settings": {**settings, "segmenter": segmenter.name, "mean_superpixels": float(n_sp.mean()),
                     "reference_classifier_fn": "model.predict(batch, verbose=0)"},
        "reference_bs10_s_per_image": float(np.mean(ref10)),
        "reference_bs1000_s_per_image": float(np.mean(ref1000)),
        "fruitlens_s_per_image": per_image,
        "fruitlens_images_per_call": n_ours,
        "fruitlens_s_one_image_per_call": float(np.mean(ours_one)),
        "model_alone_1000_images_s": {"predict_on_batch": t_model, "predict": t_predict, "batch": batch},
        "speedup_vs_reference_bs10": float(np.mean(ref10)) / per_image,
        "speedup_vs_reference_bs1000": float(np.mean(ref1000)) / per_image,
        "speedup_one_image_per_call_vs_reference_bs10": float(np.mean(ref10)) / float(np.mean(ours_one)),
        "speedup_one_image_per_call_vs_reference_bs1000": float(np.mean(ref1000)) / float(np.mean(ours_one)),
        "fruitlens_over_model_alone": per_image / fastest_model,
        "agreement_hide_color_0": black,
        "agreement_mean_colour": mean,
    }


def part_full(limit: int | None, time_limit_s: float) -> dict:
    """The whole Fruits-360 test set through `fruitlens explain` in a subprocess (its own peak memory).

    If the run passes ``time_limit_s`` it is stopped; the images finished by then (the parts written) and the
    rate are reported instead, marked ``complete: false``.
    """
    from fruitlens import tables
    from fruitlens.card import ModelCard, write_card

    tmp = Path(tempfile.mkdtemp(prefix="bench_lime_full_"))
    run = tmp / "run"
    run.mkdir()
    train_x, train_y, classes, _ = load_split(FRUITS360, "Training", 20, None)
    model = seed_cnn_like(20, len(classes))
    model.fit(train_x, train_y, epochs=3, batch_size=32, verbose=0)
    model.save(run / "model.keras")
    write_card(run, ModelCard(classes=tuple(classes), image_size=(20, 20), arch="seed_cnn-like"))
    out = tmp / "explain"
    cmd = [sys.executable, "-m", "fruitlens", "explain", "--model", str(run), "--data", str(FRUITS360),
           "--method", "lime", "--out", str(out), "--num-samples", "1000", "--plots", "explanation"]
    if limit:
        cmd += ["--limit", str(limit)]
    start = time.perf_counter()
    try:
        subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=time_limit_s, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        complete = True
    except subprocess.TimeoutExpired:
        complete = False
    wall = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    table = tables.read_table(out / "lime.parquet" if complete else out / "lime.parts")
    n_images = int(table["image_id"].nunique())
    pngs = len(list((out / "lime").glob("*.png")))
    total = limit or 5195
    print(f"full: {n_images} images in {wall:.0f} s ({'complete' if complete else 'stopped'}), "
          f"peak RSS {rss_mib:.0f} MiB, {pngs} PNGs")
    return {"complete": complete, "images": n_images, "seconds": wall, "peak_rss_mib": rss_mib,
            "s_per_image": wall / max(n_images, 1), "projected_seconds_all": wall / max(n_images, 1) * total,
            "rows": len(table), "pngs": pngs, "out_dir": str(out),
            "settings": "20x20 seed_cnn-like (3 epochs on all training images), slic 50, 1000 samples, "
                        "top label, chunk 32; PNGs: boundaries, outline, block (no density plot)"}


def part_demo(n_train: int, n_test: int) -> dict:
    """How often the top supporting superpixel overlaps the sticker that decides the class (vs chance)."""
    from fruitlens import tables
    from fruitlens.batch.engine import explain_images
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.card import ModelCard, write_card
    from fruitlens.config import ExplainOptions
    from fruitlens.lime_options import LimeOptions
    from fruitlens.runs import load_run, model_digest, predict_batches
    from fruitlens.synthetic import write_demo_dataset

    size = 64
    with tempfile.TemporaryDirectory(prefix="bench_lime_demo_") as tmp:
        data = write_demo_dataset(Path(tmp) / "demo", n_train=n_train, n_test=n_test)
        train_x, train_y, classes, _ = load_split(data, "Training", size, None)
        test_x, test_y, _, _ = load_split(data, "Test", size, None)
        model = convnet(size, len(classes))
        model.fit(train_x, train_y, epochs=6, batch_size=32, verbose=0)
        accuracy = float((predict_batches(model, test_x).argmax(1) == test_y).mean())
        run = Path(tmp) / "run"
        run.mkdir()
        model.save(run / "model.keras")
        write_card(run, ModelCard(classes=tuple(classes), image_size=(size, size), arch="seed_cnn-like"))
        rows = rows_from_inputs([data], split="test")
        out = Path(tmp) / "explain"
        saved, card = load_run(run)
        options = ExplainOptions(lime=LimeOptions(num_samples=1000, plots="none"))
        _, seconds = timed(explain_images, saved, card, model_digest(run), rows, out, ["lime"], options,
                           chunk_size=32)
        table = tables.read_table(out / "lime.parquet")
        top = table[table["rank"] == 0]
        best = top.loc[top.groupby("image_id")["weight"].idxmax()]
        hit = float((best["evidence"] > 0).mean())
        chance = float(top.groupby("image_id")["evidence"].apply(lambda e: (e > 0).mean()).mean())
        correct = best["label"].to_numpy() == best["true_label"].to_numpy()
        hit_correct = float((best["evidence"][correct] > 0).mean()) if correct.any() else float("nan")
        print(f"demo: model accuracy {accuracy:.3f}; top superpixel on the sticker for {hit:.1%} of "
              f"{len(best)} images ({hit_correct:.1%} of correctly classified); chance {chance:.1%}")
        return {"images": len(best), "model_accuracy": accuracy, "top_superpixel_on_sticker": hit,
                "top_superpixel_on_sticker_correct_only": hit_correct, "chance": chance, "seconds": seconds,
                "settings": f"{size}x{size} convnet, 6 epochs on {n_train} per class; slic 50; 1000 samples"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,demo", help="comma-separated: speed, demo, full")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--ref-images", type=int, default=3, help="images timed with the reference (slow)")
    parser.add_argument("--images", type=int, default=16, help="images fruitlens explains in one call")
    parser.add_argument("--agree-images", type=int, default=12)
    parser.add_argument("--full-limit", type=int, default=None, help="explain only N test images in part full")
    parser.add_argument("--full-time-limit", type=float, default=4200.0, help="seconds before part full stops")
    args = parser.parse_args()
    if not (FRUITS360 / "Test").is_dir():
        sys.exit(f"Fruits-360 not found at {FRUITS360}")
    parts = args.parts.split(",")
    result: dict = {}

    def save(name: str, value: dict) -> None:
        """Write after each part; parts from earlier invocations stay (each part compares within itself)."""
        file = "lime_full" if parts == ["full"] else "lime"
        path = RESULTS / f"{file}.json"
        if not result and path.is_file():
            result.update({k: v for k, v in json.loads(path.read_text()).items() if k != "machine"})
        result[name] = {**value, "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        "load_average_after": os.getloadavg()}
        write_result(file, result)

    if "speed" in parts:
        for config in args.configs.split(","):
            save(config, part_speed_and_agreement(config, args.ref_images, args.images, args.agree_images))
    if "demo" in parts:
        save("demo", part_demo(100, 25))
    if "full" in parts:
        save("full_test_set", part_full(args.full_limit, args.full_time_limit))


if __name__ == "__main__":
    main()
