"""Grad-CAM, filter patterns and faithfulness, side by side with the per-image / per-filter references.

1. Grad-CAM: fruitlens' batched ``gradcam`` against the keras-io example (``make_gradcam_heatmap``, one
   image at a time) adapted to logits (run on a copy of the model whose last Dense has no softmax, as the
   example does by setting ``activation = None``), over a batch of 256: maximum difference and speed.
2. Filter patterns: 16 filters as one batch against a per-filter loop with the same steps (the same
   fruitlens ascent called per filter, and the keras-io style loop of one compiled step per iteration),
   and each pattern's activation against a gray image's.
3. Demo dataset: a small CNN trained here for about a minute of CPU; the share of test images whose
   Grad-CAM / Grad-CAM++ / CAM peak falls on the sticker (pointing game), and deletion / insertion AUCs
   for Grad-CAM, a random pixel order, the sticker mask itself (an oracle), and LIME when
   ``fruitlens.explain.lime`` exists.

Run: ``python -m benchmarks.bench_gradcam`` (writes ``benchmarks/results/gradcam.json``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from fruitlens.explain.faithfulness import deletion_insertion, pointing_game, saliency_from_superpixels  # noqa: E402
from fruitlens.explain.filters import filter_activation, filter_patterns  # noqa: E402
from fruitlens.explain.gradcam import CAM, GradCAM, GradCAMPlusPlus  # noqa: E402
from fruitlens.explain.keras_graph import find_layer  # noqa: E402
from fruitlens.synthetic import CLASSES, make_sample  # noqa: E402

SIZE = 64


# ------------------------------------------------------------------------------------ the references


def make_gradcam_heatmap(img_array, model, last_conv_layer_name, pred_index=None):
    """keras-io ``grad_cam.py`` (F. Chollet), verbatim except for the comments."""
    grad_model = keras.models.Model(model.inputs, [model.get_layer(last_conv_layer_name).output, model.output])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        if pred_index is None:
            pred_index = tf.argmax(preds[0])
        class_channel = preds[:, pred_index]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    last_conv_layer_output = last_conv_layer_output[0]
    heatmap = last_conv_layer_output @ pooled_grads[..., tf.newaxis]
    heatmap = tf.squeeze(heatmap)
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy()


def logits_copy(model):
    """The example's ``model.layers[-1].activation = None``, on a copy so the benchmarked model is untouched."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.layers[-1].activation = None
    return twin


def keras_example_filters(model, layer_name, filters, steps, lr, size, seed=0):
    """keras-io ``visualizing_what_convnets_learn.py`` loop: one filter at a time, one compiled step per
    iteration, l2-normalised gradient; started from the same gray noise and clipped to [0, 1] like ours."""
    from fruitlens.explain.filters import gray_noise

    extractor = keras.Model(model.inputs, model.get_layer(layer_name).output)

    @tf.function
    def gradient_ascent_step(img, filter_index, learning_rate):
        with tf.GradientTape() as tape:
            tape.watch(img)
            activation = extractor(img)
            loss = tf.reduce_mean(activation[:, 2:-2, 2:-2, filter_index])
        grads = tape.gradient(loss, img)
        grads = tf.math.l2_normalize(grads)
        return tf.clip_by_value(img + learning_rate * grads, 0.0, 1.0)

    out = []
    for f in filters:
        img = tf.constant(gray_noise([f], size, seed))
        for _ in range(steps):
            img = gradient_ascent_step(img, tf.constant(int(f)), tf.constant(lr, tf.float32))
        out.append(img.numpy()[0])
    return np.stack(out)


# ------------------------------------------------------------------------------------ demo data and model


def demo_arrays(n_per_class: int, split: int, seed: int = 0):
    """Demo images at SIZE x SIZE with their sticker masks, generated in memory (same generator as on disk)."""
    from PIL import Image

    images, masks, labels = [], [], []
    for ci, label in enumerate(CLASSES):
        for i in range(n_per_class):
            s = make_sample(label, np.random.default_rng([seed, ci, split, i]))
            images.append(np.asarray(Image.fromarray(s.image).resize((SIZE, SIZE), Image.Resampling.BILINEAR)))
            masks.append(np.asarray(Image.fromarray(s.mask).resize((SIZE, SIZE), Image.Resampling.NEAREST)))
            labels.append(ci)
    return np.stack(images).astype(np.float32) / 255.0, np.stack(masks).astype(bool), np.array(labels)


def demo_model(seed=0):
    """A small functional CNN ending in GAP + Dense(softmax), so Grad-CAM, Grad-CAM++ and CAM all apply."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="demo_cnn")


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=150)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    result: dict = {}

    # ---- the demo model (trained first: every part uses it)
    x_train, _, y_train = demo_arrays(args.train_per_class, 0)
    x_test, m_test, y_test = demo_arrays(args.test_per_class, 1)
    model = demo_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t
    probs = np.asarray(model(x_test, training=False))
    accuracy = float((probs.argmax(1) == y_test).mean())
    result["demo_model"] = {"train_images": len(x_train), "test_images": len(x_test), "image_size": SIZE,
                            "epochs": args.epochs, "train_seconds": round(train_s, 1),
                            "test_accuracy": round(accuracy, 4)}
    print("demo model", result["demo_model"])

    # ---- 1. Grad-CAM against the keras-io example, 256 images
    batch = np.concatenate([x_test, x_train])[:256]
    layer = find_layer(model).path
    twin = logits_copy(model)
    gradcam = GradCAM(model, batch_size=256)
    gradcam.explain(batch[:8], upsample=False)  # compile (the example has nothing to compile)
    make_gradcam_heatmap(batch[:1], twin, layer)
    ours_s, ours = timed(lambda: gradcam.explain(batch, upsample=False), repeat=3)
    grad_model = keras.models.Model(twin.inputs, [twin.get_layer(layer).output, twin.output])

    def hoisted(img):  # the example with its sub-model built once, not per call (faster; same maths)
        with tf.GradientTape() as tape:
            conv, preds = grad_model(img)
            channel = preds[:, tf.argmax(preds[0])]
        grads = tape.gradient(channel, conv)
        heat = tf.squeeze(conv[0] @ tf.reduce_mean(grads, axis=(0, 1, 2))[..., None])
        return (tf.maximum(heat, 0) / tf.reduce_max(heat)).numpy()

    hoisted(batch[:1])
    ref_s, ref = timed(lambda: np.stack([make_gradcam_heatmap(b[None], twin, layer) for b in batch]), repeat=2)
    hoist_s, _ = timed(lambda: np.stack([hoisted(b[None]) for b in batch]), repeat=2)
    nan_ref = int(np.isnan(ref).any(axis=(1, 2)).sum())
    diff = np.abs(np.nan_to_num(ref) - ours.heatmaps).max(axis=(1, 2))
    up_s, _ = timed(lambda: gradcam.explain(batch), repeat=3)
    result["gradcam_vs_keras_example"] = {
        "images": len(batch), "layer": layer, "map_size": list(ours.heatmaps.shape[1:]),
        "max_abs_diff": float(diff.max()), "images_within_1e-4": int((diff <= 1e-4).sum()),
        "reference_nan_maps": nan_ref,
        "fruitlens_s": round(ours_s, 4), "fruitlens_upsampled_s": round(up_s, 4),
        "keras_example_s": round(ref_s, 3), "keras_example_hoisted_s": round(hoist_s, 3),
        "speedup_vs_example": round(ref_s / ours_s, 1), "speedup_vs_hoisted": round(hoist_s / ours_s, 1),
    }
    print("gradcam", result["gradcam_vs_keras_example"])

    # ---- 2. filter patterns: 16 at once against per-filter loops
    filters = np.arange(16)
    steps, lr = 30, 10.0
    # the same step size: an l2-normalised step of lr_l2 equals an RMS-normalised one of lr/255 per pixel
    lr_l2 = lr / 255.0 * np.sqrt(SIZE * SIZE * 3)
    for name in ("conv2", "conv3"):
        filter_patterns(model, name, filters[:2], steps=2)  # compile
        filter_patterns(model, name, filters[:1], steps=2)
        # best of 5 each, interleaved: the machine is shared, the minimum is the least disturbed run
        batch_s, loop_s = float("inf"), float("inf")
        for _ in range(5):
            t, patterns = timed(lambda n=name: filter_patterns(model, n, filters, steps=steps, lr=lr))
            batch_s = min(batch_s, t)
            t, looped = timed(lambda n=name: np.concatenate(
                [filter_patterns(model, n, [f], steps=steps, lr=lr) for f in filters]))
            loop_s = min(loop_s, t)
        keras_example_filters(model, name, [0], 2, lr_l2, (SIZE, SIZE))  # compile
        ex_s, _ = timed(lambda n=name: keras_example_filters(model, n, filters, steps, lr_l2, (SIZE, SIZE)), repeat=2)
        from fruitlens.explain.activations import layer_activations

        test_acts = layer_activations(model, x_test, [name])[name][..., filters]
        dead = test_acts.max(axis=(0, 1, 2)) <= 0  # filters that are zero on every test image
        act = filter_activation(model, name, patterns, filters)
        gray = filter_activation(model, name, np.full_like(patterns, 0.5), filters)
        result[f"filters_{name}"] = {
            "filters": len(filters), "steps": steps,
            "batched_s": round(batch_s, 3), "per_filter_loop_s": round(loop_s, 3),
            "keras_example_loop_s": round(ex_s, 3),
            "speedup_vs_loop": round(loop_s / batch_s, 2), "speedup_vs_keras_example": round(ex_s / batch_s, 2),
            "batch_vs_loop_max_abs_diff": float(np.abs(patterns - looped).max()),
            "activation_pattern_mean": float(act.mean()), "activation_gray_mean": float(gray.mean()),
            "min_pattern_minus_gray": float((act - gray).min()),
            "patterns_above_gray": int((act > gray).sum()),
            "dead_filters": int(dead.sum()), "live_patterns_above_gray": int((act > gray)[~dead].sum()),
            "median_ratio_pattern_to_gray": float(np.median(act / np.maximum(gray, 1e-6))),
        }
        print(name, result[f"filters_{name}"])

    # ---- 3. demo dataset: pointing game and deletion/insertion
    targets = y_test
    correct = probs.argmax(1) == y_test
    point = {}
    heat = {}
    for cls in (GradCAM, GradCAMPlusPlus, CAM):
        res = cls(model).explain(x_test, targets)
        heat[cls.method] = res.heatmaps
        hits = pointing_game(res.heatmaps, m_test)
        point[cls.method] = {"all": round(float(hits.mean()), 4), "correct_predictions": round(float(
            hits[correct].mean()), 4), "tolerance_2px": round(float(pointing_game(res.heatmaps, m_test,
                                                                                  tolerance=2).mean()), 4)}
    sticker_share = float(m_test.mean())
    rng = np.random.default_rng(0)
    saliencies = {"gradcam": heat["gradcam"], "gradcam++": heat["gradcam++"],
                  "random": rng.random(m_test.shape).astype(np.float32),
                  "sticker_mask_oracle": m_test.astype(np.float32)}
    lime_note = "fruitlens.explain.lime not on this branch: LIME left out"
    try:
        from fruitlens.explain.lime import explain_lime
        from fruitlens.lime_options import LimeOptions

        t = time.perf_counter()
        lime = explain_lime(model, x_test, LimeOptions.reference(num_samples=500), labels=targets, seed=0)
        weights = [r.weights[int(t_)] for r, t_ in zip(lime, targets, strict=True)]
        saliencies["lime"] = saliency_from_superpixels(np.stack([r.segments for r in lime]), weights)
        lime_note = f"LIME, 500 samples, {time.perf_counter() - t:.1f} s"
    except ImportError:
        pass
    faith = {}
    for name, sal in saliencies.items():
        t = time.perf_counter()
        f = deletion_insertion(model, x_test, sal, targets, steps=20, baseline="mean")
        faith[name] = {"deletion_auc": round(float(f.deletion_auc.mean()), 4),
                       "insertion_auc": round(float(f.insertion_auc.mean()), 4),
                       "seconds": round(time.perf_counter() - t, 2)}
        faith[name]["_per_image"] = f.deletion_auc
    for name in faith:
        faith[name]["images_deletion_below_random"] = int(
            (faith[name]["_per_image"] < faith["random"]["_per_image"]).sum())
    for name in faith:
        del faith[name]["_per_image"]
    result["demo_explanations"] = {"images": len(x_test), "sticker_pixel_share": round(sticker_share, 4),
                                   "pointing_game": point, "faithfulness_steps": 20, "baseline": "mean",
                                   "deletion_insertion": faith, "lime": lime_note}
    print("demo", result["demo_explanations"])

    # ---- the batch method's throughput (rows, captioned PNGs on the photo, faithfulness) on 64 images
    import pandas as pd
    from PIL import Image

    from fruitlens.batch.methods import run_method
    from fruitlens.card import ModelCard
    from fruitlens.layout import ExplainLayout
    from fruitlens.method_options import CamOptions

    def explain_chunk(model, card, images, rows, out):
        frame, draw = run_method("gradcam", model, card, images, rows, CamOptions(), ExplainLayout(out))
        draw()
        return frame

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(x_test[:64]):
            p = Path(tmp) / f"{i}.png"
            Image.fromarray((img * 255).astype(np.uint8)).save(p)
            paths.append(str(p))
        rows = pd.DataFrame({"image_id": [f"img{i}" for i in range(64)], "path": paths,
                             "label": [CLASSES[i] for i in y_test[:64]], "mask_path": None})
        card = ModelCard(classes=CLASSES, image_size=(SIZE, SIZE), arch="bench")
        explain_chunk(model, card, x_test[:8], rows[:8], Path(tmp) / "warm")
        chunk_s, _ = timed(lambda: explain_chunk(model, card, x_test[:64], rows, Path(tmp) / "out"))
    result["explain_chunk"] = {"images": 64, "seconds": round(chunk_s, 2), "images_per_s": round(64 / chunk_s, 1)}
    print("explain_chunk", result["explain_chunk"])
    write_result("gradcam", result)


if __name__ == "__main__":
    main()
