"""Grad-CAM, Grad-CAM++ and CAM heatmaps, batched, on pre-softmax scores, for any Sequential/functional model.

All three share :class:`fruitlens.explain.base.BaseCAM` (layer lookup, re-tracing, targets, one compiled
gradient step per batch, scaling, upsampling) and differ only in how the channel weights are computed:

- Grad-CAM (Selvaraju et al. 2017): the class score's gradient averaged over space.
- Grad-CAM++ (Chattopadhay et al. 2018): positive gradients weighted by second/third-order terms.
- CAM (Zhou et al. 2016): the final Dense layer's weights of the class, for models ending in
  conv -> global average pooling -> Dense.

The map is ReLU(sum_k weight_k * activation_k), divided by its own maximum (all-zero stays zero).
``explain_chunk`` is the runner's entry point (``fruitlens explain --method gradcam``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fruitlens.explain.base import EPS, BaseCAM, CAMResult, LayerRef, find_head, walk_layers

log = logging.getLogger(__name__)

Variant = Literal["gradcam", "gradcam++", "cam"]


class GradCAM(BaseCAM):
    """Grad-CAM: channel weights are the spatial mean of the target score's gradient."""

    method = "gradcam"

    def cam_weights(self, acts, grads, targets):
        return tf.reduce_mean(grads, axis=(1, 2))  # per image: (N, K); never over the batch


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted by alpha = g^2 / (2 g^2 + sum(A) g^3)."""

    method = "gradcam++"

    def cam_weights(self, acts, grads, targets):
        g2 = tf.square(grads)
        g3 = g2 * grads
        total = tf.reduce_sum(acts, axis=(1, 2), keepdims=True)
        alpha = tf.where(grads != 0, g2 / (2.0 * g2 + total * g3 + EPS), tf.zeros_like(grads))
        return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


class CAM(BaseCAM):
    """CAM: for models ending in conv -> GlobalAveragePooling2D -> (Dropout) -> Dense, the Dense weights."""

    method = "cam"
    needs_gradients = False

    def check(self, ref: LayerRef) -> None:
        refs = [r for r in walk_layers(self.model) if not isinstance(r.layer, keras.Model)]
        after = [r.layer for r in refs[[r.layer for r in refs].index(ref.layer) + 1:]]
        kinds = [type(lay).__name__ for lay in after]
        ok = (len(after) >= 2 and isinstance(after[0], keras.layers.GlobalAveragePooling2D)
              and isinstance(after[-1], keras.layers.Dense)
              and all(isinstance(lay, keras.layers.Dropout) for lay in after[1:-1]))
        if not ok:
            raise ValueError(f"CAM needs {ref.path} -> GlobalAveragePooling2D -> Dense at the end of the model; "
                             f"found {ref.path} -> {' -> '.join(kinds) or 'nothing'} (use gradcam instead)")

    def cam_weights(self, acts, grads, targets):
        dense = find_head(self.model).layer
        return tf.gather(tf.transpose(tf.cast(dense.kernel, tf.float32)), targets)  # (N, K)


VARIANTS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "cam": CAM}


def explainer(model, variant: Variant = "gradcam", layer=None, *, batch_size: int = 256) -> BaseCAM:
    """The explainer of ``variant`` (gradcam, gradcam++, cam); an unknown name is a ValueError."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Grad-CAM variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return VARIANTS[variant](model, layer, batch_size=batch_size)


def gradcam(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """Grad-CAM heatmaps of N images in one gradient pass, each for its own target.

    Args:
        model: Keras model taking (N, H, W, 3) float32 in [0, 1]; a final softmax is left out (scores are
            pre-softmax logits) without changing the model.
        images: (N, H, W, 3) float in [0, 1].
        targets: (N,) class ids (or one int); None = each image's predicted class.
        layer: conv layer name or path (``backbone/block5_conv3``); None = the last conv layer, nested
            backbones included.
        upsample: resize to (H, W); False returns the layer's (h, w).

    Returns:
        (N, H, W) float32 in [0, 1], no NaN (an all-zero map stays zero).
    """
    return GradCAM(model, layer).explain(images, targets, upsample=upsample).heatmaps


def gradcam_plus_plus(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """Grad-CAM++ heatmaps; arguments and result as :func:`gradcam`."""
    return GradCAMPlusPlus(model, layer).explain(images, targets, upsample=upsample).heatmaps


def cam(model, images, targets=None, layer=None, upsample: bool = True) -> np.ndarray:
    """CAM heatmaps for conv -> GAP -> Dense models; arguments and result as :func:`gradcam`."""
    return CAM(model, layer).explain(images, targets, upsample=upsample).heatmaps


# ------------------------------------------------------------------------------------ the runner's entry point


def _lime_picture(out_dir: Path, image_id: str) -> Path | None:
    """LIME's explanation of an image (``lime/<id>_outline.png``, as ``lime.explain_chunk`` writes it), if any."""
    path = out_dir / "lime" / f"{image_id}_outline.png"
    return path if path.is_file() else None


def explain_chunk(model, card, images: np.ndarray, rows: pd.DataFrame, out_dir: str | os.PathLike, *,
                  layer: str | None = None, variant: Variant = "gradcam", palette: str = "viridis",
                  alpha: float = 0.4, steps: int = 20, baseline="mean", batch_size: int = 256,
                  seed: int = 0) -> pd.DataFrame:
    """Grad-CAM rows and PNGs for one chunk of images (see ``fruitlens.explain.runner``).

    Writes ``out_dir/gradcam/<image_id>_heatmap.png`` and ``_overlay.png`` (at the photo's own size, up to
    512 px) and ``out_dir/side_by_side/<image_id>.png`` (photo | Grad-CAM | LIME when its PNG exists).

    Args:
        model, card: the run's model and card.
        images: (N, H, W, 3) float32 in [0, 1] at ``card.image_size``.
        rows: image_id, path, label, mask_path per image.
        out_dir: the explanation folder.
        layer, variant: which layer and which CAM method.
        palette, alpha: heatmap colours (a matplotlib colormap) and overlay blend.
        steps, baseline: deletion/insertion curve settings (see ``faithfulness.deletion_insertion``).
        batch_size: images per model call.
        seed: order of equally salient pixels in the faithfulness curves.

    Returns:
        Rows of the ``gradcam`` table: image_id, label (explained class), layer, heatmap_path, overlay_path,
        peak_y, peak_x (at the model's input size), deletion_auc, insertion_auc, then true_label,
        target_prob, variant, pointing_hit (None without a mask).
    """
    from fruitlens import plots
    from fruitlens.explain.faithfulness import deletion_insertion, pointing_game
    from fruitlens.images import read_rgb
    from fruitlens.synthetic import read_mask

    if palette not in plots.matplotlib.colormaps:
        raise ValueError(f"unknown palette {palette!r}; expected a matplotlib colormap such as viridis, jet, magma")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha}: expected a blend weight in [0, 1]")
    out = Path(out_dir)
    result: CAMResult = explainer(model, variant, layer, batch_size=batch_size).explain(images)
    faith = deletion_insertion(model, images, result.heatmaps, result.targets, steps=steps, baseline=baseline,
                               batch_size=batch_size, seed=seed)
    hits: list = [None] * len(rows)
    with_mask = [i for i, m in enumerate(rows["mask_path"]) if isinstance(m, str) and os.path.isfile(m)]
    if with_mask:
        masks = np.stack([read_mask(rows["mask_path"].iloc[i], card.image_size) for i in with_mask])
        for i, hit in zip(with_mask, pointing_game(result.heatmaps[with_mask], masks), strict=True):
            hits[i] = bool(hit)
    peaks = result.peaks
    records = []
    for i, (image_id, path) in enumerate(zip(rows["image_id"], rows["path"], strict=True)):
        photo = plots.display_photo(read_rgb(path), images[i])
        heat_path = out / "gradcam" / f"{image_id}_heatmap.png"
        over_path = out / "gradcam" / f"{image_id}_overlay.png"
        heat_png = plots.heatmap_picture(result.heatmaps[i], photo.shape[:2], palette)
        over_png = plots.overlay(photo, result.heatmaps[i], palette, alpha)
        plots.save_png(heat_png, heat_path)
        plots.save_png(over_png, over_path)
        lime = _lime_picture(out, image_id)
        plots.save_side_by_side(out / "side_by_side" / f"{image_id}.png", photo, over_png, lime)
        records.append({
            "image_id": image_id, "label": card.classes[result.targets[i]], "layer": result.layer,
            "heatmap_path": str(heat_path.relative_to(out)), "overlay_path": str(over_path.relative_to(out)),
            "peak_y": int(peaks[i, 0]), "peak_x": int(peaks[i, 1]),
            "deletion_auc": float(faith.deletion_auc[i]), "insertion_auc": float(faith.insertion_auc[i]),
            "true_label": rows["label"].iloc[i], "target_prob": float(faith.deletion[i, 0]),
            "variant": variant, "pointing_hit": hits[i],
        })
    return pd.DataFrame.from_records(records)
