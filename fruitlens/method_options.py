"""Options of the heatmap methods (Grad-CAM and the others), frozen typed dataclasses (import them from here).

Every method shares the picture and faithfulness fields of :class:`HeatmapOptions`; each adds only its own.
Values are checked where they enter (``__post_init__``): a bad value is a ``ValueError`` that names it and what
was expected; an unknown key is refused by ``fruitlens.typed.build``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from fruitlens.typed import check

Baseline = Literal["mean", "blur"]
Reference = Literal["black", "white", "gray", "mean", "blur"]
CamVariant = Literal["gradcam", "gradcam++", "cam"]
Fill = Literal["black", "gray", "mean", "blur"]
Nodes = Literal["completeness", "gauss-legendre", "riemann"]  # Integrated Gradients' points on the path
Sampling = Literal["latin", "antithetic", "sobol", "iid"]  # SmoothGrad's noise draws
FAITHFULNESS_STEPS = 20  # steps of the deletion / insertion curves
# Limits, refused in one line where the options enter (a typo of 10^8 must not take the machine's memory):
MAX_DRAWS = 10_000  # SmoothGrad samples, Integrated Gradients steps, RISE masks (model inputs per image)
MAX_CURVE_STEPS = 1_000  # faithfulness_steps (deletion / insertion points per image)
MAX_BATCH = 8_192  # batch_size (model inputs per call)
MAX_DRAW_BYTES = 1 << 30  # what a method's draws for one image may take (SmoothGrad's noise, RISE's masks)
PALETTE = "jet"  # heatmap colours


def _one_of(value, tp, name: str) -> tuple:
    return (value in get_args(tp), name, value, "one of " + ", ".join(get_args(tp)))


@dataclass(frozen=True)
class HeatmapOptions:
    """Fields every heatmap method has.

    ``palette`` and ``alpha``: heatmap colours (a matplotlib colormap) and the most opaque the overlay gets.
    ``faithfulness_steps`` and ``baseline``: the deletion / insertion curves (0 steps: off).
    ``batch_size``: model inputs per call. ``seed``: ties in the faithfulness order, and the method's draws.
    """

    palette: str = PALETTE
    alpha: float = 0.6
    faithfulness_steps: int = FAITHFULNESS_STEPS
    baseline: Baseline = "mean"
    batch_size: int = 256
    seed: int = 0

    def checks(self) -> list[tuple]:
        """(ok, field, value, expected) of the method's own fields."""
        return []

    def __post_init__(self) -> None:
        import matplotlib

        check([
            (self.palette in matplotlib.colormaps, "palette", self.palette, "a matplotlib colormap (jet, viridis...)"),
            (0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "an opacity in [0, 1]"),
            (0 <= self.faithfulness_steps <= MAX_CURVE_STEPS, "faithfulness_steps", self.faithfulness_steps,
             f"0 (off) to {MAX_CURVE_STEPS}"),
            _one_of(self.baseline, Baseline, "baseline"),
            (1 <= self.batch_size <= MAX_BATCH, "batch_size", self.batch_size, f"1 to {MAX_BATCH}"),
            *self.checks(),
        ])

    def draw_bytes(self, size: tuple[int, int]) -> int:
        """Bytes the method's random draws take for one image of ``size`` (held at once; 0: none)."""
        return 0

    def check_memory(self, size: tuple[int, int], name: str) -> None:
        """Refuse, before any work, draws larger than ``MAX_DRAW_BYTES`` at the model's input ``size``."""
        need = self.draw_bytes(size)
        if need > MAX_DRAW_BYTES:
            field, value = self.draws
            raise ValueError(f"{name}.{field} {value}: {need / 2**30:.1f} GiB of draws at {size[0]}x{size[1]} "
                             f"pixels; expected at most {MAX_DRAW_BYTES / 2**30:.0f} GiB "
                             f"(at most {value * MAX_DRAW_BYTES // max(need, 1)} at this size)")

    @property
    def draws(self) -> tuple[str, int]:
        return "batch_size", self.batch_size


@dataclass(frozen=True)
class CamOptions(HeatmapOptions):
    """Grad-CAM (and its variants) in batch runs: the fields of every heatmap method, plus these two.

    ``variant``: gradcam, gradcam++ or cam. ``layer``: conv layer name or path (``backbone/block5_conv3``), null
    for the last conv layer.
    """

    variant: CamVariant = "gradcam"
    layer: str | None = None

    def checks(self) -> list[tuple]:
        return [_one_of(self.variant, CamVariant, "variant")]


@dataclass(frozen=True)
class LayerCamOptions(HeatmapOptions):
    """Layer-CAM: ``layer`` is a conv layer name or path, null for the last conv layer."""

    layer: str | None = None


@dataclass(frozen=True)
class ScoreCamOptions(HeatmapOptions):
    """Score-CAM: ``channels`` scores only that many channels of highest variance (Faster Score-CAM)."""

    layer: str | None = None
    channels: int | None = None

    def checks(self):
        return [(self.channels is None or self.channels >= 1, "channels", self.channels, "at least 1 or null")]


@dataclass(frozen=True)
class SaliencyOptions(HeatmapOptions):
    """Vanilla gradients: nothing of their own."""


@dataclass(frozen=True)
class SmoothGradOptions(HeatmapOptions):
    """SmoothGrad: at most ``samples`` noisy copies, noise std = ``noise`` x each image's value range.

    Adaptive: the copies come in rounds of ``round_size``; an image stops once the relative standard error of its
    mean gradient (``||SE||_2 / ||mean||_2``) is at most ``tolerance`` (0: always ``samples``). ``sampling``:
    ``latin`` (the default: each round a Latin hypercube, every pixel value's draws one per equal-probability
    stratum of the normal; the smallest error per pass measured, at any image size, and an honest SE over round
    means from the second round on), ``antithetic`` pairs x + e, x - e, ``sobol`` (scrambled Sobol points
    through the normal inverse CDF: at most 21,201 values per image (84 x 84 RGB) and an SE that overstates its
    error) or ``iid`` normal draws (benchmarks/README.md).
    """

    samples: int = 64
    noise: float = 0.15
    tolerance: float = 0.12
    round_size: int = 8
    sampling: Sampling = "latin"

    def checks(self):
        return [(1 <= self.samples <= MAX_DRAWS, "samples", self.samples, f"1 to {MAX_DRAWS}"),
                (self.noise >= 0, "noise", self.noise, ">= 0"),
                (0 <= self.tolerance < 1, "tolerance", self.tolerance, "0 (off) to below 1"),
                (2 <= self.round_size <= MAX_DRAWS and self.round_size % 2 == 0, "round_size", self.round_size,
                 f"an even number from 2 to {MAX_DRAWS}"),
                _one_of(self.sampling, Sampling, "sampling")]

    def draw_bytes(self, size):
        return min(self.samples, self.round_size) * size[0] * size[1] * 3 * 4  # float32 noise of one round

    @property
    def draws(self):  # one round's noise is held at a time
        return ("samples", self.samples) if self.samples <= self.round_size else ("round_size", self.round_size)


@dataclass(frozen=True)
class IntegratedGradientsOptions(HeatmapOptions):
    """Integrated Gradients: ``steps`` points of the path from ``reference`` (black, white, gray, mean, blur).

    ``nodes``: ``completeness`` (the default: ``steps`` evenly spaced points, each interval's two end weights chosen
    so that its attributions sum to the score's change over it, known from the same passes; exact where the
    gradient jumps once in an interval, as in a ReLU network; one round, ``tolerance`` 0; where ``steps`` exceeds
    ``batch_size``, two passes over the points), ``riemann`` (the trapezoid rule, both ends included; with
    tolerance 0 what fruitlens did before) or ``gauss-legendre`` (Captum's default rule). Adaptive (``riemann``,
    ``gauss-legendre``): rounds of 5, 9, 17, 33, ... points for ``riemann`` (each reusing the last), 4, 8, 16, ...
    for ``gauss-legendre``,
    ``steps`` the last; an image stops once its completeness gap ``|sum of attributions - (f(x) - f(x'))| /
    |f(x) - f(x')|`` is at most ``tolerance`` (0: one round of ``steps``). On the demo CNN the completeness rule
    at 33 points was as close to a 2,049-point map as the trapezoid rule at 50 (Xplique's default), and the
    trapezoid rule closer than Gauss-Legendre at every budget (benchmarks/README.md).
    """

    steps: int = 33
    reference: Reference = "black"
    tolerance: float = 0.0
    nodes: Nodes = "completeness"

    def checks(self):
        return [(2 <= self.steps <= MAX_DRAWS, "steps", self.steps, f"2 to {MAX_DRAWS}"),
                _one_of(self.reference, Reference, "reference"),
                (0 <= self.tolerance < 1, "tolerance", self.tolerance, "0 (off) to below 1"),
                _one_of(self.nodes, Nodes, "nodes"),
                (self.nodes != "completeness" or self.tolerance == 0, "tolerance", self.tolerance,
                 "0 with nodes completeness (it closes the completeness gap itself; riemann or gauss-legendre "
                 "stop by it)")]


@dataclass(frozen=True)
class OcclusionOptions(HeatmapOptions):
    """Occlusion: a ``window`` square sliding by ``stride`` pixels (at the model's input size), showing ``fill``.

    Coarse to fine: ``coarse`` times larger windows and strides first (1: the full fine grid only), then the fine
    windows only where the coarse drop around them reaches ``threshold`` of the largest (0: all of them)."""

    window: int = 8
    stride: int = 4
    fill: Fill = "mean"
    coarse: int = 1
    threshold: float = 0.1

    def checks(self):
        return [(self.window >= 1, "window", self.window, "at least 1"),
                (self.stride >= 1, "stride", self.stride, "at least 1"),
                (self.stride <= self.window, "stride", self.stride,
                 f"at most window {self.window} (a longer stride leaves pixels that no window covers)"),
                _one_of(self.fill, Fill, "fill"),
                (1 <= self.coarse <= 64, "coarse", self.coarse, "1 (off) to 64"),
                (0.0 <= self.threshold <= 1.0, "threshold", self.threshold, "a share of the peak in [0, 1]")]


@dataclass(frozen=True)
class RiseOptions(HeatmapOptions):
    """RISE: random ``cells`` x ``cells`` masks, each cell kept with probability ``keep``; removed pixels show
    ``fill``. Masks come in rounds of ``round_size``; an image stops when its map's standard error is at most
    ``tolerance`` of the map's range (0: never early), and ``masks`` is the most it gets (model calls per image)."""

    masks: int = 500
    cells: int = 7
    keep: float = 0.5
    fill: Fill = "mean"
    round_size: int = 250
    tolerance: float = 0.0

    def checks(self):
        return [(1 <= self.masks <= MAX_DRAWS, "masks", self.masks, f"1 to {MAX_DRAWS}"),
                (1 <= self.round_size <= MAX_DRAWS, "round_size", self.round_size, f"1 to {MAX_DRAWS}"),
                (0.0 <= self.tolerance < 1.0, "tolerance", self.tolerance, "0 (off) or a share of the map's range"),
                (1 <= self.cells <= 256, "cells", self.cells, "1 to 256"),
                (0.0 < self.keep < 1.0, "keep", self.keep, "a probability in (0, 1)"), _one_of(self.fill, Fill, "fill")]

    def draw_bytes(self, size):
        return self.masks * size[0] * size[1] * 4 * 2  # float32 masks, and their upsampled grid

    @property
    def draws(self):
        return "masks", self.masks


MAX_GRID = 32  # patches per side of the amortised explainer's grid
MAX_EPOCHS = 1_000
AmortisedFill = Literal["black", "gray", "mean"]


@dataclass(frozen=True)
class AmortisedOptions(HeatmapOptions):
    """The amortised explainer (FastSHAP): a small network that outputs every class's Shapley values over a
    ``grid`` x ``grid`` grid of patches in one pass (``fruitlens.explain.amortised``).

    ``explainer``: the folder of a trained explainer (``fruitlens.explain.amortised_training``); null: trained first on
    the images it is given. Training: at most ``epochs`` passes over the training images, ``masks`` patch
    subsets per image (drawn once, reused every epoch; Shapley-kernel draws, each paired with its complement:
    even), Adam at ``learning_rate``, ``images_per_step`` images per step, removed patches show ``fill``,
    ``width`` channels of the network (32 and up to 20 epochs: on two Fruits-360 classifiers the explainer's maps
    then agree with KernelSHAP's reference at 0.45-0.50 against 0.33-0.36 with width 16 and 10 epochs, and
    their deletion AUC went from 6 % worse / 2 % better than KernelSHAP's at 512 coalitions to 7 % / 19 % better;
    benchmarks/README.md);
    ``train_images``: trained on at most that many images (a seeded sample) when trained by a run (on the full
    Fruits-360, 6,000 of 15,506 trained in 0.55-0.82x the classifier's time and agreed with KernelSHAP better than
    KernelSHAP with itself; 2,000 did not: benchmarks/README.md);
    ``patience``: stop once the loss on a held-out tenth of them has not improved for that many epochs (0: never);
    ``features``: a layer of the classifier whose (frozen) output is the explainer's input instead of the image,
    computed once per training image (null: the image).
    ``batch_size`` (shared field): images per explainer call, and classifier inputs per call in training.
    """

    explainer: str | None = None
    grid: int = 8
    epochs: int = 20
    masks: int = 16
    learning_rate: float = 1e-3
    images_per_step: int = 32
    fill: AmortisedFill = "mean"
    width: int = 32
    train_images: int = 6_000
    patience: int = 2
    features: str | None = None

    def checks(self):
        return [(1 <= self.train_images <= 1_000_000, "train_images", self.train_images, "1 to 1000000"),
                (0 <= self.patience <= MAX_EPOCHS, "patience", self.patience, f"0 (none) to {MAX_EPOCHS} epochs"),
                (1 <= self.grid <= MAX_GRID, "grid", self.grid, f"1 to {MAX_GRID} patches per side"),
                (1 <= self.epochs <= MAX_EPOCHS, "epochs", self.epochs, f"1 to {MAX_EPOCHS}"),
                (2 <= self.masks <= 1024 and self.masks % 2 == 0, "masks", self.masks,
                 "an even number 2 to 1024 (subsets come with their complements)"),
                (0.0 < self.learning_rate <= 1.0, "learning_rate", self.learning_rate, "in (0, 1]"),
                (1 <= self.images_per_step <= MAX_BATCH, "images_per_step", self.images_per_step,
                 f"1 to {MAX_BATCH}"),
                _one_of(self.fill, AmortisedFill, "fill"),
                (4 <= self.width <= 512, "width", self.width, "4 to 512 channels"),
                (self.features is None or (isinstance(self.features, str) and self.features.strip() != ""),
                 "features", self.features, "a layer name or null"),
                (self.explainer is None or (isinstance(self.explainer, str) and self.explainer.strip() != ""),
                 "explainer", self.explainer, "a folder path or null")]
