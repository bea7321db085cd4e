"""The results of the explainers: frozen, shape-checked, batch-first, each with ``to_rows() -> DataFrame``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class HeatmapResult:
    """Heatmaps of N images and what they explain (every heatmap method: CAMs, gradients, perturbations).

    Attributes:
        heatmaps: (N, H, W) float32 in [0, 1] (or (N, h, w) at the layer's resolution), no NaN.
        targets: (N,) int class ids explained.
        scores: (N,) float32 pre-softmax score of each target.
        layer: path of the layer the maps come from.
        passes: (N,) int model passes spent on each image (forward + backward counted once per input row),
            or None where the method does not count them.
        convergence: (N,) float the stopping statistic each adaptive method reached (Integrated Gradients:
            relative completeness gap; SmoothGrad, RISE: relative standard error of the map; occlusion: the
            largest change a finer window still made), or None for methods that do not stop adaptively.
    """

    heatmaps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    layer: str
    passes: np.ndarray | None = None
    convergence: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.heatmaps)
        if self.heatmaps.ndim != 3 or self.targets.shape != (n,) or self.scores.shape != (n,):
            raise ValueError(f"HeatmapResult shapes {self.heatmaps.shape}, {self.targets.shape}, {self.scores.shape}: "
                             "expected (N, H, W), (N,), (N,)")
        for name in ("passes", "convergence"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"HeatmapResult {name} shape {np.shape(value)}: expected ({n},) or None")

    @property
    def peaks(self) -> np.ndarray:
        """(N, 2) int (y, x) of each heatmap's maximum."""
        n, _, w = self.heatmaps.shape
        flat = self.heatmaps.reshape(n, -1).argmax(axis=1)
        return np.stack([flat // w, flat % w], axis=1).astype(np.int32)

    def to_rows(self, image_ids: Sequence[str] | None = None,
                class_names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per image: image_id, label (class name when ``class_names`` is given), layer, peak_y,
        peak_x (at the heatmaps' resolution) and score (the target's pre-softmax score)."""
        n = len(self.heatmaps)
        ids = [str(i) for i in image_ids] if image_ids is not None else [str(i) for i in range(n)]
        labels = [class_names[t] for t in self.targets] if class_names is not None else [str(t) for t in self.targets]
        peaks = self.peaks
        return pd.DataFrame({"image_id": ids, "label": labels, "layer": self.layer, "peak_y": peaks[:, 0],
                             "peak_x": peaks[:, 1], "score": self.scores.astype(np.float64)})


@dataclass(frozen=True)
class FaithfulnessResult:
    """Deletion and insertion curves of N explanations.

    Attributes:
        fractions: (S + 1,) share of pixels removed / inserted at each step, 0 .. 1.
        deletion: (N, S + 1) probability of the target class as pixels are removed.
        insertion: (N, S + 1) probability of the target class as pixels are inserted.
        deletion_auc: (N,) area under each deletion curve (lower is more faithful).
        insertion_auc: (N,) area under each insertion curve (higher is more faithful).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray

    def __post_init__(self) -> None:
        n, s = self.deletion.shape
        if self.fractions.shape != (s,) or self.insertion.shape != (n, s) or self.deletion_auc.shape != (n,) \
                or self.insertion_auc.shape != (n,):
            raise ValueError("FaithfulnessResult shapes do not agree: expected (S+1,), (N, S+1) x 2, (N,) x 2")

    def to_rows(self, image_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per image: image_id, deletion_auc, insertion_auc."""
        n = len(self.deletion_auc)
        ids = [str(i) for i in image_ids] if image_ids is not None else [str(i) for i in range(n)]
        return pd.DataFrame({"image_id": ids, "deletion_auc": self.deletion_auc.astype(np.float64),
                             "insertion_auc": self.insertion_auc.astype(np.float64)})


@dataclass(frozen=True)
class LimeExplanation:
    """LIME's explanation of one image (arrays are read-only).

    Attributes:
        segments: (H, W) int32 superpixel ids 0..S-1.
        labels: explained class indices, in order (highest probability first for ``top_labels``).
        weights: {label: (S,) float64} Ridge coefficient per superpixel id (0 where not selected).
        intercept, score, local_pred: {label: float} Ridge intercept, weighted R^2 on the samples, and the
            local model's prediction for the unperturbed image.
        label_prob: {label: float} the model's output for the unperturbed image.
        features: {label: tuple of superpixel ids} the selected superpixels, by decreasing |weight|.
        num_samples: perturbed samples used (the first is the image itself).
        segmenter: how ``segments`` was made ("given" when passed in).
        max_samples: the most samples the image could get (``num_samples`` asked for; equal to the used ones
            in fixed mode).
        stability: ``max SE(weight) / max |weight|`` reached (HC0 sandwich of the Ridge fit; NaN unknown).
        converged: stability within the tolerance asked for (adaptive runs stop there).
    """

    segments: np.ndarray
    labels: tuple[int, ...]
    weights: dict[int, np.ndarray]
    intercept: dict[int, float]
    score: dict[int, float]
    local_pred: dict[int, float]
    label_prob: dict[int, float]
    features: dict[int, tuple[int, ...]]
    num_samples: int
    segmenter: str = "given"
    max_samples: int | None = None
    stability: float = float("nan")
    converged: bool = False

    def __post_init__(self) -> None:
        s = self.num_superpixels
        for label in self.labels:
            if self.weights[label].shape != (s,):
                raise ValueError(f"weights for label {label} of shape {self.weights[label].shape}: expected ({s},)")
            self.weights[label].flags.writeable = False
        self.segments.flags.writeable = False

    @property
    def num_superpixels(self) -> int:
        return int(self.segments.max()) + 1

    def ranked(self, label: int) -> list[tuple[int, float]]:
        """(superpixel, weight) of the selected superpixels by decreasing |weight| (lime's ``local_exp``)."""
        w = self.weights[label]
        return [(int(f), float(w[f])) for f in self.features[label]]

    def mask(self, label: int, *, num_features: int | None = 5, threshold: float = 0.0,
             positive_only: bool = False) -> np.ndarray:
        """(H, W) int8: +1 on supporting superpixels, -1 on opposing ones, 0 elsewhere.

        Takes the ``num_features`` superpixels with the largest |weight| (all when None) whose |weight| exceeds
        ``threshold``; ``positive_only`` keeps supporting ones only (lime's ``get_image_and_mask``).
        """
        w = self.weights[label]
        chosen = [f for f, v in self.ranked(label) if abs(v) > threshold and (v > 0 or not positive_only)]
        chosen = chosen[:num_features] if num_features is not None else chosen
        per_sp = np.zeros(self.num_superpixels, np.int8)
        per_sp[chosen] = np.sign(w[chosen]).astype(np.int8)
        return per_sp[self.segments]

    def to_rows(self, image_id: str = "", class_names: Sequence[str] | None = None, *, path: str | None = None,
                true_label: str | None = None) -> pd.DataFrame:
        """The ``lime`` table rows of this image: one per (label, superpixel), long form.

        Columns: the LIME schema (image_id, path and true_label of the source image (None when not given),
        label (class name when ``class_names`` is given), label_prob,
        superpixel, weight, intercept, score, local_pred, num_samples (used), segmenter, max_samples, stability,
        converged) then label_index, rank
        (of the label among the explained ones, 0 first), pixels (superpixel area) and selected.
        """
        s = self.num_superpixels
        k = len(self.labels)
        labels = np.repeat(np.asarray(self.labels, dtype=np.int64), s)
        names = [class_names[i] for i in self.labels] if class_names is not None else [str(i) for i in self.labels]
        selected = np.zeros((k, s), bool)
        for j, label in enumerate(self.labels):
            selected[j, list(self.features[label])] = True
        pick = lambda d: np.repeat([d[label] for label in self.labels], s)  # noqa: E731
        return pd.DataFrame({
            "image_id": image_id,
            "path": path,
            "true_label": true_label,
            "label": np.repeat(names, s),
            "label_prob": pick(self.label_prob).astype(np.float32),
            "superpixel": np.tile(np.arange(s, dtype=np.int32), k),
            "weight": np.concatenate([self.weights[label] for label in self.labels]) if k else np.zeros(0),
            "intercept": pick(self.intercept),
            "score": pick(self.score),
            "local_pred": pick(self.local_pred),
            "num_samples": np.int32(self.num_samples),
            "segmenter": self.segmenter,
            "max_samples": np.int32(self.max_samples if self.max_samples is not None else self.num_samples),
            "stability": float(self.stability),
            "converged": bool(self.converged),
            "label_index": labels.astype(np.int32),
            "rank": np.repeat(np.arange(k, dtype=np.int32), s),
            "pixels": np.tile(np.bincount(self.segments.ravel(), minlength=s).astype(np.int32), k),
            "selected": selected.ravel(),
        })


@dataclass(frozen=True)
class LimeResult:
    """LIME's explanations of N images (``explanations[i]`` is image i's)."""

    explanations: tuple[LimeExplanation, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "explanations", tuple(self.explanations))

    def __len__(self) -> int:
        return len(self.explanations)

    def __getitem__(self, i: int) -> LimeExplanation:
        return self.explanations[i]

    def __iter__(self):
        return iter(self.explanations)

    @property
    def targets(self) -> np.ndarray:
        """(N,) int: each image's first explained class."""
        return np.array([e.labels[0] for e in self.explanations], np.int64)

    @property
    def heatmaps(self) -> np.ndarray:
        """(N, H, W) float32 in [0, 1]: each image's weights of its first class drawn on its superpixels,
        min-max scaled (the most negative superpixel 0, the most positive 1; all equal: 0)."""
        maps = np.stack([e.weights[e.labels[0]][e.segments] for e in self.explanations]).astype(np.float32)
        lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
        return np.divide(maps - lo, hi - lo, out=np.zeros_like(maps), where=hi > lo)

    def to_rows(self, image_ids: Sequence[str] | None = None, class_names: Sequence[str] | None = None
                ) -> pd.DataFrame:
        """The ``lime`` rows of every image (see ``LimeExplanation.to_rows``), image after image."""
        ids = [str(i) for i in image_ids] if image_ids is not None else [str(i) for i in range(len(self))]
        return pd.concat([e.to_rows(i, class_names) for e, i in zip(self.explanations, ids, strict=True)],
                         ignore_index=True)
