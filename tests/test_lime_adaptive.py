"""Adaptive LIME: rounds that stop when the weights are stable; the fixed count unchanged (to the last bits)."""

import numpy as np
import pytest

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.explain import lime as fl
from fruitlens.explain.lime import explain_lime
from fruitlens.explain.lime_fit import kernel_weights
from fruitlens.lime_options import LimeOptions
from tests.test_lime import grid_segments, images_of, keras_model, region_model  # noqa: F401 - fixture


def logistic_model(x):
    """A non-linear function model of two image regions (12 x 17 images): two classes."""
    a = x[:, :6, :6].mean(axis=(1, 2, 3))
    b = x[:, 6:, 8:].mean(axis=(1, 2, 3))
    p = 1 / (1 + np.exp(-(4 * a * b - 2 * b + a)))
    return np.stack([1 - p, p], axis=1)


# weights, intercept and score of the top label from the code before adaptive sampling (float.hex: exact)
GOLDEN = [
    ["-0x1.8fbfa08dc2683p-19", "-0x1.8b3f3572e0aa3p-17", "-0x1.07914c48b6271p-17", "0x1.53bb9d1ca3db4p-18",
     "0x1.4d072a8fafbf4p-12", "-0x1.a266c192fecf8p-18", "0x1.64d7795bc3a8fp-1", "0x1.f84365c8fb31fp-1"],
    ["0x1.04ff5aa0fc16ap-16", "0x1.3d4425812bd11p-18", "0x1.7b62fbd58d5f7p-16", "-0x1.8e68feb704de3p-16",
     "-0x1.ab2f5ec8bbf26p-11", "-0x1.f275bce645606p-17", "0x1.64ef6c172fa2fp-1", "0x1.f7666e16f8ac6p-1"],
]


def test_fixed_mode_reproduces_the_results_before_adaptive_sampling():
    h, w = 12, 17
    seg = np.broadcast_to(grid_segments(h, w), (2, h, w))
    x = np.random.default_rng(0).uniform(0.2, 1.0, (2, h, w, 3)).astype(np.float32)
    res = explain_lime(logistic_model, x, LimeOptions.reference(num_samples=64, batch_size=50, adaptive=False),
                       segments=seg, seed=3)
    for e, golden in zip(res, GOLDEN, strict=True):
        top = e.labels[0]
        got = [*e.weights[top], e.intercept[top], e.score[top]]
        # bit for bit on the CPU that recorded them (AMD EPYC); another CPU's BLAS kernels round the Ridge's sums
        # differently in the last bit or two (an Intel Xeon: 2e-15 relative), other samples would differ by O(1)
        np.testing.assert_allclose(got, [float.fromhex(v) for v in golden], rtol=1e-12, atol=0)
        assert e.num_samples == e.max_samples == 64 and np.isfinite(e.stability)


def test_stability_uses_the_same_ridge_as_the_weights():
    h, w = 12, 17
    seg = np.broadcast_to(grid_segments(h, w), (1, h, w))
    x = images_of(1, h, w)
    e = explain_lime(logistic_model, x, LimeOptions.reference(num_samples=300, adaptive=False), segments=seg, seed=1)[0]
    z = np.random.default_rng((1, 0)).integers(0, 2, (300, 6), dtype=np.int8).astype(bool)
    z[0] = True
    y = logistic_model(np.where(z[:, seg[0]][..., None], x[0], x[0].mean(axis=(0, 1))))  # grid cells: one colour
    assert fl.stability(z, y[:, [e.labels[0]]], fl.KERNEL_WIDTH) > 0
    # closed-form ridge of _stability == sklearn's: its SE is relative to these weights
    sw = kernel_weights(z.astype(float), fl.KERNEL_WIDTH)
    from sklearn.linear_model import Ridge

    ref = Ridge(alpha=1.0).fit(z.astype(float), y[:, e.labels[0]], sample_weight=sw).coef_
    data = z.astype(float)
    xc = data - sw @ data / sw.sum()
    beta = np.linalg.solve((xc.T * sw) @ xc + np.eye(6), (xc.T * sw) @ (y[:, e.labels[0]] - sw @ y[:, e.labels[0]]
                                                                          / sw.sum()))
    np.testing.assert_allclose(beta, ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("n, h, w", [(1, 12, 18), (2, 12, 18), (2, 15, 9)])
def test_an_easy_model_stops_after_the_first_round(n, h, w):
    seg = np.broadcast_to(grid_segments(h, w), (n, h, w))
    fn = region_model(seg[0] == 4)  # linear in the superpixels: exact after one round
    res = explain_lime(fn, images_of(n, h, w), LimeOptions.reference(num_samples=1000, hide_color=0.0, adaptive=True,
                                                                     round_size=60, min_samples=0),
                       segments=seg, labels=[1] * n)
    for r in res:
        assert r.num_samples == 60 and r.max_samples == 1000 and r.converged and r.stability <= 0.1
        assert int(np.argmax(r.weights[1])) == 4


def test_images_stop_independently_and_a_weak_signal_takes_more_rounds():
    h, w = 12, 18
    seg = np.broadcast_to(grid_segments(h, w), (2, h, w))
    linear = region_model(seg[0] == 4)
    rng = np.random.default_rng(0)

    def noisy(batch):  # the same noise on every image: the dim image's weights are 10x weaker against it
        p = linear(batch)
        return p + rng.normal(0, 0.02, (len(batch), 1)) * np.array([[-1.0, 1.0]])

    x = np.ones((2, h, w, 3), np.float32)
    x[1] *= 0.1
    res = explain_lime(noisy, x, LimeOptions.reference(num_samples=1000, hide_color=0.0, adaptive=True,
                                                       round_size=50, tolerance=0.05, min_samples=0),
                       segments=seg, labels=[1, 1])
    assert res[0].converged and res[0].num_samples == 50
    assert res[1].num_samples > res[0].num_samples and int(np.argmax(res[1].weights[1])) == 4
    assert res[1].converged or res[1].num_samples == 1000


def test_adaptive_same_seed_same_result_batch_equals_one_by_one(keras_model):  # noqa: F811
    x = images_of(2, 12, 17, seed=3)
    kw = dict(num_samples=500, adaptive=True, round_size=50, tolerance=0.05, top_labels=2)
    a = explain_lime(keras_model, x, LimeOptions.reference(**kw), seed=5)
    b = explain_lime(keras_model, x, LimeOptions.reference(batch_size=7, **kw),
                     seed=5)  # batches span images and rounds
    for i in range(2):
        alone = explain_lime(keras_model, x[i:i + 1], LimeOptions.reference(**kw), seed=[(5, i)])[0]
        fixed = explain_lime(keras_model, x[i:i + 1], LimeOptions.reference(num_samples=a[i].num_samples, top_labels=2),
                             seed=[(5, i)])[0]
        assert a[i].num_samples % 50 == 0 or a[i].num_samples == 500
        for other in (b[i], alone, fixed):
            assert other.num_samples == a[i].num_samples and other.labels == a[i].labels
            for label in a[i].labels:
                np.testing.assert_allclose(other.weights[label], a[i].weights[label], rtol=1e-5, atol=1e-7)
        assert b[i].stability == pytest.approx(a[i].stability, rel=1e-4)


def test_tolerance_zero_uses_every_sample_and_rows_carry_the_new_columns(keras_model):  # noqa: F811
    options = LimeOptions.reference(num_samples=120, adaptive=True, round_size=50, tolerance=0.0, min_samples=0)
    res = explain_lime(keras_model, images_of(1, 12, 17), options)
    assert res[0].num_samples == 120 and not res[0].converged
    df = res[0].to_rows("x")
    assert {"max_samples", "stability", "converged"} <= set(df.columns)
    tables.to_arrow(df, tables.LIME_SCHEMA)


@pytest.mark.parametrize("kwargs, message", [({"round_size": 1}, "round_size 1"), ({"tolerance": -1}, "tolerance -1")])
def test_bad_adaptive_options(keras_model, kwargs, message):  # noqa: F811
    with pytest.raises(ValueError, match=message):
        LimeOptions.reference(num_samples=20, adaptive=True, **kwargs)
    with pytest.raises(ValueError, match=message):
        LimeOptions(**kwargs)


def test_no_adaptive_flag(demo_dir, tmp_path):
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path / "run", classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 16))
    common = ["explain", "--model", str(run), "--data", str(demo_dir), "--method", "lime", "--limit", "2",
              "--plots", "none", "--num-samples", "300", "--n-superpixels", "12"]
    assert main(common + ["--out", str(tmp_path / "fixed"), "--no-adaptive"]) == 0
    assert main(common + ["--out", str(tmp_path / "adaptive"), "--adaptive", "--round-size", "100"]) == 0
    fixed = tables.read_table(tmp_path / "fixed" / "lime.parquet")
    adaptive = tables.read_table(tmp_path / "adaptive" / "lime.parquet")
    assert (fixed["num_samples"] == 300).all() and (fixed["max_samples"] == 300).all()
    assert adaptive["num_samples"].isin([100, 200, 300]).all() and (adaptive["max_samples"] == 300).all()
    assert (adaptive["converged"] | (adaptive["num_samples"] == 300)).all()
