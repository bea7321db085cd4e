"""LIME's local linear models: how rows are drawn, the weighted Ridge, its stability and the control variate.

Used by :func:`fruitlens.explain.lime.explain_lime` (see its module docstring for the procedure).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.linalg import hadamard

from fruitlens.explain.results import LimeExplanation

RIDGE_ALPHA = 1.0
POPULATION_ROWS = 8192  # rows of the fixed draw that stands for all of {0, 1}^S in the control variate


def draw_masks(rng: np.random.Generator, num_samples: int, s: int, design: str = "random") -> np.ndarray:
    """(num_samples, s) bool rows, each uniform on {0, 1}^s, the first all ones (the image itself).

    "random": independent rows (lime's). "balanced": fold-over blocks of a randomised Hadamard design: in each
    block of 2m rows (m the power of two above s) every superpixel is hidden in exactly half the rows and every
    pair of superpixels in each of the four on/off combinations equally often, and each row's complement is in
    the block too, so the superpixels' main effects are not confounded with each other nor with their pairwise
    interactions. Each block draws its own column subset, column flips and row order, so every row is still
    uniform on {0, 1}^s: the same estimand as "random", with less sampling noise in the weights.
    """
    if design == "random":
        z = rng.integers(0, 2, (num_samples, s), dtype=np.int8).astype(bool)
    else:
        m = 1 << int(np.ceil(np.log2(s + 1)))
        h = hadamard(m)[:, 1:] > 0  # (m, m - 1): each column half true, columns pairwise orthogonal
        blocks = []
        for _ in range(-(-num_samples // (2 * m))):  # blocks of 2m rows, the last one cut
            b = h[:, rng.choice(m - 1, s, replace=False)] ^ rng.integers(0, 2, s).astype(bool)
            blocks.append(np.concatenate([b, ~b])[rng.permutation(2 * m)])
        z = np.concatenate(blocks)[:num_samples]
    z[0] = True
    return z


def kernel_weights(data: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's sample weights: exponential kernel of the cosine distance of each row to the all-ones row."""
    s = data.shape[1]
    # cosine distance of each row to the all-ones row: 1 - |z| / sqrt(|z| S); an all-zero row is at 1
    distances = 1.0 - np.sqrt(data.sum(axis=1) / s)
    return np.sqrt(np.exp(-(distances ** 2) / kernel_width ** 2))


def stability(z: np.ndarray, y: np.ndarray, kernel_width: float, cv: Surrogate | None = None) -> float:
    """``max_s SE(w_s) / max_s |w_s|`` of the weighted Ridge of ``y`` (n, k) on ``z`` (n, S), worst label.

    The Ridge is lime's (alpha 1, intercept, sample weights ``sw``), solved in closed form on the weighted-
    centred design; SE from the HC0 sandwich ``A^-1 X' diag(sw^2 r^2) X A^-1``, ``A = X' diag(sw) X + alpha I``.
    With a control variate ``cv`` the Ridge is fitted to ``y - g(z)`` and the weights are its coefficients plus
    the surrogate's population ones, so the residuals (and the SE) are those of the controlled estimate.
    inf when every weight is 0 (nothing to rank yet) or there are too few rows for a residual.
    """
    data = z.astype(np.float64)
    n, s = data.shape
    if n <= 2:
        return float("inf")
    sw = kernel_weights(data, kernel_width)
    offset = np.zeros((s, y.shape[1]))
    if cv is not None:
        y = y - cv(data)
        offset, _ = cv.population_fit(np.arange(s), float(sw.sum()))
    wsum = sw.sum()
    xc = data - (sw @ data) / wsum
    yc = y - (sw @ y) / wsum
    a = (xc.T * sw) @ xc + RIDGE_ALPHA * np.eye(s)
    a_inv = np.linalg.inv(a)
    beta = a_inv @ ((xc.T * sw) @ yc)  # (S, k)
    resid = yc - xc @ beta
    worst = 0.0
    for j in range(y.shape[1]):
        u = xc * (sw * resid[:, j])[:, None]
        half = a_inv @ u.T  # (S, n): cov = half @ half.T
        se = np.sqrt(np.einsum("ij,ij->i", half, half))
        top = np.abs(beta[:, j] + offset[:, j]).max()
        if top <= 0:
            return float("inf")
        worst = max(worst, float(se.max() / top))
    return worst


# ------------------------------------------------------------------------------------ the control variate


class Surrogate:
    """A logistic model of the explained probabilities, ``g(z) = sigmoid(coef[:, 0] + z @ coef[:, 1:].T)``.

    LIME's weights are a linear function of the outputs: ``w = L(f)`` on the drawn rows. Written as
    ``L(f) = L(g) + L(f - g)``, the first term can be computed on any number of rows without calling the model:
    it is replaced by the same weighted Ridge of ``g`` on a fixed draw of ``POPULATION_ROWS`` rows (its alpha
    scaled to the same share of the kernel weights). Only ``f - g`` keeps the sampling noise of the few drawn
    rows, and a logistic ``g`` takes out most of it: a classifier's probability saturates, and that curvature is
    what a linear model of the rows cannot follow (every order of interaction at once). The estimand is the
    same; what changes is how far an estimate from n rows lies from it (benchmarks/README.md).
    """

    def __init__(self, coef: np.ndarray, kernel_width: float):
        self.coef = coef  # (k, S + 1)
        self.kernel_width = kernel_width

    def __call__(self, data: np.ndarray) -> np.ndarray:
        """(n, k) surrogate probabilities of rows ``data`` (n, S)."""
        from scipy.special import expit

        return expit(self.coef[:, 0] + data @ self.coef[:, 1:].T)

    def population_fit(self, cols: np.ndarray, sw_sum: float) -> tuple[np.ndarray, np.ndarray]:
        """(coef (len(cols), k), intercept (k,)) of the weighted Ridge of g on columns ``cols`` of the fixed
        draw, alpha scaled from rows whose kernel weights sum to ``sw_sum``."""
        z, sw, xm, xcw, gram = _population(self.coef.shape[1] - 1, self.kernel_width)
        g = self(z)
        ym = sw @ g / sw.sum()
        alpha = RIDGE_ALPHA * sw.sum() / sw_sum
        beta = np.linalg.solve(gram[np.ix_(cols, cols)] + alpha * np.eye(len(cols)), xcw[:, cols].T @ g)
        return beta, ym - xm[cols] @ beta


@functools.lru_cache(maxsize=32)
def _population(s: int, kernel_width: float):
    """The fixed draw standing for all rows on ``s`` superpixels (balanced, seeded by ``s``): rows, kernel
    weights, weighted column means, weighted-centred rows times their weights, and the weighted Gram matrix."""
    z = draw_masks(np.random.default_rng((0x5EED, s)), POPULATION_ROWS, s, "balanced").astype(np.float64)
    sw = kernel_weights(z, kernel_width)
    xm = sw @ z / sw.sum()
    xcw = (z - xm) * sw[:, None]
    return z, sw, xm, xcw, xcw.T @ (z - xm)


def fit_surrogate(z: np.ndarray, y: np.ndarray, kernel_width: float, enabled: bool, l2: float = 1e-2,
               iters: int = 50) -> Surrogate | None:
    """Weighted logistic fit (Newton, soft targets ``y`` (n, k) in [0, 1], L2 ``l2`` on the slopes) of each
    explained probability on the rows; None when off, when ``y`` is not a probability, or when it fails."""
    if not enabled or y.min() < 0.0 or y.max() > 1.0:
        return None
    data = z.astype(np.float64)
    n, s = data.shape
    sw = kernel_weights(data, kernel_width)
    x = np.concatenate([np.ones((n, 1)), data], axis=1)
    ridge = l2 * np.eye(s + 1)
    ridge[0, 0] = 1e-9
    coefs = []
    for target in np.clip(y, 1e-6, 1 - 1e-6).T:
        b = _logistic_newton(x, target, sw, ridge, iters)
        if b is None:
            return None
        coefs.append(b)
    return Surrogate(np.stack(coefs), kernel_width)


def _logistic_newton(x: np.ndarray, target: np.ndarray, sw: np.ndarray, ridge: np.ndarray, iters: int
                     ) -> np.ndarray | None:
    """Coefficients minimising the weighted cross-entropy of sigmoid(x @ b) against ``target`` plus
    b' ridge b / 2: Newton steps, halved while they do not lower it (a full step can overshoot by orders of
    magnitude when the targets all sit near 0 or 1). None when it does not converge to finite values."""
    from scipy.special import expit

    def loss(b: np.ndarray) -> float:
        eta = x @ b
        return float(sw @ (target * np.logaddexp(0, -eta) + (1 - target) * np.logaddexp(0, eta)) + b @ ridge @ b / 2)

    mean = np.average(target, weights=sw)
    b = np.zeros(x.shape[1])
    b[0] = np.log(mean / (1 - mean))
    current = loss(b)
    for _ in range(iters):
        p = expit(x @ b)
        step = np.linalg.solve((x.T * (sw * p * (1 - p))) @ x + ridge, x.T @ (sw * (p - target)) + ridge @ b)
        for _ in range(30):
            trial = loss(b - step)
            if trial <= current:
                break
            step = step / 2
        else:
            break  # no step lowers the loss: b is its minimum to float precision
        b, current = b - step, trial
        if np.abs(step).max() < 1e-8:
            break
    return b if np.isfinite(b).all() else None


def fit_explanation(z: np.ndarray, probs: np.ndarray, labels: np.ndarray, seg: np.ndarray, num_samples: int,
             num_features: int | None, selection: str, kernel_width: float, seg_name: str,
             stability: float = float("nan"), tolerance: float = 0.0, max_samples: int | None = None,
             cv: Surrogate | None = None) -> LimeExplanation:
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    data = z.astype(np.float64)
    s = data.shape[1]
    sw = kernel_weights(data, kernel_width)
    labels = [int(v) for v in labels]
    y = probs[:, labels]
    y_fit = y if cv is None else y - cv(data)  # with a control variate the Ridge sees what the surrogate misses
    weights, intercept, score, local_pred, features = {}, {}, {}, {}, {}
    if num_features is None or num_features >= s or selection == "none":
        used = {label: np.arange(s) for label in labels}
    elif selection == "highest_weights" or (selection == "auto" and num_features > 6):
        coef = np.atleast_2d(Ridge(alpha=0.01).fit(data, y, sample_weight=sw).coef_)  # (k, S); data[0] is all ones
        used = {label: np.argsort(-np.abs(coef[j]), kind="stable")[:num_features] for j, label in enumerate(labels)}
    else:
        used = {label: forward_selection(data, y[:, j], sw, num_features) for j, label in enumerate(labels)}
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, label in enumerate(labels):
        groups.setdefault(tuple(sorted(used[label].tolist())), []).append(j)
    for cols, js in groups.items():  # one multi-target Ridge per distinct feature set (one when all are used)
        cols_idx = np.asarray(cols, dtype=np.int64)
        xs = data[:, cols_idx]
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(xs, y_fit[:, js], sample_weight=sw)
        coef, icpt = np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_)  # (q, c), (q,)
        if cv is not None:
            pop_coef, pop_icpt = cv.population_fit(cols_idx, float(sw.sum()))
            coef, icpt = coef + pop_coef[:, js].T, icpt + pop_icpt[js]
        pred = icpt + xs @ coef.T  # (n, q)
        r2 = np.atleast_1d(r2_score(y[:, js], pred, sample_weight=sw, multioutput="raw_values"))
        for q, j in enumerate(js):
            label = labels[j]
            full = np.zeros(s)
            full[cols_idx] = coef[q]
            weights[label] = full
            intercept[label] = float(icpt[q])
            score[label] = float(r2[q])
            local_pred[label] = float(pred[0, q])
            features[label] = tuple(int(f) for f in cols_idx[np.argsort(-np.abs(coef[q]), kind="stable")])
    return LimeExplanation(
        segments=seg.copy(), labels=tuple(labels), weights=weights, intercept=intercept, score=score,
        local_pred=local_pred, label_prob={label: float(probs[0, label]) for label in labels}, features=features,
        num_samples=num_samples, segmenter=seg_name, max_samples=max_samples or num_samples,
        stability=float(stability), converged=bool(stability <= tolerance))


def forward_selection(data: np.ndarray, y: np.ndarray, sw: np.ndarray, num_features: int) -> np.ndarray:
    """lime's forward selection (greedy, weighted least squares with intercept), every candidate at once.

    At each step the candidate that maximises the weighted R^2 of an unregularised fit with the features
    chosen so far is added; ties go to the lowest superpixel id, as in the reference loop.
    """
    mean_x = np.average(data, axis=0, weights=sw)
    mean_y = np.average(y, weights=sw)
    root = np.sqrt(sw)[:, None]
    xc = (data - mean_x) * root  # weighted, centred: the intercept drops out
    yc = (y - mean_y) * root[:, 0]
    gram = xc.T @ xc  # (S, S)
    xty = xc.T @ yc  # (S,)
    used: list[int] = []
    s = data.shape[1]
    for _ in range(min(num_features, s)):
        cand = np.setdiff1d(np.arange(s), used)
        sets = np.concatenate([np.tile(used, (len(cand), 1)).astype(np.int64), cand[:, None]], axis=1)  # (J, m)
        g = gram[sets[:, :, None], sets[:, None, :]]  # (J, m, m)
        r = xty[sets]  # (J, m)
        beta = np.einsum("jab,jb->ja", np.linalg.pinv(g, hermitian=True), r)
        explained = np.einsum("ja,ja->j", beta, r)  # y'X (X'X)^-1 X'y: larger is a larger R^2
        used.append(int(cand[np.argmax(explained)]))
    return np.asarray(used, dtype=np.int64)
