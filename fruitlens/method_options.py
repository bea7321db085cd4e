"""Options of the heatmap methods (Grad-CAM and the others), frozen typed dataclasses (re-exported by config).

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
FAITHFULNESS_STEPS = 20  # steps of the deletion / insertion curves
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
            (self.faithfulness_steps >= 0, "faithfulness_steps", self.faithfulness_steps, ">= 0 (0: off)"),
            _one_of(self.baseline, Baseline, "baseline"),
            (self.batch_size >= 1, "batch_size", self.batch_size, "at least 1"),
            *self.checks(),
        ])


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
    """SmoothGrad: ``samples`` noisy copies, noise std = ``noise`` x each image's value range."""

    samples: int = 25
    noise: float = 0.15

    def checks(self):
        return [(self.samples >= 1, "samples", self.samples, "at least 1"),
                (self.noise >= 0, "noise", self.noise, ">= 0")]


@dataclass(frozen=True)
class IntegratedGradientsOptions(HeatmapOptions):
    """Integrated Gradients: ``steps`` points of the path from ``reference`` (black, white, gray, mean, blur)."""

    steps: int = 32
    reference: Reference = "black"

    def checks(self):
        return [(self.steps >= 2, "steps", self.steps, "at least 2"), _one_of(self.reference, Reference, "reference")]


@dataclass(frozen=True)
class OcclusionOptions(HeatmapOptions):
    """Occlusion: a ``window`` square sliding by ``stride`` pixels (at the model's input size), showing ``fill``."""

    window: int = 8
    stride: int = 4
    fill: Fill = "mean"

    def checks(self):
        return [(self.window >= 1, "window", self.window, "at least 1"),
                (self.stride >= 1, "stride", self.stride, "at least 1"), _one_of(self.fill, Fill, "fill")]


@dataclass(frozen=True)
class RiseOptions(HeatmapOptions):
    """RISE: ``masks`` random ``cells`` x ``cells`` masks (model calls per image), each cell kept with
    probability ``keep``; removed pixels show ``fill``."""

    masks: int = 500
    cells: int = 7
    keep: float = 0.5
    fill: Fill = "mean"

    def checks(self):
        return [(self.masks >= 1, "masks", self.masks, "at least 1"), (self.cells >= 1, "cells", self.cells, ">= 1"),
                (0.0 < self.keep < 1.0, "keep", self.keep, "a probability in (0, 1)"), _one_of(self.fill, Fill, "fill")]
