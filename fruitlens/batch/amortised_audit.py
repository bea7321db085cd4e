"""The nightly audit of the amortised explainer: the whole split explained in one pass per image, a random
sample explained again by an exact method on the same patch grid, agreement and faithfulness per class, and a
fall-back to the exact method for the classes where the amortised explainer cannot be trusted.

The exact method is KernelSHAP on the explainer's own grid (``fruitlens.explain.kernel_shap.grid_kernel_shap``):
the same players (the patches), the same fill the explainer was trained with, the same quantity (Shapley values
of the target's probability), ``DEFAULT_BUDGET`` coalitions per image (fruitlens' default budget), seeded by the
options' seed. ``grid_occlusion`` (one patch removed at a time) is kept for comparison: it equals the Shapley
values only for a classifier additive over patches.

Per class (the class each image is predicted as): the mean Spearman rank correlation of the two attributions
over the patches, the mean top-k overlap (share of the exact top-k patches that are among the amortised
top-k), and the mean deletion and insertion AUCs of both (``fruitlens.explain.faithfulness``; deletion: lower is
more faithful, insertion: higher). The bar is
the exact method's own agreement with itself: the audit images are explained by KernelSHAP twice, with two seeds,
and a class is trusted when the amortised explainer agrees with the first run at least ``min_agreement`` times as
well as the two runs agree with each other (``trusted``; the issue's rule at 1). An untrusted class's images are
explained by the exact method instead, and ``amortised_audit.parquet`` says so (``explained_by``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens.method_options import AmortisedOptions

log = logging.getLogger(__name__)

EXACT = "kernelshap"  # the exact method of the audit: KernelSHAP on the explainer's grid
READ_CHUNK = 512  # images read and explained at a time


@dataclass(frozen=True)
class AuditResult:
    """What the audit wrote and measured: the table, the maps, images explained, images that fell back, and
    the seconds of the amortised explainer over the whole split (reading excluded)."""

    table: str
    maps: str
    images: int
    fallback_images: int
    amortised_seconds: float


def train_run_explainer(source, index_dir: str | os.PathLike, options: AmortisedOptions,
                        out_dir: str | os.PathLike) -> str:
    """Train (or reuse, or resume) the explainer of ``source``'s model on (a seeded sample of) the training
    split; the folder of the trained explainer (``out_dir/<classifier>-<data>``)."""
    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_index
    from fruitlens.explain.amortised_training import explainer_for, sample_rows

    model, card = source.load()
    rows = rows_from_index(index_dir, "train")
    if not len(rows):
        raise ValueError(f"index {index_dir}: no training images to train the amortised explainer on")
    picked = rows.iloc[sample_rows(len(rows), options)].reset_index(drop=True)
    images, _, _ = read_chunk(picked, card.image_size, card.fit)
    return str(explainer_for(model, images, options, out_dir, report=log.info).explainer)


def grid_occlusion(model, images: np.ndarray, targets: np.ndarray, grid: int, fill: str,
                   batch_size: int = 256) -> np.ndarray:
    """(N, grid^2) p_t(x) - p_t(x with patch j showing ``fill``): occlusion on the patch grid (grid^2 + 1
    classifier passes per image)."""
    import tensorflow as tf

    from fruitlens.explain.amortised_training import probs_fn
    from fruitlens.explain.patches import fill_of, patch_masks

    n, h, w, _ = images.shape
    masks = patch_masks((h, w), grid)  # (d, H, W)
    probs = probs_fn(model)
    fills = fill_of(images, fill)
    out = np.empty((n, grid * grid), np.float32)
    per = max(1, batch_size // (grid * grid))
    for s in range(0, n, per):
        x, f, t = images[s:s + per], fills[s:s + per], targets[s:s + per]
        base = probs(tf.constant(x)).numpy()[np.arange(len(x)), t]
        keep = (1.0 - masks)[None, :, :, :, None]
        mixed = keep * x[:, None] + (1.0 - keep) * f[:, None]  # (b, d, H, W, 3)
        p = probs(tf.constant(mixed.reshape(-1, h, w, 3))).numpy().reshape(len(x), grid * grid, -1)
        out[s:s + per] = base[:, None] - p[np.arange(len(x)), :, t]
    return out


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) Spearman correlation of each row of ``a`` with the same row of ``b`` (NaN where one is constant)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return np.divide((ra * rb).sum(axis=1), den, out=np.full(len(a), np.nan), where=den > 0)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(N,) share of the top-``k`` entries of each row of ``b`` that are among the top-``k`` of ``a``."""
    k = min(k, a.shape[1])
    ta, tb = np.argsort(-a, axis=1, kind="stable")[:, :k], np.argsort(-b, axis=1, kind="stable")[:, :k]
    return np.array([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)])


def trusted(agreement: float | None, seed_to_seed: float | None, min_agreement: float) -> bool | None:
    """Whether a class's amortised explanations are trusted: their mean rank correlation with the exact method
    (``agreement``) is at least ``min_agreement`` times the exact method's own seed-to-seed correlation on the same
    images; always with ``min_agreement`` 0; None when the class has no measured agreement."""
    if agreement is None:
        return None
    if min_agreement == 0:
        return True
    return seed_to_seed is not None and agreement >= min_agreement * seed_to_seed


def _mean(values: np.ndarray) -> float | None:
    return float(np.nanmean(values)) if len(values) and np.isfinite(values).any() else None


def audit_run(source, index_dir: str | os.PathLike, split: str, options: AmortisedOptions, audit_images: int,
              min_agreement: float, top_k: int, out_dir: str | os.PathLike) -> AuditResult:
    """Explain the whole ``split`` with the trained explainer ``options.explainer``, audit a seeded sample of
    ``audit_images`` against KernelSHAP on its grid, fall back for the classes not ``trusted`` at
    ``min_agreement`` (a share of KernelSHAP's seed-to-seed agreement); write
    ``amortised_audit.parquet`` and ``amortised_maps.npz`` under ``out_dir`` (an explain folder)."""
    from fruitlens import tables
    from fruitlens.batch.engine import read_chunk
    from fruitlens.batch.rows import rows_from_index
    from fruitlens.explain.amortised import AmortisedExplainer
    from fruitlens.explain.base import scale_per_image
    from fruitlens.explain.faithfulness import deletion_insertion
    from fruitlens.explain.kernel_shap import DEFAULT_BUDGET, grid_kernel_shap
    from fruitlens.explain.patches import patch_index
    from fruitlens.layout import ExplainLayout

    if options.explainer is None:
        raise ValueError("amortised audit: options.explainer is null; expected a trained explainer's folder")
    model, card = source.load()
    explainer = AmortisedExplainer.from_options(model, options)
    grid, fill = explainer.trained.card.grid, explainer.trained.card.fill
    rows = rows_from_index(index_dir, split)
    ids, targets, maps, seconds = [], [], [], 0.0
    for s in range(0, len(rows), READ_CHUNK):
        images, read, _ = read_chunk(rows.iloc[s:s + READ_CHUNK], card.image_size, card.fit)
        if not len(read):
            continue
        began = time.perf_counter()
        phi, scores, _ = explainer.attributions(images)
        seconds += time.perf_counter() - began
        t = scores.argmax(axis=1)
        ids += list(read["image_id"].astype(str))
        targets.append(t)
        maps.append(phi[np.arange(len(t)), :, t])
    n = len(ids)
    targets = np.concatenate(targets) if n else np.zeros(0, np.int64)
    maps = np.concatenate(maps) if n else np.zeros((0, grid * grid), np.float32)
    by_id = dict(zip(rows["image_id"].astype(str), range(len(rows)), strict=True))

    rng = np.random.default_rng([options.seed, 11])
    sample = np.sort(rng.choice(n, min(audit_images, n), replace=False)) if n else np.zeros(0, int)
    s_images, _, _ = read_chunk(rows.iloc[[by_id[ids[i]] for i in sample]].reset_index(drop=True),
                                card.image_size, card.fit)
    exact = grid_kernel_shap(model, s_images, targets[sample], grid, fill, DEFAULT_BUDGET, options.seed,
                             options.batch_size)
    again = grid_kernel_shap(model, s_images, targets[sample], grid, fill, DEFAULT_BUDGET, options.seed + 1,
                             options.batch_size)  # the exact method's own agreement: the bar of trust
    amort = maps[sample]
    rho, rho_exact = rank_correlation(amort, exact), rank_correlation(exact, again)
    overlap = top_k_overlap(amort, exact, top_k)
    index = patch_index(tuple(card.image_size), grid)
    auc = {}  # per audited image, keyed by the table's column
    for name, values in (("amortised", amort), ("exact", exact)):
        curves = deletion_insertion(model, s_images, scale_per_image(values[:, index]), targets[sample],
                                    steps=max(options.faithfulness_steps, 1), baseline=options.baseline,
                                    seed=options.seed) if len(values) else None
        auc[f"deletion_auc_{name}"] = curves.deletion_auc if curves is not None else np.zeros(0)
        auc[f"insertion_auc_{name}"] = curves.insertion_auc if curves is not None else np.zeros(0)

    records, fallback = [], np.zeros(n, bool)
    for c, name in enumerate(card.classes):
        mine = targets == c
        if not mine.any():
            continue
        audited = targets[sample] == c
        corr, bar = _mean(rho[audited]), _mean(rho_exact[audited])
        trust = trusted(corr, bar, min_agreement)
        if trust is False:
            fallback |= mine
        records.append({"class": name, "images": int(mine.sum()), "audited": int(audited.sum()),
                        "rank_correlation": corr, "exact_seed_to_seed": bar,
                        "top_k_overlap": float(overlap[audited].mean()) if audited.any() else None,
                        **{column: float(v[audited].mean()) if audited.any() else None for column, v in auc.items()},
                        "trusted": trust, "explained_by": EXACT if trust is False else "amortised"})
    if fallback.any():  # the untrusted classes' images: the exact method's attributions instead
        where = np.flatnonzero(fallback)
        audited = np.isin(where, sample)  # explained already by the audit (the same coalitions: the same seed)
        maps[where[audited]] = exact[np.searchsorted(sample, where[audited])]
        where = where[~audited]
        for s in range(0, len(where), READ_CHUNK):
            part = where[s:s + READ_CHUNK]
            images, _, _ = read_chunk(rows.iloc[[by_id[ids[i]] for i in part]].reset_index(drop=True),
                                      card.image_size, card.fit)
            maps[part] = grid_kernel_shap(model, images, targets[part], grid, fill, DEFAULT_BUDGET, options.seed,
                                          options.batch_size)
        log.warning("amortised audit: %d images of %d classes below %.2f times %s's seed-to-seed agreement "
                    "explained by %s instead", int(fallback.sum()), sum(r["trusted"] is False for r in records),
                    min_agreement, EXACT, EXACT)
    layout = ExplainLayout(out_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(records, columns=tables.AMORTISED_AUDIT_SCHEMA.names)
    path = tables.write_table(table, layout.amortised_audit, tables.AMORTISED_AUDIT_SCHEMA)
    tmp = Path(str(layout.amortised_maps) + ".tmp.npz")
    np.savez(tmp, image_id=np.array(ids, dtype=str), target=targets.astype(np.int64), maps=maps.astype(np.float32),
             method=np.where(fallback, EXACT, "amortised"), grid=np.int64(grid))
    os.replace(tmp, layout.amortised_maps)
    return AuditResult(str(path), str(layout.amortised_maps), n, int(fallback.sum()), round(seconds, 3))


def audit_line(table: pd.DataFrame | None) -> str:
    """One sentence on an ``amortised_audit`` table ("" when there is none)."""
    if table is None or not len(table):
        return ""
    audited = table[table["audited"] > 0]
    fell = table[table["explained_by"] != "amortised"]
    line = (f"Amortised SHAP explained all {int(table['images'].sum()):,} images (1 explainer and 2 classifier passes "
            f"each); against "
            f"{EXACT} on the same patch grid, on {int(table['audited'].sum()):,} audited images of "
            f"{len(audited):,} classes: rank correlation {audited['rank_correlation'].mean():.2f} ({EXACT} with "
            f"itself, another seed: {audited['exact_seed_to_seed'].mean():.2f}), top-k overlap "
            f"{audited['top_k_overlap'].mean():.0%}, deletion AUC {audited['deletion_auc_amortised'].mean():.3f} "
            f"(exact {audited['deletion_auc_exact'].mean():.3f}; lower is better)")
    if "insertion_auc_amortised" in audited:  # tables written before insertion was audited lack it
        line += (f", insertion AUC {audited['insertion_auc_amortised'].mean():.3f} "
                 f"(exact {audited['insertion_auc_exact'].mean():.3f}; higher is better)")
    line += "."
    if len(fell):
        line += (f" Not trusted (agreement below the configured share of {EXACT}'s agreement with itself), "
                 f"explained by {EXACT} instead: {', '.join(fell['class'].astype(str)[:20])}"
                 f"{' …' if len(fell) > 20 else ''}.")
    return line
