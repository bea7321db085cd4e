"""LIME's options in batch runs, a frozen typed dataclass (re-exported by ``fruitlens.config``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, get_args

from fruitlens.method_options import FAITHFULNESS_STEPS, MAX_BATCH, MAX_CURVE_STEPS
from fruitlens.segmenter_params import resolve_params
from fruitlens.typed import check, short, to_plain

Plots = Literal["all", "explanation", "none"]
#: the PNG kinds LIME can write per image; ``plots`` names a set of them (``LimeOptions.plot_kinds``)
LIME_PLOT_KINDS = ("outline", "boundaries", "density")
PLOT_SETS = {"all": LIME_PLOT_KINDS, "explanation": ("outline",), "none": ()}
FeatureSelection = Literal["auto", "highest_weights", "forward_selection", "none"]
LimeDesign = Literal["random", "balanced"]  # how LIME draws its rows (fruitlens.explain.lime.draw_masks)
HIDE_COLORS = {"mean": None, "white": 1.0, "black": 0.0, "gray": 0.5}
MAX_LIME_SAMPLES = 100_000  # num_samples, round_size, min_samples: perturbed rows per image (refused beyond)
MAX_TOP_LABELS = 1_000  # top_labels (classes explained per image)
#: adaptive LIME: no image stops before this many rows (two blocks: one can meet the tolerance while the small
#: weights' order is noise); the default of ``min_samples``, lowered to ``num_samples`` when that is smaller
MIN_SAMPLES = 256


@dataclass(frozen=True)
class LimeOptions:
    """LIME in batch runs (see ``fruitlens.explain.lime.explain_lime`` for the meaning of each).

    ``segmenter_params`` holds the segmenter's own parameters (slic: n_superpixels, compactness, sigma,
    max_num_iter; quickshift: kernel_size, max_dist, ratio, sigma; felzenszwalb: scale, sigma, min_size).
    ``hide_color``: "mean", "white", "black", "gray", a number or an RGB triple in [0, 1].
    ``plots``: which PNGs: all (outline, boundaries, density), explanation (outline), none, or a comma-separated
    list of kinds (default outline,boundaries: the density figure costs ten times the other two, benchmarks).
    ``adaptive`` (default on): sample in rounds of ``round_size`` and stop each image once
    ``max SE(w) / max |w|`` is at most ``tolerance``, at most ``num_samples`` rows; False: exactly ``num_samples``.
    ``min_samples``: adaptive: no image stops before this many rows; left out, ``MIN_SAMPLES`` (256) or
    ``num_samples`` when that is smaller. Given above ``num_samples`` with ``adaptive`` on, it is refused (no
    image could ever stop early: the budget would be spent before the floor is reached).
    ``design``: "balanced" (default: Hadamard blocks, less noise, same estimand) or "random" rows (as the `lime`
    package). ``control_variate`` (default on): a logistic surrogate takes most of the sampling noise out of
    the weights, same estimand. With the three defaults, LIME agrees with the `lime` package at 1000 samples
    better than that package agrees with itself, at a fraction of the model rows (the figures: benchmarks/README.md);
    ``adaptive: false, design: random, control_variate: false`` is the reference's own procedure.
    """

    num_samples: int = 1000
    seed: int = 0
    segmenter: str = "slic"
    segmenter_params: dict[str, float] = field(default_factory=dict)
    hide_color: str | float | tuple[float, float, float] = "mean"
    top_labels: int = 1
    num_features: int | None = None
    feature_selection: FeatureSelection = "auto"
    batch_size: int | None = None
    threshold: float = 0.0
    display_features: int = 5
    plots: str = "outline,boundaries"
    faithfulness_steps: int = FAITHFULNESS_STEPS
    adaptive: bool = True
    round_size: int = 128  # one fold-over Hadamard block for up to 63 superpixels
    tolerance: float = 0.05
    min_samples: int | None = None  # None: MIN_SAMPLES, or num_samples when smaller (resolved on creation)
    design: LimeDesign = "balanced"
    control_variate: bool = True

    def __post_init__(self) -> None:
        if self.min_samples is None:
            object.__setattr__(self, "min_samples", min(MIN_SAMPLES, self.num_samples))
        check([
            (2 <= self.num_samples <= MAX_LIME_SAMPLES, "num_samples", self.num_samples,
             f"2 to {MAX_LIME_SAMPLES}"),
            (1 <= self.top_labels <= MAX_TOP_LABELS, "top_labels", self.top_labels, f"1 to {MAX_TOP_LABELS}"),
            (2 <= self.round_size <= MAX_LIME_SAMPLES, "round_size", self.round_size, f"2 to {MAX_LIME_SAMPLES}"),
            (self.tolerance >= 0, "tolerance", self.tolerance, ">= 0 (0: never stop early)"),
            (0 <= self.min_samples <= MAX_LIME_SAMPLES, "min_samples", self.min_samples, f"0 to {MAX_LIME_SAMPLES}"),
            (not self.adaptive or self.min_samples <= self.num_samples, "min_samples", self.min_samples,
             f"at most num_samples {self.num_samples} with adaptive sampling (no image could stop before "
             "spending its whole budget); lower min_samples, raise num_samples, or turn adaptive off"),
            (self.design in (designs := get_args(LimeDesign)), "design", self.design, "one of " + ", ".join(designs)),
            (self.num_features is None or self.num_features >= 1, "num_features", self.num_features,
             "at least 1 or null"),
            (self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH, "batch_size", self.batch_size,
             f"1 to {MAX_BATCH}, or null"),
            (self.threshold >= 0, "threshold", self.threshold, ">= 0"),
            (self.display_features >= 1, "display_features", self.display_features, "at least 1"),
            (0 <= self.faithfulness_steps <= MAX_CURVE_STEPS, "faithfulness_steps", self.faithfulness_steps,
             f"0 (off) to {MAX_CURVE_STEPS}"),
            (self.feature_selection in get_args(FeatureSelection), "feature_selection", self.feature_selection,
             "one of " + ", ".join(get_args(FeatureSelection))),
            (self.plots in PLOT_SETS or (bool(self.plots) and set(self.plots.split(",")) <= set(LIME_PLOT_KINDS)),
             "plots", self.plots, "one of " + ", ".join(get_args(Plots)) + " or a comma-separated list of "
             + ", ".join(LIME_PLOT_KINDS)),
        ])
        hide = self.hide_color
        if isinstance(hide, str):
            check([(hide in HIDE_COLORS, "hide_color", hide, f"{', '.join(HIDE_COLORS)}, a number or R,G,B")])
        else:
            values = hide if isinstance(hide, tuple) else (hide,)
            check([(all(0.0 <= float(v) <= 1.0 for v in values), "hide_color", hide, "values in [0, 1]")])
        try:
            resolve_params(self.segmenter, dict(self.segmenter_params))
        except ValueError as exc:
            raise ValueError(f"segmenter {short(self.segmenter)}: {exc}") from exc
        object.__setattr__(self, "segmenter_params", dict(sorted(self.segmenter_params.items())))

    def describe(self) -> str:
        """The estimator in words: "adaptive, 256 to 300 samples at tolerance 0.05, balanced design, control
        variate, slic superpixels" ("1,000 samples, random design, plain Ridge, ..." for the reference's)."""
        low = min(self.min_samples, self.num_samples)
        how = (f"adaptive, {low:,} to {self.num_samples:,} samples at tolerance {self.tolerance:g}" if self.adaptive
               else f"{self.num_samples:,} samples")
        fit = "control variate" if self.control_variate else "plain Ridge"
        return f"{how}, {self.design} design, {fit}, {self.segmenter} superpixels"

    def overridable(self) -> dict:
        """Plain values to lay other values over: without ``min_samples`` where it only follows ``num_samples``
        (the default floor), so that a new ``num_samples`` moves it too instead of being refused."""
        plain = to_plain(self)
        if self.min_samples == min(MIN_SAMPLES, self.num_samples):
            del plain["min_samples"]
        return plain

    @property
    def plot_kinds(self) -> frozenset[str]:
        """The LIME PNG kinds to write (``plots`` resolved)."""
        return frozenset(PLOT_SETS.get(self.plots, tuple(self.plots.split(","))))

    @property
    def fill(self) -> float | tuple[float, ...] | None:
        """``hide_color`` as ``explain_lime`` takes it (None: each superpixel's mean colour)."""
        return HIDE_COLORS[self.hide_color] if isinstance(self.hide_color, str) else self.hide_color

    def __hash__(self) -> int:  # segmenter_params is a dict
        return hash(json.dumps(to_plain(self), sort_keys=True))
