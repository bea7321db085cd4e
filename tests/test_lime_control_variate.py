"""LIME's control variate: a logistic surrogate's share of the weights is computed without sampling noise."""

import logging

import numpy as np
import pytest

from fruitlens.explain.lime import explain_lime
from fruitlens.lime_options import LimeOptions
from tests.test_lime import grid_segments
from tests.test_lime_design import interaction_model

H, W = 12, 17


def cells_shown(x, seg):
    cells = np.stack([seg == k for k in range(6)])
    return (x[..., 0][:, None] * cells).sum(axis=(2, 3)) / cells.sum(axis=(1, 2))  # (n, 6): 1 shown, 0 hidden


def logistic_in_the_cells(seg):
    """p = sigmoid(2 c0 - 1.5 c1 + c2 - 0.5): exactly the surrogate's family."""
    def fn(x):
        c = cells_shown(x, seg)
        p = 1 / (1 + np.exp(-(2 * c[:, 0] - 1.5 * c[:, 1] + c[:, 2] - 0.5)))
        return np.stack([1 - p, p], axis=1)
    return fn


def _explain(model_of, seeds, **kw):
    seg = np.broadcast_to(grid_segments(H, W), (1, H, W))
    fn, x = model_of(seg[0]), np.ones((1, H, W, 3), np.float32)
    return [explain_lime(fn, x, LimeOptions.reference(hide_color=0.0, **kw),
                         segments=seg, labels=[1], seed=s)[0] for s in seeds]


def _weights(model_of, seeds, **kw):
    return np.stack([e.weights[1] for e in _explain(model_of, seeds, **kw)])


def test_a_logistic_model_is_explained_without_sampling_noise():
    plain = _weights(logistic_in_the_cells, range(10), num_samples=256)
    cv = _weights(logistic_in_the_cells, range(10), num_samples=256, control_variate=True)
    # the surrogate is the model: what noise is left comes from its fit's small L2 (measured 0.034 of plain's)
    assert cv.std(0).max() < 0.1 * plain.std(0).max()
    np.testing.assert_allclose(cv.mean(0), plain.mean(0), atol=3 * plain.std(0).max() / np.sqrt(10))


def test_same_estimand_with_less_noise_on_a_model_with_interactions():
    truth = _weights(interaction_model, [99], num_samples=20000)[0]  # the estimand: many random rows
    seeds = range(40)
    # pairwise interactions are not the surrogate's family: less gain than on a saturating classifier, but a
    # gain (measured error ratios 0.87 with random rows, 0.74 balanced)
    for design, ratio in (("random", 0.97), ("balanced", 0.85)):
        plain = _weights(interaction_model, seeds, num_samples=256, design=design)
        cv = _weights(interaction_model, seeds, num_samples=256, design=design, control_variate=True)
        error = {name: np.sqrt(((w - truth) ** 2).mean()) for name, w in (("plain", plain), ("cv", cv))}
        assert error["cv"] < ratio * error["plain"], (design, error)
        bias = {name: np.abs(w.mean(0) - truth).max() for name, w in (("plain", plain), ("cv", cv))}
        assert bias["cv"] < bias["plain"] + 0.02 * np.abs(truth).max(), (design, bias)  # the same estimand


def test_intercept_weights_and_local_prediction_agree_with_the_control_variate():
    for kw in ({}, {"num_features": 2, "feature_selection": "forward_selection"},
               {"num_features": 3, "feature_selection": "highest_weights"}):
        e = _explain(interaction_model, [0], num_samples=100, control_variate=True, **kw)[0]
        w = e.weights[1]
        assert np.isfinite(w).all() and np.count_nonzero(w) == kw.get("num_features", 6)
        assert e.local_pred[1] == pytest.approx(e.intercept[1] + w.sum())  # row 0 shows every superpixel
        assert 0.0 <= e.score[1] <= 1.0


def test_outputs_that_are_not_probabilities_are_fitted_without_it(caplog):
    def logits_of(seg):
        def fn(x):
            c = cells_shown(x, seg)
            return np.stack([-c[:, 0], 3 * c[:, 0] - c[:, 1]], axis=1)
        return fn
    plain = _weights(logits_of, [0], num_samples=50)
    with caplog.at_level(logging.WARNING, logger="fruitlens.explain.lime"):
        cv = _weights(logits_of, [0], num_samples=50, control_variate=True)
    np.testing.assert_array_equal(cv, plain)
    assert "not probabilities" in caplog.text


def test_adaptive_stops_sooner_with_it():
    kw = dict(num_samples=1000, adaptive=True, round_size=32, tolerance=0.01, design="balanced", min_samples=0)
    plain = _explain(logistic_in_the_cells, range(5), **kw)
    cv = _explain(logistic_in_the_cells, range(5), control_variate=True, **kw)
    rows = {name: np.mean([e.num_samples for e in exps]) for name, exps in (("plain", plain), ("cv", cv))}
    assert all(e.converged for e in cv) and all(e.num_samples == 32 for e in cv)  # stable after one round
    assert rows["plain"] > 200, rows  # measured: 410 rows without it


def test_adaptive_never_stops_before_min_samples():
    kw = dict(num_samples=1000, adaptive=True, round_size=32, tolerance=0.01, design="balanced", control_variate=True)
    early = _explain(logistic_in_the_cells, range(3), min_samples=0, **kw)
    floor = _explain(logistic_in_the_cells, range(3), min_samples=96, **kw)
    assert [e.num_samples for e in early] == [32] * 3 and [e.num_samples for e in floor] == [96] * 3
    assert all(e.converged for e in floor)
    with pytest.raises(ValueError, match="min_samples -1"):
        _explain(logistic_in_the_cells, [0], min_samples=-1, **kw)


def test_surrogate_fit_does_not_overshoot_when_every_probability_is_near_one():
    """Rows of one Fruits-360 image whose explained probability is 0.90-0.99993 on all 128 rows: full Newton
    steps ran to coefficients of 6e10 (and overflow warnings); halved steps stay at the penalised optimum."""
    import warnings
    from pathlib import Path

    from fruitlens.explain.lime_fit import fit_surrogate

    case = np.load(Path(__file__).parent / "data" / "surrogate_saturated.npz")
    z, y = case["z"].astype(bool), case["y"].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        surrogate = fit_surrogate(z, y, float(case["kernel_width"]), True)
    assert surrogate is not None
    assert np.abs(surrogate.coef).max() < 50
    assert np.abs(surrogate(z.astype(np.float64)) - y).max() < 0.05
