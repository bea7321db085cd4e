"""Every heatmap method of fruitlens against every peer that implements it: speed, model passes, map error.

One Keras 3 CNN (``bench_gradcam.demo_model``, trained here on the demo data at 64 x 64), the same images and
targets (the predicted class) for everyone, all rows interleaved in one process: a warm-up round, then
``--repeat`` timed rounds, each round running every row once; best and median seconds per image.

Rows, per method (Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM, gradients, SmoothGrad, Integrated Gradients,
occlusion, RISE):

- ``equal``: fruitlens and every peer at the same settings (those of the issue's table: 25 samples at noise
  0.15, 32 steps from black, an 8 px window with stride 4 on gray, 500 masks of 7 x 7 cells kept with
  probability 0.5 on gray) and the same batch size (256 model inputs per call);
- ``<peer> default``: the peer at its own defaults as its installed source declares them (Xplique 2.0.2:
  ``batch_size=32`` everywhere, SmoothGrad 50 samples at noise 0.2, IG 50 steps, occlusion a 3 px patch with
  stride 3 on black, RISE 4,000 masks on black; tf-keras-vis 0.8.7: smoothing 20 samples at noise 0.20,
  Score-CAM ``batch_size=32``), and fruitlens at the same settings;
- ``a third of xplique default``: fruitlens with a third of the model passes of Xplique's defaults (the issue's
  target: as close to the reference with at most a third of the fastest peer's passes), its last column Xplique's
  default median over this row's.

fruitlens runs through its registry (``fruitlens.registry.resolve(name)`` then ``spec.build(model, options)``
with options made by ``dataclasses.replace`` of the fields that exist), so adaptive options measure themselves:
``--tolerance`` is passed only where the options class has a ``tolerance`` field, and the passes a row spent
are read from ``HeatmapResult.passes`` when the method fills it. Peers' passes are counted from their settings
(model input rows per image; a forward + backward pass counts once; the one forward pass that resolves the
targets is not counted for anyone: targets are given).

Map error: each map and its reference scaled min-max to [0, 1], then ``||map - ref||_2 / ||ref||_2`` per image,
the mean over the images. The reference is the same definition at a high budget: Integrated Gradients 512
steps and SmoothGrad 8,000 samples (fruitlens' own, the peers' maps reduced over colour channels the same way:
``max |.|`` for SmoothGrad, positive part of the sum for IG), occlusion at stride 1 and RISE with 8,000 masks
(by each implementation itself, as their definitions differ: Xplique sums occlusion drops where fruitlens
averages them). Gradients and the CAMs are exact: no budget error; ``vs fruitlens`` gives the distance to
fruitlens' map at the same settings for every peer row.

Peers live outside the project's environment (``pip install --no-deps --target /work/peers ...``, see
``benchmarks/README.md``): ``--peers`` (default ``$FRUITLENS_PEERS`` or ``/work/peers``) is appended to
``sys.path``; a peer that does not import is named in the result and its rows are left out.

Run: ``python -m benchmarks.bench_peers`` (writes ``benchmarks/results/peers.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks._common import RESULTS, machine  # noqa: E402

LAYER = "conv3"
BATCH = 256  # model inputs per call at equal settings (fruitlens' default)
EQUAL = {"smoothgrad": {"samples": 25, "noise": 0.15}, "integrated_gradients": {"steps": 32, "reference": "black"},
         "occlusion": {"window": 8, "stride": 4, "fill": "gray"},
         "rise": {"masks": 500, "cells": 7, "keep": 0.5, "fill": "gray"}}
# the peers' own defaults, read from their installed source (xplique 2.0.2, tf-keras-vis 0.8.7)
XPLIQUE_DEFAULT = {"batch_size": 32, "smoothgrad": {"samples": 50, "noise": 0.2},
                   "integrated_gradients": {"steps": 50, "reference": "black"},
                   "occlusion": {"window": 3, "stride": 3, "fill": "black"},
                   "rise": {"masks": 4000, "cells": 7, "keep": 0.5, "fill": "black"}}
# fruitlens at a third of the model passes of Xplique's defaults (the target): SmoothGrad 16 of 50 copies,
# IG 17 of 50 points, RISE 1,333 of 4,000 masks. Occlusion has no such row: a 3 px window needs a stride of at
# most 3 to cover every pixel (485 passes), and coarse to fine saved nothing on this model (benchmarks/README.md)
XPLIQUE_THIRD = {"smoothgrad": {"samples": 16, "noise": 0.2},
                 "integrated_gradients": {"steps": 17, "reference": "black"},
                 "rise": {"masks": 1333, "cells": 7, "keep": 0.5, "fill": "black"}}
TKV_DEFAULT = {"smoothgrad": {"samples": 20, "noise": 0.20}, "scorecam_batch_size": 32}
REFERENCE = {"smoothgrad": ("samples", 8000), "integrated_gradients": ("steps", 512), "occlusion": ("stride", 1),
             "rise": ("masks", 8000)}
REFERENCE_SEED = 99  # fruitlens' references draw independently of the rows (which use the options' seed, 0)
FILL_VALUE = {"black": 0.0, "gray": 0.5}
CHANNELS = 64  # conv3's channels: Score-CAM's masked passes


@dataclass
class Row:
    """One (method, implementation, settings) line of the table; ``run`` returns (maps (N, H, W), passes (N,))."""

    method: str
    impl: str
    setting: str
    settings: str
    run: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    passes: float | None = None  # per image, from the settings (peers) or the result (fruitlens)
    ref_key: tuple | None = None  # the high-budget reference this row's map is compared with
    pair: str | None = None  # the fruitlens row at the same settings
    times: list[float] = field(default_factory=list)
    maps: np.ndarray | None = None
    error: str | None = None
    ref_err: float | None = None  # error vs the high-budget reference (None: exact method)
    vs_fruitlens: float | None = None

    @property
    def key(self) -> str:
        return f"{self.method} | {self.impl} | {self.setting}"


# ------------------------------------------------------------------------------------------ measures


def unit(maps) -> np.ndarray:
    """(N, H, W) float64, each map scaled min-max to [0, 1] (a constant map becomes zeros)."""
    m = np.asarray(maps, np.float64)
    if m.ndim == 4:
        m = m[..., 0]
    low = m.reshape(len(m), -1).min(1)[:, None, None]
    span = m.reshape(len(m), -1).max(1)[:, None, None] - low
    return np.divide(m - low, span, out=np.zeros_like(m), where=span > 0)


def rel_l2(maps, ref) -> float:
    """Mean over images of ||unit(maps) - unit(ref)||_2 / ||unit(ref)||_2."""
    a, r = unit(maps), unit(ref)
    num = np.sqrt(((a - r) ** 2).reshape(len(a), -1).sum(1))
    den = np.sqrt((r ** 2).reshape(len(r), -1).sum(1))
    err = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)
    return float(np.nanmean(err)) if np.isfinite(err).any() else float("nan")  # a constant reference map: skipped


def channels_abs_max(g) -> np.ndarray:
    g = np.asarray(g)
    return np.abs(g).max(-1) if g.ndim == 4 and g.shape[-1] == 3 else g


def channels_positive_sum(g) -> np.ndarray:
    g = np.asarray(g)
    return np.maximum(g.sum(-1), 0) if g.ndim == 4 and g.shape[-1] == 3 else g


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# ------------------------------------------------------------------------------------------ fruitlens


def fruitlens_options(name: str, fields: dict, tolerance: float | None):
    """(spec, options) of a method or variant name with the ``fields`` that its options class has (and
    ``tolerance`` where it has that field); the fields it lacks are returned for the record."""
    from fruitlens.registry import resolve

    spec, opts = resolve(name)
    have = {f.name for f in dataclasses.fields(opts)}
    wanted = dict(fields)
    if tolerance is not None and "tolerance" in have:
        wanted["tolerance"] = tolerance
    missing = sorted(set(wanted) - have)
    return spec, dataclasses.replace(opts, **{k: v for k, v in wanted.items() if k in have}), missing


def fruitlens_run(model, name: str, fields: dict, x, targets, tolerance: float | None):
    spec, opts, missing = fruitlens_options(name, {"batch_size": BATCH, **fields}, tolerance)
    if missing:
        print(f"  fruitlens {name}: options have no {', '.join(missing)} (left at their defaults)", flush=True)

    def run():
        res = spec.build(model, opts).explain(x, targets)
        passes = getattr(res, "passes", None)
        return np.asarray(res.heatmaps), None if passes is None else np.asarray(passes, np.float64)

    return run


def describe(fields: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in fields.items())


# ------------------------------------------------------------------------------------------ peers


def import_peers(path: str) -> dict[str, str]:
    """Append ``path`` to sys.path (after the project's packages, which win) and try each peer: {name: error}."""
    if path and Path(path).is_dir() and path not in sys.path:
        sys.path.append(path)
    missing = {}
    for name, module in (("xplique", "xplique.attributions"), ("tf-keras-vis", "tf_keras_vis.saliency")):
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - a peer that does not import is named, not fatal
            missing[name] = f"{type(exc).__name__}: {str(exc)[:200]} (peers dir {path!r})"
    return missing


def occlusion_windows_xplique(size: int, patch: int, stride: int) -> int:
    """Patches Xplique 2.0.2's ``Occlusion._get_masks`` makes on a size x size image."""
    return (-(-(size - patch + 1) // stride)) ** 2


def occlusion_windows_fruitlens(size: int, window: int, stride: int) -> int:
    last = max(size - window, 0)
    starts = list(range(0, last + 1, stride))
    return (len(starts) + (starts[-1] != last)) ** 2


def xplique_rows(model, twin, x, targets, sigma_scale: float) -> list[Row]:
    import tensorflow as tf
    import xplique.attributions as xa

    onehot = tf.one_hot(targets, int(model.output_shape[-1]))
    size = x.shape[1]
    rows = []

    def add(method, setting, settings, fn, passes, ref_key=None, pair=None, post=np.asarray):
        rows.append(Row(method, "Xplique 2.0.2", setting, settings,
                        lambda: (post(fn().explain(x, onehot)), None), passes, ref_key, pair))

    for method, cls in (("gradcam", xa.GradCAM), ("gradcam++", xa.GradCAMPP)):
        for setting, bs in (("xplique default", 32), ("equal", BATCH)):
            add(method, setting, f"conv3, batch {bs}", lambda c=cls, b=bs: c(twin, conv_layer=LAYER, batch_size=b), 1,
                pair="equal")
    for setting, bs in (("xplique default", 32), ("equal", BATCH)):
        add("saliency", setting, f"batch {bs}", lambda b=bs: xa.Saliency(twin, batch_size=b), 1, pair="equal")
    for setting, f, bs in (("equal", EQUAL, BATCH), ("xplique default", XPLIQUE_DEFAULT, 32)):
        sg, ig, oc, ri = (f[m] for m in ("smoothgrad", "integrated_gradients", "occlusion", "rise"))
        add("smoothgrad", setting, f"{describe(sg)}, batch {bs}",
            lambda sg=sg, b=bs: xa.SmoothGrad(twin, nb_samples=sg["samples"], noise=sg["noise"] * sigma_scale,
                                              batch_size=b, reducer=None),
            sg["samples"], ("fruitlens", "smoothgrad", sg["noise"]), setting, channels_abs_max)
        add("integrated_gradients", setting, f"{describe(ig)}, batch {bs}",
            lambda ig=ig, b=bs: xa.IntegratedGradients(twin, steps=ig["steps"], baseline_value=0.0, batch_size=b,
                                                       reducer=None),
            ig["steps"], ("fruitlens", "integrated_gradients", "black"), setting, channels_positive_sum)
        add("occlusion", setting, f"{describe(oc)}, batch {bs}",
            lambda oc=oc, b=bs: xa.Occlusion(model, patch_size=oc["window"], patch_stride=oc["stride"],
                                             occlusion_value=FILL_VALUE[oc["fill"]], batch_size=b),
            occlusion_windows_xplique(size, oc["window"], oc["stride"]) + 1,
            ("xplique", "occlusion", oc["window"], oc["fill"]), setting)
        add("rise", setting, f"{describe(ri)}, batch {bs}",
            lambda ri=ri, b=bs: xa.Rise(model, nb_samples=ri["masks"], grid_size=ri["cells"],
                                        preservation_probability=ri["keep"], mask_value=FILL_VALUE[ri["fill"]],
                                        batch_size=b),
            ri["masks"], ("xplique", "rise", ri["cells"], ri["keep"], ri["fill"]), setting)
    return rows


def xplique_reference(model, twin, x, targets, key: tuple, budget: dict) -> np.ndarray:
    import tensorflow as tf
    import xplique.attributions as xa

    onehot = tf.one_hot(targets, int(model.output_shape[-1]))
    _, method, *rest = key
    if method == "occlusion":
        window, fill = rest
        return np.asarray(xa.Occlusion(model, patch_size=window, patch_stride=budget["occlusion"],
                                       occlusion_value=FILL_VALUE[fill], batch_size=BATCH).explain(x, onehot))
    cells, keep, fill = rest
    return np.asarray(xa.Rise(model, nb_samples=budget["rise"], grid_size=cells, preservation_probability=keep,
                              mask_value=FILL_VALUE[fill], batch_size=BATCH).explain(x, onehot))


def tkv_rows(twin, x, targets) -> list[Row]:
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    score = CategoricalScore(list(map(int, targets)))
    cam = {"penultimate_layer": LAYER, "seek_penultimate_conv_layer": False}
    rows = []

    def add(method, setting, settings, fn, passes, ref_key=None, pair="equal"):
        rows.append(Row(method, "tf-keras-vis 0.8.7", setting, settings, lambda: (np.asarray(fn()), None), passes,
                        ref_key, pair))

    for method, cls in (("gradcam", Gradcam), ("gradcam++", GradcamPlusPlus), ("layercam", Layercam)):
        add(method, "default = equal", "conv3, all images in one call (no batch size)",
            lambda c=cls: c(twin)(score, x, **cam), 1)
    for setting, bs in (("tf-keras-vis default", TKV_DEFAULT["scorecam_batch_size"]), ("equal", BATCH)):
        add("scorecam", setting, f"conv3, all {CHANNELS} channels, batch {bs}",
            lambda b=bs: Scorecam(twin)(score, x, batch_size=b, **cam), 1 + CHANNELS)
    add("saliency", "default = equal", "all images in one call", lambda: Saliency(twin)(score, x), 1)
    for setting, sg in (("equal", EQUAL["smoothgrad"]), ("tf-keras-vis default", TKV_DEFAULT["smoothgrad"])):
        add("smoothgrad", setting, f"{describe(sg)} (x value range)",
            lambda sg=sg: Saliency(twin)(score, x, smooth_samples=sg["samples"], smooth_noise=sg["noise"]),
            sg["samples"], ("fruitlens", "smoothgrad", sg["noise"]), setting)
    return rows


# ------------------------------------------------------------------------------------------ fruitlens rows


def fruitlens_rows(model, x, targets, tolerance, with_tkv: bool, with_xplique: bool) -> list[Row]:
    rows = []
    size = x.shape[1]

    def add(method, name, setting, fields, passes, ref_key=None):
        rows.append(Row(method, "fruitlens", setting, describe({**fields, "batch": BATCH}),
                        fruitlens_run(model, name, fields, x, targets, tolerance), passes, ref_key))

    for method in ("gradcam", "gradcam++", "layercam"):
        add(method, method, "equal", {"layer": LAYER}, 1)
    add("scorecam", "scorecam", "equal", {"layer": LAYER}, 1 + CHANNELS)
    add("saliency", "saliency", "equal", {}, 1)
    settings = [("equal", EQUAL)]
    if with_xplique:
        settings += [("xplique default", XPLIQUE_DEFAULT), ("a third of xplique default", XPLIQUE_THIRD)]
    for setting, f in settings:
        sg, ig, oc, ri = (f.get(m) for m in ("smoothgrad", "integrated_gradients", "occlusion", "rise"))
        add("smoothgrad", "smoothgrad", setting, sg, sg["samples"], ("fruitlens", "smoothgrad", sg["noise"]))
        add("integrated_gradients", "integrated_gradients", setting, ig, ig["steps"],
            ("fruitlens", "integrated_gradients", ig["reference"]))
        if oc is not None:
            add("occlusion", "occlusion", setting, oc,
                occlusion_windows_fruitlens(size, oc["window"], oc["stride"]) + 1,
                ("fruitlens", "occlusion", oc["window"], oc["fill"]))
        add("rise", "rise", setting, ri, ri["masks"], ("fruitlens", "rise", ri["cells"], ri["keep"], ri["fill"]))
    if with_tkv:
        sg = TKV_DEFAULT["smoothgrad"]
        add("smoothgrad", "smoothgrad", "tf-keras-vis default", sg, sg["samples"],
            ("fruitlens", "smoothgrad", sg["noise"]))
    return rows


def fruitlens_reference(model, x, targets, key: tuple, budget: dict) -> tuple[np.ndarray, float | None]:
    """The high-budget map of a fruitlens reference key (tolerance 0 where the options are adaptive)."""
    _, method, *rest = key
    fields = {"smoothgrad": lambda: {"noise": rest[0]},
              "integrated_gradients": lambda: {"reference": rest[0], "nodes": "riemann"},  # the trapezoid rule
              "occlusion": lambda: {"window": rest[0], "fill": rest[1]},
              "rise": lambda: {"cells": rest[0], "keep": rest[1], "fill": rest[2]}}[method]()
    fields[REFERENCE[method][0]] = budget[method]
    fields["seed"] = REFERENCE_SEED  # draws of its own: the rows' seed would share the rows' first draws
    try:
        maps, passes = fruitlens_run(model, method, fields, x, targets, 0.0)()
    except ValueError:  # an adaptive option that refuses tolerance 0: its default, with the passes recorded
        maps, passes = fruitlens_run(model, method, fields, x, targets, None)()
    return maps, None if passes is None else float(np.mean(passes))


# ------------------------------------------------------------------------------------------ the run


def timed_rounds(rows: list[Row], repeat: int) -> list[list[float]]:
    """A warm-up round, then ``repeat`` rounds; each runs every row once (interleaved). Returns the load per round."""
    loads = []
    for r in range(repeat + 1):
        loads.append(load())
        for row in rows:
            if row.error:
                continue
            t = time.perf_counter()
            try:
                maps, passes = row.run()
            except Exception as exc:  # noqa: BLE001 - a peer that breaks on Keras 3 is recorded, not fatal
                row.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(f"  {row.key}: {row.error}", flush=True)
                continue
            if r:
                row.times.append(time.perf_counter() - t)
            row.maps = maps
            if passes is not None:
                row.passes = float(np.mean(passes))
        print(f"round {r} ({'warm-up' if r == 0 else 'timed'}) done, load {load()}", flush=True)
    loads.append(load())
    return loads


def train(args):
    import keras

    from benchmarks.bench_gradcam import demo_arrays, demo_model

    x_train, _, y_train = demo_arrays(args.train_per_class, 0)
    x_test, _, y_test = demo_arrays(max(1, -(-args.images // 6)), 1)
    model = demo_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, shuffle=True)
    x = x_test[np.random.default_rng(0).permutation(len(x_test))[:args.images]]
    probs = np.asarray(model.predict_on_batch(x))
    return model, x, probs.argmax(1).astype(np.int32)


def table(rows: list[Row], n: int) -> str:
    fl = {(r.method, r.setting): r for r in rows if r.impl == "fruitlens" and r.times}
    xd = {r.method: r for r in rows if r.impl.startswith("Xplique") and r.setting == "xplique default"}
    lines = ["| method | implementation | settings | s / image, best | median | passes / image | error vs reference "
             "| vs fruitlens | fruitlens faster (median) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.times:
            lines.append(f"| {r.method} | {r.impl} | {r.setting}: {r.settings} | failed: {r.error} | | | | | |")
            continue
        best, med = min(r.times) / n, statistics.median(r.times) / n
        mine = fl.get((r.method, r.pair or r.setting)) if r.impl != "fruitlens" else None
        ratio = f"{statistics.median(r.times) / statistics.median(mine.times):.2f}x" if mine else ""
        peer = xd.get(r.method) if r.setting == "a third of xplique default" else None
        if peer is not None and peer.times:  # the target's ratio: Xplique at its defaults over this row
            ratio = f"Xplique default / this: {statistics.median(peer.times) / statistics.median(r.times):.2f}x"
        err = "exact" if r.ref_err is None else f"{r.ref_err:.3f}"
        vs = "" if r.vs_fruitlens is None else f"{r.vs_fruitlens:.3f}"
        passes = "" if r.passes is None else f"{r.passes:.0f}"
        lines.append(f"| {r.method} | {r.impl} | {r.setting}: {r.settings} | {best:.4f} | {med:.4f} | {passes} | {err} "
                     f"| {vs} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds after the warm-up round (>= 3)")
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--peers", default=os.environ.get("FRUITLENS_PEERS", "/work/peers"))
    parser.add_argument("--tolerance", type=float, default=None,
                        help="passed to fruitlens options that have a tolerance field (default: their own)")
    parser.add_argument("--reference-scale", type=float, default=1.0,
                        help="multiplies the reference budgets (IG 512, SmoothGrad/RISE 8,000; tests use less)")
    parser.add_argument("--reference", action="append", default=[],
                        help="METHOD=N: that method's reference budget (default IG 512, SmoothGrad/RISE 8000)")
    parser.add_argument("--reference-images", type=int, default=None,
                        help="errors on the first N images only (0: no references; default all)")
    parser.add_argument("--reference-cache", default="",
                        help="an .npz keeping the references between runs (keyed by model weights, images, budgets)")
    parser.add_argument("--methods", default="", help="comma-separated subset (default all)")
    parser.add_argument("--out", default=str(RESULTS / "peers.json"))
    args = parser.parse_args(argv)
    start_load, started = load(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    missing = import_peers(args.peers)
    model, x, targets = train(args)
    from benchmarks.bench_gradcam import logits_copy

    twin = logits_copy(model)
    ranges = x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))
    sigma_scale = float(np.median(ranges))  # Xplique's noise is absolute, fruitlens' and tf-keras-vis' x range
    rows = fruitlens_rows(model, x, targets, args.tolerance, "tf-keras-vis" not in missing, "xplique" not in missing)
    if "xplique" not in missing:
        rows += xplique_rows(model, twin, x, targets, sigma_scale)
    if "tf-keras-vis" not in missing:
        rows += tkv_rows(twin, x, targets)
    if args.methods:
        rows = [r for r in rows if r.method in args.methods.split(",")]
    order = ["gradcam", "gradcam++", "layercam", "scorecam", "saliency", "smoothgrad", "integrated_gradients",
             "occlusion", "rise"]
    rows.sort(key=lambda r: (order.index(r.method), r.impl != "fruitlens", r.setting != "equal"))
    loads = timed_rounds(rows, args.repeat)
    budget = {m: max(1, int(round(b * args.reference_scale))) if m != "occlusion" else b
              for m, (_, b) in REFERENCE.items()}
    for item in args.reference:
        method, _, value = item.partition("=")
        if method not in budget or not value.isdigit():
            raise SystemExit(f"--reference {item!r}: expected METHOD=N with METHOD one of {', '.join(budget)}")
        budget[method] = int(value)
    k = len(x) if args.reference_images is None else min(args.reference_images, len(x))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(), "started": started, "images": len(x), "repeat": args.repeat,
        "load_before": start_load, "load_per_round": loads,
        "image_value_ranges": [round(float(v), 3) for v in ranges], "xplique_noise_scale": sigma_scale,
        "peers_dir": args.peers, "peers_missing": missing, "tolerance": args.tolerance,
        "reference_budgets": budget, "reference_images": k,
        "error_measure": "mean over the first reference_images images of ||unit(map) - unit(ref)||_2 / "
                         "||unit(ref)||_2, unit = min-max per map",
    }

    def write(final: bool):
        result.update({
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "complete": final,
            "load_after": load(),
            "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "rows": [{"method": r.method, "impl": r.impl, "setting": r.setting, "settings": r.settings,
                      "seconds_per_image_best": min(r.times) / len(x) if r.times else None,
                      "seconds_per_image_median": statistics.median(r.times) / len(x) if r.times else None,
                      "seconds_all": r.times, "passes_per_image": r.passes, "error_vs_reference": r.ref_err,
                      "reference": None if r.ref_key is None else " ".join(map(str, r.ref_key)),
                      "vs_fruitlens": r.vs_fruitlens, "error": r.error} for r in rows],
            "table_md": table(rows, len(x)),
        })
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", flush=True)

    write(False)  # the timings are kept even if the references do not finish
    refs, ref_passes = {}, {}
    cache = Path(args.reference_cache) if args.reference_cache else None
    xr, tr = x[:k], targets[:k]
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()) + xr.tobytes()
                            + json.dumps(budget, sort_keys=True).encode()).hexdigest()[:16]
    stored = dict(np.load(cache)) if cache and cache.exists() else {}
    for r in rows if k else []:
        if r.ref_key is None or r.maps is None or r.ref_key in refs:
            continue
        name = digest + " " + " ".join(map(str, r.ref_key))
        if name in stored:  # the same model weights, images and budgets: the same reference
            refs[r.ref_key] = stored[name]
            continue
        t = time.perf_counter()
        if r.ref_key[0] == "fruitlens":
            refs[r.ref_key], ref_passes[r.ref_key] = fruitlens_reference(model, xr, tr, r.ref_key, budget)
        else:
            refs[r.ref_key] = xplique_reference(model, twin, xr, tr, r.ref_key, budget)
        stored[name] = np.asarray(refs[r.ref_key])
        print(f"reference {name}: {time.perf_counter() - t:.1f} s, load {load()}", flush=True)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **stored)
    fl = {(r.method, r.setting): r for r in rows if r.impl == "fruitlens" and r.maps is not None}
    for r in rows:
        if r.maps is None:
            continue
        if r.ref_key in refs:
            r.ref_err = rel_l2(r.maps[:k], refs[r.ref_key])
        mine = fl.get((r.method, r.pair)) if r.impl != "fruitlens" and r.pair else None
        if mine is not None:
            r.vs_fruitlens = rel_l2(r.maps, mine.maps)
    result["reference_passes_fruitlens"] = {" ".join(map(str, k)): v for k, v in ref_passes.items()}
    write(True)
    print(result["table_md"], flush=True)
    return result


if __name__ == "__main__":
    main()
