"""Score-CAM, Layer-CAM, gradients, SmoothGrad, Integrated Gradients, occlusion, RISE side by side with peers.

One Keras 3 CNN trained here on the demo data (64 x 64, 6 classes), one run, the same images and layer:

1. Speed: seconds per image of each fruitlens method and of each peer that runs beside fruitlens
   (tf-keras-vis 0.8.7: Scorecam, Layercam, Saliency with and without smoothing; Xplique 2.0.2:
   IntegratedGradients, Occlusion, Rise), after one warm-up call each. Peers get a copy of the model whose
   last Dense has no softmax (their gradients and Score-CAM's softmax then mean the same as ours).
2. Agreement where the algorithm is deterministic: the max abs difference between fruitlens' map and the
   peer's, each scaled to [0, 1] by its own maximum (``max_abs_diff``), and each scaled min-max as
   tf-keras-vis' ``normalize`` does (``max_abs_diff_minmax``), at the layer's resolution for the CAMs
   (before either side upsamples) and at the input for pixel methods.
3. Faithfulness on the demo test images at equal model calls: deletion / insertion AUC (mean baseline, 20
   steps) and the pointing game (peak on the sticker) of occlusion, RISE and SHAP's partition explainer
   (blur masker, ``max_evals`` = the same number of model calls per image); occlusion (12 px window, stride
   6) uses fewer calls. ``pointing_game_any_peak`` counts a hit when any maximal pixel is on the evidence.

Run: ``python -m benchmarks.bench_methods`` (writes ``benchmarks/results/methods.json``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import write_result  # noqa: E402
from benchmarks.bench_gradcam import demo_arrays, demo_model, logits_copy  # noqa: E402
from fruitlens.explain.faithfulness import deletion_insertion, pointing_game  # noqa: E402
from fruitlens.explain.gradcam import LayerCAM, ScoreCAM  # noqa: E402
from fruitlens.explain.gradients import IntegratedGradients, Saliency, SmoothGrad  # noqa: E402
from fruitlens.explain.perturbation import RISE, Occlusion  # noqa: E402

LAYER = "conv3"


def best_of(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def unit(maps) -> np.ndarray:
    m = np.maximum(np.asarray(maps, np.float32), 0)
    if m.ndim == 4:
        m = m[..., 0]
    top = m.reshape(len(m), -1).max(1)[:, None, None]
    return np.divide(m, top, out=np.zeros_like(m), where=top > 0)


def unit_minmax(maps) -> np.ndarray:
    """Each map minus its minimum, divided by its range (tf-keras-vis' ``normalize``)."""
    m = np.asarray(maps, np.float32)
    if m.ndim == 4:
        m = m[..., 0]
    low = m.reshape(len(m), -1).min(1)[:, None, None]
    span = m.reshape(len(m), -1).max(1)[:, None, None] - low
    return np.divide(m - low, span, out=np.zeros_like(m), where=span > 0)


def peers(model, twin, x, targets, n_masks: int) -> dict:
    """{name: (callable returning maps, label)} of the peers that import; a failure is recorded, not raised."""
    import tensorflow as tf

    out: dict = {}
    try:
        from tf_keras_vis.layercam import Layercam
        from tf_keras_vis.saliency import Saliency as TkvSaliency
        from tf_keras_vis.scorecam import Scorecam
        from tf_keras_vis.utils.scores import CategoricalScore

        score = CategoricalScore(list(map(int, targets)))
        out["scorecam"] = ("tf-keras-vis Scorecam", lambda: Scorecam(twin)(
            score, x, penultimate_layer=LAYER, seek_penultimate_conv_layer=False, expand_cam=False,
            batch_size=256))
        out["layercam"] = ("tf-keras-vis Layercam", lambda: Layercam(twin)(
            score, x, penultimate_layer=LAYER, seek_penultimate_conv_layer=False, expand_cam=False))
        out["saliency"] = ("tf-keras-vis Saliency", lambda: TkvSaliency(twin)(score, x))
        out["smoothgrad"] = ("tf-keras-vis Saliency(smooth_samples=25)", lambda: TkvSaliency(twin)(
            score, x, smooth_samples=25, smooth_noise=0.15))
    except Exception as exc:  # noqa: BLE001 - a peer that does not import is reported, not fatal
        out["tf-keras-vis"] = ("import failed", repr(exc))
    try:
        from xplique.attributions import IntegratedGradients as XIG
        from xplique.attributions import Occlusion as XOcc
        from xplique.attributions import Rise as XRise

        onehot = tf.one_hot(targets, int(model.output_shape[-1]))
        out["integrated_gradients"] = ("Xplique IntegratedGradients", lambda: XIG(
            twin, steps=32, baseline_value=0.0, batch_size=256).explain(x, onehot))
        out["occlusion"] = ("Xplique Occlusion", lambda: XOcc(
            model, patch_size=8, patch_stride=4, occlusion_value=0.5, batch_size=256).explain(x, onehot))
        out["rise"] = ("Xplique Rise", lambda: XRise(
            model, nb_samples=n_masks, grid_size=7, preservation_probability=0.5, batch_size=256).explain(x, onehot))
    except Exception as exc:  # noqa: BLE001
        out["xplique"] = ("import failed", repr(exc))
    return out


def ours(model, n_masks: int) -> dict:
    return {
        "scorecam": lambda x, t: ScoreCAM(model, LAYER).explain(x, t, upsample=False).heatmaps,
        "layercam": lambda x, t: LayerCAM(model, LAYER).explain(x, t, upsample=False).heatmaps,
        "saliency": lambda x, t: Saliency(model).explain(x, t).heatmaps,
        # the fixed budgets this benchmark's figures were measured at (the adaptive defaults: bench_adaptive_gradients)
        "smoothgrad": lambda x, t: SmoothGrad(model, samples=25, noise=0.15, tolerance=0, sampling="iid",
                                              round_size=26).explain(x, t).heatmaps,
        "integrated_gradients": lambda x, t: IntegratedGradients(model, steps=32, tolerance=0, nodes="riemann"
                                                                 ).explain(x, t).heatmaps,
        "occlusion": lambda x, t: Occlusion(model, window=8, stride=4, fill="gray").explain(x, t).heatmaps,
        "rise": lambda x, t: RISE(model, masks=n_masks, cells=7).explain(x, t).heatmaps,
    }


DETERMINISTIC = {"scorecam", "layercam", "saliency", "integrated_gradients", "occlusion"}

# model passes per image each method makes (the peers make the same): forward-only, or forward and backward
# (Layer-CAM's backward pass stops at its layer: cheaper than one to the input, so it has no floor here)
PASSES = {"scorecam": ("forward", 64), "saliency": ("backward", 1),
          "smoothgrad": ("backward", 25), "integrated_gradients": ("backward", 32), "occlusion": ("forward", 226),
          "rise": ("forward", None)}  # RISE: one per mask


def _passes_seconds(call, kind: str, inputs: np.ndarray, t: np.ndarray, size: int, repeat: int) -> float:
    def run():
        for i in range(0, len(inputs), size):
            call(kind, inputs[i:i + size], t[i:i + size]).numpy()

    run()  # trace
    return best_of(run, repeat)[0]


def floors(model, twin, x, targets, n_masks: int, repeat: int) -> dict:
    """Seconds for len(x) images of the bare model passes each method needs and nothing else: one compiled
    call per batch on inputs made beforehand, the best of batch sizes 128, 256 and 512. No implementation of
    a method can be faster at the same number of passes, so peer time / floor bounds any speed-up over a peer.
    """
    import tensorflow as tf

    forward = tf.function(lambda b: model(b, training=False))

    @tf.function
    def backward(b, t):
        with tf.GradientTape() as tape:
            tape.watch(b)
            score = tf.reduce_sum(tf.gather(twin(b, training=False), t, batch_dims=1))
        return tape.gradient(score, b)

    def call(kind: str, inputs: np.ndarray, t: np.ndarray):
        b = tf.constant(inputs)
        return forward(b) if kind == "forward" else backward(b, tf.constant(t))

    rng = np.random.default_rng(0)
    out, timed = {}, {}
    for name, (kind, per_image) in PASSES.items():
        count = len(x) * (per_image or n_masks)
        if (kind, count) not in timed:
            inputs = np.clip(x[rng.integers(0, len(x), count)] + rng.normal(0, 0.1, (count, *x.shape[1:])), 0, 1
                             ).astype(np.float32)
            t = np.tile(targets, count // len(x) + 1)[:count].astype(np.int32)
            timed[(kind, count)] = min(_passes_seconds(call, kind, inputs, t, size, repeat) for size in (128, 256, 512))
        out[name] = timed[(kind, count)]
    return out


def part_speed(model, x, targets, n_masks: int, repeat: int) -> dict:
    twin = logits_copy(model)
    mine = ours(model, n_masks)
    theirs = peers(model, twin, x, targets, n_masks)
    floor = floors(model, twin, x, targets, n_masks, repeat)
    rows = {}
    for name, fn in mine.items():
        fn(x[:2], targets[:2])  # compile
        ours_s, heat = best_of(lambda f=fn: f(x, targets), repeat)
        row = {"fruitlens_s_per_image": ours_s / len(x)}
        if name in floor:
            row |= {"floor_s_per_image": floor[name] / len(x), "fruitlens_over_floor": round(ours_s / floor[name], 2)}
        if name in theirs and callable(theirs[name][1]):
            label, peer = theirs[name]
            try:
                peer()  # warm-up
                peer_s, got = best_of(peer, repeat)
                row |= {"peer": label, "peer_s_per_image": peer_s / len(x), "speedup": round(peer_s / ours_s, 2)}
                if name in floor:
                    row["peer_over_floor"] = round(peer_s / floor[name], 2)
                if name in DETERMINISTIC:
                    got = np.asarray(got)
                    if name == "integrated_gradients" and got.ndim == 4 and got.shape[-1] == 3:
                        got = got.sum(-1)
                    row["max_abs_diff"] = float(np.abs(unit(got) - unit(heat)).max())
                    row["max_abs_diff_minmax"] = float(np.abs(unit_minmax(got) - unit_minmax(heat)).max())
            except Exception as exc:  # noqa: BLE001 - a peer that breaks on Keras 3 is reported
                row |= {"peer": label, "peer_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        rows[name] = row
        print(name, row, flush=True)
    rows["peer_imports"] = {k: v[1] for k, v in theirs.items() if not callable(v[1])}
    return rows


def any_peak(heat: np.ndarray, masks: np.ndarray) -> float:
    """The pointing game where a map with tied maxima (SHAP's partition values are constant over blocks)
    hits when any of its maximal pixels lies on the evidence; argmax alone takes the first, top-left one."""
    top = heat.reshape(len(heat), -1).max(1)[:, None, None]
    return float(((heat >= top) & masks & (top > 0)).any(axis=(1, 2)).mean())


def part_faithfulness(model, x, masks, targets, n_masks: int) -> dict:
    """Occlusion, RISE, SHAP partition (blur) at ``n_masks`` model calls per image."""
    res = {}
    maps = {"rise": RISE(model, masks=n_masks, cells=7, fill="blur").explain(x, targets).heatmaps}
    windows = Occlusion(model, window=12, stride=6, fill="blur").windows(x.shape[1:3])
    maps["occlusion"] = Occlusion(model, window=12, stride=6, fill="blur").explain(x, targets).heatmaps
    calls = {"rise": n_masks, "occlusion": len(windows) + 1}
    try:
        import shap

        masker = shap.maskers.Image("blur(8,8)", x[0].shape)
        explainer = shap.Explainer(lambda b: model.predict_on_batch(b), masker)
        t = time.perf_counter()
        vals = np.stack([explainer(x[i:i + 1], max_evals=n_masks, batch_size=256,
                                   outputs=[int(targets[i])], silent=True).values[0, ..., 0]
                         for i in range(len(x))])
        res["shap_s_per_image"] = (time.perf_counter() - t) / len(x)
        maps["shap_partition"] = vals.sum(-1)
        calls["shap_partition"] = n_masks
    except Exception as exc:  # noqa: BLE001
        res["shap_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    for name, heat in maps.items():
        curves = deletion_insertion(model, x, heat, targets, steps=20, baseline="mean")
        res[name] = {"model_calls_per_image": calls[name], "deletion_auc": float(curves.deletion_auc.mean()),
                     "insertion_auc": float(curves.insertion_auc.mean()),
                     "pointing_game": float(pointing_game(heat, masks).mean()),
                     "pointing_game_any_peak": any_peak(heat, masks)}
        print(name, res[name], flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=80)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=32, help="images of the speed part")
    parser.add_argument("--masks", type=int, default=500, help="RISE masks = SHAP max_evals")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    x_train, _, y_train = demo_arrays(args.train_per_class, 0)
    x_test, m_test, y_test = demo_arrays(args.test_per_class, 1)
    model = demo_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, shuffle=True)
    probs = np.asarray(model.predict_on_batch(x_test))
    result = {"demo_model": {"train_images": len(x_train), "test_images": len(x_test), "epochs": args.epochs,
                             "test_accuracy": float((probs.argmax(1) == y_test).mean())},
              "note": "the load on the machine during the run is written down in benchmarks/README.md"}
    print(result["demo_model"], flush=True)
    x = np.concatenate([x_test, x_train])[:args.images]
    targets = np.asarray(model.predict_on_batch(x)).argmax(1).astype(np.int32)
    result["speed"] = part_speed(model, x, targets, args.masks, args.repeat)
    result["faithfulness"] = part_faithfulness(model, x_test, m_test, probs.argmax(1).astype(np.int32), args.masks)
    write_result("methods", result)


if __name__ == "__main__":
    main()
