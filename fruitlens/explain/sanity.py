"""Sanity checks of explanations: the model parameter randomisation test (Adebayo et al., NeurIPS 2018).

An explanation of a model's prediction should depend on the model. The cascading randomisation test
re-initialises the model's weighted layers one after the other, from the top (the classifier) down to the
first convolution, explains the same images for the same target classes after each step and measures how
similar each explanation stays to the original one:

- heatmaps (Grad-CAM, Grad-CAM++, any heatmap explainer): Spearman rank correlation of the pixels and SSIM
  (``skimage.metrics.structural_similarity``) of the maps;
- LIME: Spearman rank correlation of the superpixel weights and the overlap of the top-5 superpixels, with the
  same superpixels and the same samples (seed) at every step.

An explanation that barely changes when the model is randomised explains the image, not the model: it fails.
Everything runs on a copy of the model (``keras.models.clone_model`` + its weights; the caller's model is
never touched), re-initialised from a seeded generator. The verdict rule and its thresholds live in
:data:`THRESHOLDS` and :func:`verdicts`, nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd

from fruitlens.explain.keras_graph import CONV_TYPES, LayerRef, find_layer, walk_layers
from fruitlens.sanity_names import DEFAULT_METHODS, method_title  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

HeatmapExplainer = Callable[[keras.Model, np.ndarray, np.ndarray], np.ndarray]
"""(model, images (N, H, W, 3) in [0, 1], targets (N,) class ids) -> (N, H, W) heatmaps."""

TOP_K = 5  # LIME: superpixels compared by overlap


@dataclass(frozen=True)
class SanityThresholds:
    """When an explanation counts as depending on the model (the one place for the verdict's numbers).

    Averaged over the images and over the steps from the one that re-initialises the top-most convolution
    (the first conv layer the cascade reaches) to the last, each similarity must stay below its bound.
    Two unrelated smooth heatmaps of a centred object still correlate a little (about 0.2-0.35 here), so
    the rank bound is 0.5, not 0.
    """

    max_rank: float = 0.5  # Spearman rank correlation with the original explanation (heatmaps and LIME)
    max_ssim: float = 0.5  # SSIM of heatmaps
    max_top_k: float = 0.6  # share of the original top-5 LIME superpixels still in the top 5


THRESHOLDS = SanityThresholds()


# ------------------------------------------------------------------------------------ the model copy


def cascade_layers(model: keras.Model) -> list[LayerRef]:
    """The layers the cascade re-initialises, top (output) first: Dense and convolution layers with weights."""
    refs = [r for r in walk_layers(model) if not isinstance(r.layer, keras.Model)
            and isinstance(r.layer, (keras.layers.Dense, *CONV_TYPES)) and r.layer.weights]
    return refs[::-1]


def layer_kind(layer: keras.layers.Layer) -> str:
    return "conv" if isinstance(layer, CONV_TYPES) else "dense"


def model_copy(model: keras.Model) -> keras.Model:
    """A copy with its own variables and the same weights; the original is never changed."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def reinitialise(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    """Give ``layer`` fresh weights in place: kernels Glorot-uniform from ``rng``, biases and 1-D weights zero."""
    for var in layer.weights:
        shape = tuple(var.shape)
        if len(shape) >= 2:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / max(fan_in + fan_out, 1))
            var.assign(rng.uniform(-limit, limit, shape).astype(var.dtype))
        else:
            var.assign(np.zeros(shape, var.dtype))


# ------------------------------------------------------------------------------------ similarity


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x.reshape(len(x), -1), axis=1)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) Spearman correlation of each pair of (N, ...) rows (ties: average ranks).

    A constant row against a varying one is 0 (nothing of the original ranking is left); two constant rows 1.
    """
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    both_flat = (np.abs(ra).sum(axis=1) == 0) & (np.abs(rb).sum(axis=1) == 0)
    out = np.divide((ra * rb).sum(axis=1), den, out=np.zeros(len(ra)), where=den > 0)
    out[both_flat] = 1.0
    return out


def heatmap_ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) SSIM of each pair of (N, H, W) heatmaps in [0, 1]."""
    from skimage.metrics import structural_similarity

    h, w = a.shape[1:]
    win = min(7, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"heatmaps of {h}x{w}: SSIM needs at least 3x3")
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b, strict=True)])


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Share of the ``k`` highest entries of ``a`` that are among the ``k`` highest of ``b``."""
    k = min(k, len(a))
    return len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-b, kind="stable")[:k])) / max(k, 1)


# ------------------------------------------------------------------------------------ the test


@dataclass(frozen=True)
class SanityResult:
    """The cascade of one model: per method, the explanations after each step and their similarity.

    Attributes:
        layers: the layer re-initialised at each step, step 0 (the original model) first as "".
        kinds: "none", then "dense" or "conv" per step.
        targets: (N,) class ids explained at every step (the original model's predictions by default).
        heatmaps: {method: (steps, N, H, W) float32 in [0, 1]} (LIME: its weights drawn on the superpixels).
        rank: {method: (steps, N)} Spearman correlation with step 0.
        ssim: {method: (steps, N)} SSIM with step 0 (heatmap methods only).
        top_k: {method: (steps, N)} top-5 superpixel overlap with step 0 (LIME only).
        options: {method: the options it ran with, in words (``describe_options``)}.
    """

    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    targets: np.ndarray
    heatmaps: dict[str, np.ndarray]
    rank: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray] = field(default_factory=dict)
    top_k: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, n = len(self.layers), len(self.targets)
        for name, arr in (*self.rank.items(), *self.ssim.items(), *self.top_k.items()):
            if arr.shape != (s, n):
                raise ValueError(f"similarity of {name} of shape {arr.shape}: expected ({s}, {n})")

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.rank)

    def to_rows(self, image_ids: Sequence[str] | None = None, paths: Sequence[str | None] | None = None,
                class_names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
        """The ``sanity`` table: one row per (method, step, image)."""
        n = len(self.targets)
        ids = [str(i) for i in image_ids] if image_ids is not None else [str(i) for i in range(n)]
        paths = list(paths) if paths is not None else [None] * n
        labels = [class_names[t] if class_names is not None else str(t) for t in self.targets]
        frames = []
        nan = np.full((len(self.layers), n), np.nan)
        for method in self.methods:
            for step, (layer, kind) in enumerate(zip(self.layers, self.kinds, strict=True)):
                frames.append(pd.DataFrame({
                    "method": method, "step": np.int32(step), "layer": layer, "layer_kind": kind, "image_id": ids,
                    "path": paths, "label": labels, "spearman": self.rank[method][step],
                    "ssim": self.ssim.get(method, nan)[step], "top_k_overlap": self.top_k.get(method, nan)[step],
                    "seed": np.int32(seed), "options": self.options.get(method, "")}))
        return pd.concat(frames, ignore_index=True)


def describe_options(options) -> str:
    """The options of one method as a short text: LIME's own description, else the fields that differ from
    the defaults (``default options`` when none does)."""
    from fruitlens.typed import to_plain

    if hasattr(options, "describe"):
        return options.describe()
    plain, defaults = to_plain(options), to_plain(type(options)())
    changed = [f"{k} {v}" for k, v in plain.items() if v != defaults[k] and k not in PICTURE_FIELDS]
    return ", ".join(changed) or "default options"


PICTURE_FIELDS = ("palette", "alpha", "faithfulness_steps", "baseline")  # options that change no explanation


def run_sanity(model: keras.Model, images: np.ndarray, *, methods: Sequence[str] = DEFAULT_METHODS,
               options=None, extra: Mapping[str, HeatmapExplainer] | None = None, targets: np.ndarray | None = None,
               layer: str | None = None, lime_options=None, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> SanityResult:
    """The cascading model parameter randomisation test on ``images``.

    Every method is built from its options by its own ``from_options`` (``fruitlens.registry``), so the
    explanations checked are those a run with ``options`` writes. Two deliberate differences, recorded in the
    table's ``options`` column: LIME's seed is ``seed`` (image i: ``(seed, i)``, not its image id), and its
    superpixels are those of the original model's run, kept at every step.

    Args:
        model: a Keras model taking (N, H, W, 3) float32 in [0, 1]; copied, never changed.
        images: (N, H, W, 3) float in [0, 1] at the model's input size.
        methods: names in ``fruitlens.registry.method_names()`` (methods and variants: gradcam++, cam).
        options: the run's ``ExplainOptions`` (default: a pipeline run's, ``PipelineConfig().explain_options``).
        extra: more heatmap explainers by name (e.g. a baseline that ignores the model).
        targets: (N,) class ids explained at every step; default the original model's predictions.
        layer: the conv layer of the methods that take one (None: as in ``options``).
        lime_options: ``LimeOptions`` in place of ``options.lime``.
        seed: seeds the re-initialisation and LIME's samples.
        progress: called as ``progress(steps done, steps)`` after each step (for a progress bar).

    Returns:
        A :class:`SanityResult` with one step per re-initialised layer, plus step 0.
    """
    from dataclasses import replace

    from fruitlens.config import PipelineConfig
    from fruitlens.explain.base import check_images
    from fruitlens.registry import method_names, resolve
    from fruitlens.runs import predict_batches

    x = check_images(images)
    bad = [m for m in methods if m not in method_names()]
    if bad:
        raise ValueError(f"sanity methods {', '.join(bad)}: expected any of {', '.join(method_names())}")
    copy = model_copy(model)
    cascade = cascade_layers(copy)
    if not cascade:
        raise ValueError("the model has no Dense or convolution layer with weights: nothing to randomise")
    if targets is None:
        targets = predict_batches(copy, x).argmax(axis=1)
    targets = np.asarray(targets, np.int64)
    options = PipelineConfig().explain_options if options is None else options
    built, described, lime_kw = {}, {}, {}
    for name in methods:
        spec, opts = resolve(name, lime_options if name == "lime" and lime_options is not None else options)
        if layer is not None and hasattr(opts, "layer"):
            opts = replace(opts, layer=layer)
        if hasattr(opts, "layer") and opts.layer is None:  # fixed on the original weights: the same at every step
            opts = replace(opts, layer=find_layer(copy, None).path)
        if spec.table == "lime":
            opts = replace(opts, seed=seed)
            built[name] = spec.build(copy, opts)
            lime_kw[name] = {"segments": built[name].segment(x)}
            described[name] = f"{describe_options(opts)}; seed {seed} by position, superpixels of the original model"
        else:
            built[name] = spec.build(copy, opts)
            described[name] = describe_options(opts)

    def explain_all() -> dict[str, tuple[np.ndarray, list[np.ndarray] | None]]:
        out = {}
        for name, explainer in built.items():
            res = explainer.explain(x, targets, **lime_kw.get(name, {}))
            weights = [e.weights[int(t)] for e, t in zip(res, targets, strict=True)] if name in lime_kw else None
            out[name] = (np.asarray(res.heatmaps, np.float32), weights)
        out |= {name: (np.asarray(fn(copy, x, targets), np.float32), None) for name, fn in (extra or {}).items()}
        return out

    rng = np.random.default_rng(seed)
    steps = [explain_all()]
    if progress is not None:
        progress(1, len(cascade) + 1)
    for ref in cascade:
        reinitialise(ref.layer, rng)
        steps.append(explain_all())
        log.info("sanity: re-initialised %s", ref.path)
        if progress is not None:
            progress(len(steps), len(cascade) + 1)
    names = list(steps[0])
    heatmaps = {m: np.stack([s[m][0] for s in steps]) for m in names}
    rank, ssim, top = {}, {}, {}
    for m in names:
        if steps[0][m][1] is None:
            rank[m] = np.stack([rank_correlation(steps[0][m][0], s[m][0]) for s in steps])
            ssim[m] = np.stack([heatmap_ssim(steps[0][m][0], s[m][0]) for s in steps])
        else:
            w0 = steps[0][m][1]
            rank[m] = np.array([[rank_correlation(a[None], b[None])[0] for a, b in zip(w0, s[m][1], strict=True)]
                                for s in steps])
            top[m] = np.array([[top_k_overlap(a, b) for a, b in zip(w0, s[m][1], strict=True)] for s in steps])
    return SanityResult(layers=("", *(r.path for r in cascade)),
                        kinds=("none", *(layer_kind(r.layer) for r in cascade)), targets=targets,
                        heatmaps=heatmaps, rank=rank, ssim=ssim, top_k=top,
                        options={m: described.get(m, "an extra explainer") for m in names})


# ------------------------------------------------------------------------------------ the verdict


def verdicts(table: pd.DataFrame, thresholds: SanityThresholds = THRESHOLDS) -> pd.DataFrame:
    """One row per method of a ``sanity`` table: the similarity once the first conv layer is re-initialised,
    the mean from there on, and whether the method passes (see :class:`SanityThresholds`).

    Columns: method, images, steps, first_conv_step, first_conv_layer, rank_at_first_conv, rank, ssim, top_k
    (means over the steps from the first conv layer on), final_rank, passed, reason, options (what the
    method ran with; "" in tables written before the column existed).
    """
    rows = []
    for method, t in table.groupby("method", sort=False):
        means = t.groupby("step").agg(layer=("layer", "first"), kind=("layer_kind", "first"),
                                      rank=("spearman", "mean"), ssim=("ssim", "mean"),
                                      top_k=("top_k_overlap", "mean")).sort_index()
        conv = means[means["kind"] == "conv"]
        if conv.empty:
            rows.append({"method": method, "passed": False, "reason": "no conv layer was re-initialised"})
            continue
        first = int(conv.index[0])
        after = means.loc[first:]
        mean = {k: float(after[k].mean()) if after[k].notna().any() else np.nan for k in ("rank", "ssim", "top_k")}
        fails = []
        if mean["rank"] >= thresholds.max_rank:
            fails.append(f"rank correlation {mean['rank']:.2f} >= {thresholds.max_rank}")
        if np.isfinite(mean["ssim"]) and mean["ssim"] >= thresholds.max_ssim:
            fails.append(f"SSIM {mean['ssim']:.2f} >= {thresholds.max_ssim}")
        if np.isfinite(mean["top_k"]) and mean["top_k"] >= thresholds.max_top_k:
            fails.append(f"top-{TOP_K} overlap {mean['top_k']:.2f} >= {thresholds.max_top_k}")
        rows.append({
            "method": method, "images": int(t["image_id"].nunique()), "steps": int(len(means) - 1),
            "first_conv_step": first, "first_conv_layer": str(means.loc[first, "layer"]),
            "rank_at_first_conv": float(means.loc[first, "rank"]), "rank": mean["rank"],
            "ssim": mean["ssim"], "top_k": mean["top_k"], "final_rank": float(means["rank"].iloc[-1]),
            "passed": not fails, "options": str(t["options"].iloc[0]) if "options" in t.columns else "",
            "reason": "; ".join(fails) if fails else "changes with the model from the first conv layer on"})
    return pd.DataFrame(rows)


def edge_detector(model: keras.Model, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """A broken "explainer" that ignores the model: the Sobel edges of the image, scaled to [0, 1]."""
    from skimage.filters import sobel

    maps = np.stack([sobel(img.mean(axis=-1)) for img in np.asarray(images)]).astype(np.float32)
    top = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0)


# ------------------------------------------------------------------------------------ figure and files


def cascade_figure(result: SanityResult, images: np.ndarray, *, shown: Sequence[int] = (0, 1),
                   titles: Sequence[str] | None = None, thresholds: SanityThresholds = THRESHOLDS):
    """A matplotlib figure: for each image in ``shown`` and each method, its explanation after each step
    (left: the photo; then the original model, then each re-initialised layer), and below, the mean rank
    correlation with the original explanation per step and method."""
    from fruitlens.captions import layer_title
    from fruitlens.plots import plt

    shown = [i for i in shown if i < len(result.targets)]
    methods, steps = result.methods, len(result.layers)
    nrows = len(shown) * len(methods)
    columns = figure_steps(steps)  # a deep model (MobileNetV2: 50+ steps): evenly chosen, first and last kept
    fig = plt.figure(figsize=(min(1.25 * (len(columns) + 1) + 0.6, 16.0), 1.3 * nrows + 3.6), layout="constrained")
    grid = fig.add_gridspec(nrows + 1, len(columns) + 1, height_ratios=[1] * nrows + [2.6])
    labels = ["original", *(f"+ {layer_title(layer)}" for layer in result.layers[1:])]
    for r, (i, m) in enumerate((i, m) for i in shown for m in methods):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(np.clip(images[i], 0, 1))
        ax.set_ylabel(f"{(titles or [f'image {i}'] * (i + 1))[i]}\n{method_title(m)}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if r == 0:
            ax.set_title("photo", fontsize=8)
        for c, s in enumerate(columns):
            ax = fig.add_subplot(grid[r, c + 1])
            ax.imshow(result.heatmaps[m][s, i], cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{s}: {labels[s]}" if len(columns) < steps else labels[s], fontsize=8, rotation=30,
                             ha="left", loc="left")
            ax.set_xlabel(f"r={result.rank[m][s, i]:.2f}", fontsize=8, labelpad=1)
    ax = fig.add_subplot(grid[nrows, :])
    x = np.arange(steps)
    for m in methods:
        ax.plot(x, result.rank[m].mean(axis=1), marker="o", label=f"{method_title(m)}: rank correlation")
        if m in result.ssim:
            ax.plot(x, result.ssim[m].mean(axis=1), marker=".", linestyle="--", alpha=0.7,
                    label=f"{method_title(m)}: SSIM")
        if m in result.top_k:
            ax.plot(x, result.top_k[m].mean(axis=1), marker=".", linestyle=":", alpha=0.7,
                    label=f"{method_title(m)}: top-{TOP_K} overlap")
    ax.axhline(thresholds.max_rank, color="grey", linewidth=0.8, linestyle="-.",
               label=f"pass: rank correlation below {thresholds.max_rank}")
    every = max(1, int(np.ceil(steps / 24)))  # at most 24 tick labels, 8 pt
    ax.set_xticks(x[::every], labels[::every], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("cascading re-initialisation, top layer first (each step keeps the earlier ones random)")
    ax.set_ylabel(f"similarity to the original\n(mean of {len(result.targets)} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    shown_steps = "" if len(columns) == steps else f"; {len(columns)} of the {steps} steps shown, numbered"
    fig.suptitle("Model parameter randomisation test (Adebayo et al. 2018): an explanation that depends on the\n"
                 "model changes as its layers are re-initialised. Heatmaps 0 (blue) to 1 (red); r: rank correlation "
                 f"with the original{shown_steps}", fontsize=9)
    return fig


MAX_FIGURE_STEPS = 10  # heatmap columns of the cascade figure (the curve below shows every step)


def figure_steps(steps: int, most: int = MAX_FIGURE_STEPS) -> list[int]:
    """The cascade steps drawn as heatmap columns: all up to ``most``, else ``most`` evenly spread, the
    original (0) and the last step included."""
    if steps <= most:
        return list(range(steps))
    return sorted({int(round(v)) for v in np.linspace(0, steps - 1, most)})



def write_sanity(result: SanityResult, images: np.ndarray, rows: pd.DataFrame, out_dir, *,
                 class_names: Sequence[str] | None = None, seed: int = 0,
                 thresholds: SanityThresholds = THRESHOLDS) -> pd.DataFrame:
    """Write the ``sanity`` table, the cascade figure and the verdicts into ``out_dir``; returns the verdicts."""
    from pathlib import Path

    from fruitlens import tables
    from fruitlens.layout import SanityLayout
    from fruitlens.plots import save_figure

    lay = SanityLayout(Path(out_dir))
    table = result.to_rows(list(rows["image_id"]), list(rows["path"]), class_names, seed)
    tables.write_table(table, lay.table, "sanity")
    titles = [Path(str(p)).name for p in rows["path"]]
    save_figure(cascade_figure(result, images, titles=titles, thresholds=thresholds), lay.figure, dpi=110)
    found = verdicts(table, thresholds)
    tables.write_json(lay.verdicts, {"thresholds": vars(thresholds), "verdicts": found.to_dict("records")})
    return found
