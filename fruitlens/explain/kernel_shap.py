"""KernelSHAP (Lundberg & Lee, NeurIPS 2017) on a patch grid: the exact method the amortised explainer is audited
against (both estimate the Shapley values of the same players, the patches, with the same fill).

The players are the ``grid`` x ``grid`` patches (``patch_index``); a coalition S shows its patches and the
``fill`` elsewhere, v(S) is the classifier's probability of the target class. ``budget`` coalitions per image
are drawn from the Shapley kernel distribution (size k in 1..d-1 with probability proportional to
(d - 1) / (k (d - k)), then k patches uniformly), each paired with its complement (``shapley_subsets``), seeded;
the same coalitions serve every image of a call, so an image's values do not depend on the others explained with
it. As the kernel weights are the sampling probabilities, each coalition weighs its number of draws (duplicates
merged, as shap's KernelExplainer does). The values solve the weighted least squares

    min_phi sum_S w(S) (v(S) - v(empty) - 1_S^T phi)^2   subject to   sum_j phi_j = v(all) - v(empty)

with the constraint imposed by eliminating the last player (phi_d = gap - sum_{j<d} phi_j), Lundberg & Lee's
way, and the remaining regression solved by sklearn's ``LinearRegression`` (no intercept, ``sample_weight``).
For a value function additive over the patches the answer is exact at any budget of at least d coalitions.

Cost: ``budget`` classifier passes per image, plus 2 (v(all) and v(empty)).
"""

from __future__ import annotations

import numpy as np

#: fruitlens' default budget of KernelSHAP: coalitions per image (8 per patch of the default 8x8 grid)
DEFAULT_BUDGET = 512


def coalitions(players: int, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct coalitions of ``budget`` seeded Shapley-kernel draws (complement pairs), (m, players) float32
    0/1, and their weights (m,) (the number of times each was drawn).

    Raises:
        ValueError: a budget that is not an even number >= 2, or fewer than 1 player.
    """
    from fruitlens.explain.patches import shapley_subsets

    if players < 1:
        raise ValueError(f"players {players}: expected at least 1")
    if budget < 2 or budget % 2:
        raise ValueError(f"KernelSHAP budget {budget}: expected an even number of coalitions >= 2 "
                         "(each comes with its complement)")
    drawn = shapley_subsets(np.random.default_rng([seed, 29]), 1, budget, players)[0]
    unique, counts = np.unique(drawn, axis=0, return_counts=True)
    return unique.astype(np.float32), counts.astype(np.float64)


def kernel_shap_fit(subsets: np.ndarray, weights: np.ndarray, values: np.ndarray, v_empty: np.ndarray,
                    v_all: np.ndarray) -> np.ndarray:
    """(N, d) Shapley values by the constrained weighted least squares above.

    Args:
        subsets: (m, d) 0/1 coalitions. weights: (m,) their weights.
        values: (N, m) v(S) of each image under each coalition. v_empty, v_all: (N,) v(empty), v(all).
    """
    from sklearn.linear_model import LinearRegression

    d = subsets.shape[1]
    gap = v_all - v_empty
    if d == 1:
        return gap[:, None].astype(np.float32)
    x = subsets[:, :-1] - subsets[:, -1:]  # phi_d eliminated: 1_S^T phi = sum_{j<d} phi_j (z_j - z_d) + z_d gap
    y = values - v_empty[:, None] - subsets[None, :, -1] * gap[:, None]  # (N, m)
    fit = LinearRegression(fit_intercept=False).fit(x.astype(np.float64), y.T.astype(np.float64),
                                                    sample_weight=weights)
    head = np.atleast_2d(fit.coef_)  # (N, d - 1)
    return np.concatenate([head, (gap - head.sum(axis=1))[:, None]], axis=1).astype(np.float32)


def grid_kernel_shap(model, images: np.ndarray, targets: np.ndarray, grid: int, fill: str,
                     budget: int = DEFAULT_BUDGET, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """(N, grid^2) KernelSHAP values of the patches of each image for its target class (probabilities).

    Args:
        model: the classifier, (N, H, W, 3) float32 in [0, 1] -> (N, C) scores (softmax applied when it has none).
        images: (N, H, W, 3) float32 in [0, 1]; never modified. targets: (N,) class ids.
        grid: patches per side. fill: what removed patches show (``fill_of``: black, gray, mean).
        budget: coalitions per image (even). seed: the coalitions' seed. batch_size: classifier inputs per call.
    """
    import tensorflow as tf

    from fruitlens.explain.amortised_training import probs_fn
    from fruitlens.explain.patches import fill_of, patch_masks

    images = np.ascontiguousarray(images, np.float32)
    n, h, w, _ = images.shape
    targets = np.asarray(targets, np.int64)
    subsets, weights = coalitions(grid * grid, budget, seed)
    if n == 0:
        return np.zeros((0, grid * grid), np.float32)
    keep = np.einsum("md,dhw->mhw", subsets, patch_masks((h, w), grid))[..., None]  # (m, H, W, 1)
    probs = probs_fn(model)
    fills = fill_of(images, fill)
    rows = np.arange(n)

    def target_probs(x: np.ndarray) -> np.ndarray:
        return np.concatenate([probs(tf.constant(x[i:i + batch_size])).numpy()
                               for i in range(0, n, batch_size)])[rows, targets]

    v_all, v_empty = target_probs(images), target_probs(fills)
    m = len(subsets)
    values = np.empty((n, m), np.float64)
    for i in range(n):
        for s in range(0, m, batch_size):
            k = keep[s:s + batch_size]
            mixed = k * images[i] + (1.0 - k) * fills[i]
            values[i, s:s + batch_size] = probs(tf.constant(mixed)).numpy()[:, targets[i]]
    return kernel_shap_fit(subsets, weights, values, v_empty, v_all)
