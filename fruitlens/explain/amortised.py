"""The amortised explainer (FastSHAP, Jethani et al., ICLR 2022): Shapley values of a patch grid in one pass.

A small network trained against the frozen classifier (``fruitlens.explain.amortised_training``) outputs, for every
class, one value per patch of a ``grid`` x ``grid`` grid; made efficient (they sum to v(all) - v(empty), the
target's probability on the image minus on the fully filled image), the target's values are drawn on their
patches and scaled like the other input-pixel methods (ReLU, then divided by each map's maximum).

Cost per image: 1 explainer pass and 2 classifier passes (the image itself: the target and its score,
v(all); and the fully filled image: v(empty), for the efficiency normalisation) = ``passes`` 3, against
hundreds for occlusion, RISE or LIME. The training cost is paid once per classifier (its card says it).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from fruitlens.explain.amortised_training import (
    Trained,
    coordinates,
    efficient,
    features_fn,
    load_explainer,
    train_explainer,
)
from fruitlens.explain.base import check_images, check_targets, logits_fn, scale_per_image
from fruitlens.explain.explainer import Explainer
from fruitlens.explain.patches import fill_of, patch_index
from fruitlens.explain.results import HeatmapResult
from fruitlens.method_options import AmortisedOptions

log = logging.getLogger(__name__)

PASSES = 3  # per image: 1 explainer pass + 2 classifier passes (the image, the fully filled image)


class AmortisedExplainer(Explainer):
    """Explains a classifier with a trained amortised explainer.

    Args:
        model: the classifier, (N, H, W, 3) float32 in [0, 1] -> (N, C) scores.
        options: :class:`AmortisedOptions`.
        trained: a trained explainer (``load_explainer`` / ``train_explainer``); None: one is trained on the
            first images :meth:`explain` is given (in memory, nothing written) and kept for later calls.
    """

    method = "amortised"
    layer = "input"

    def __init__(self, model, options: AmortisedOptions, trained: Trained | None = None):
        self.model = model
        self.options = options
        self.trained = trained
        if trained is not None:
            self._check_card(trained)

    @classmethod
    def from_options(cls, model, options: AmortisedOptions) -> AmortisedExplainer:
        """``options.explainer``: the folder of a trained explainer (loaded and checked against ``model``);
        None: trained on the first images explained."""
        trained = load_explainer(options.explainer) if options.explainer is not None else None
        return cls(model, options, trained)

    def _check_card(self, trained: Trained) -> None:
        card = trained.card
        classes = int(self.model.output_shape[-1])
        size = tuple(int(s) for s in self.model.input_shape[1:3]) if None not in self.model.input_shape[1:3] \
            else card.image_size
        if card.classes != classes or tuple(card.image_size) != size:
            raise ValueError(f"explainer for {card.classes} classes at {card.image_size[0]}x{card.image_size[1]}: "
                             f"expected one for this classifier's {classes} classes at {size[0]}x{size[1]}")

    def explain(self, images, targets=None) -> HeatmapResult:
        """Heatmaps for ``images``: each target's efficient Shapley values drawn on the patch grid.

        Args:
            images: (N, H, W, 3) float in [0, 1] at the explainer's input size; never modified.
            targets: (N,) class ids, or one int for all, or None for each image's predicted class.

        Returns:
            A :class:`HeatmapResult` (layer ``input``), ``passes`` 3 per image (1 explainer pass, 2
            classifier passes), ``convergence`` None.
        """
        images = check_images(images)
        n, h, w, _ = images.shape
        if self.trained is None:
            log.warning("amortised: no trained explainer given; training one on the %d images to explain", n)
            self.trained = train_explainer(self.model, images, self.options, None)
            self._check_card(self.trained)
        card = self.trained.card
        if (h, w) != tuple(card.image_size):
            raise ValueError(f"images of {h}x{w} pixels: expected {card.image_size[0]}x{card.image_size[1]}, "
                             "the size the explainer was trained at")
        targets = check_targets(targets, n, card.classes)
        raw, scores, gap = self.attributions(images)
        targets = np.where(targets < 0, scores.argmax(axis=1), targets).astype(np.int64)
        picked = scores[np.arange(n), targets].astype(np.float32)
        phi = raw[np.arange(n), :, targets]  # (N, d)
        heat = scale_per_image(phi[:, patch_index((h, w), card.grid)])
        return HeatmapResult(heat.astype(np.float32), targets, picked, self.layer,
                             passes=np.full(n, PASSES, np.int64))

    def attributions(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, d, C) efficient Shapley values of every class, (N, C) pre-softmax scores, (N, C)
        v(all) - v(empty); ``batch_size`` images per call."""
        images = check_images(images)
        network, fill = self.trained.network, self.trained.card.fill
        scores_fn = logits_fn(self.model)
        extract = features_fn(self.model, self.trained.card.features)
        bs = self.options.batch_size
        phis, scores, gaps = [], [], []
        for i in range(0, len(images), bs):
            x = images[i:i + bs]
            s = scores_fn(tf.constant(x)).numpy()
            empty = tf.nn.softmax(scores_fn(tf.constant(fill_of(x, fill))), axis=-1)
            gap = tf.nn.softmax(s, axis=-1) - empty
            phis.append(efficient(network(coordinates(extract(tf.constant(x))), training=False), gap).numpy())
            scores.append(s)
            gaps.append(gap.numpy())
        return np.concatenate(phis), np.concatenate(scores), np.concatenate(gaps)
