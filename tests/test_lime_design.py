"""LIME's balanced sampling design: every row still uniform, the blocks balanced, less noise in the weights."""

import numpy as np
import pytest

from fruitlens import tables
from fruitlens.cli import main
from fruitlens.explain.lime import explain_lime
from fruitlens.explain.lime_fit import draw_masks
from fruitlens.lime_options import LimeOptions
from tests.test_lime import grid_segments


@pytest.mark.parametrize("s", [1, 2, 6, 50, 63, 64])
def test_balanced_blocks_hide_each_superpixel_half_the_time_independently_of_the_others(s):
    m = 1 << int(np.ceil(np.log2(s + 1)))  # block of 2m rows
    z = draw_masks(np.random.default_rng(s), 3 * 2 * m, s, "balanced")
    assert z.shape == (6 * m, s) and z.dtype == bool and z[0].all()
    for block in z[2 * m:].reshape(2, 2 * m, s):  # the blocks after the first (its row 0 is set to all ones)
        signs = np.where(block, 1, -1)
        np.testing.assert_array_equal(signs.sum(0), 0)  # each superpixel on in exactly half the rows
        np.testing.assert_array_equal(signs.T @ signs, 2 * m * np.eye(s))  # pairs: all four on/off combinations
        rows = {r.tobytes() for r in block}
        assert all((~r).tobytes() in rows for r in block)  # fold-over: each row's complement is in the block


def test_balanced_rows_are_uniform_in_every_position_and_the_blocks_differ():
    draws = np.stack([draw_masks(np.random.default_rng(seed), 40, 6, "balanced") for seed in range(400)])
    share = draws[:, 1:].mean(axis=0)  # (39 rows, 6 superpixels) over 400 seeds: each about 1/2
    assert np.abs(share - 0.5).max() < 0.1  # 400 draws: sd 0.025
    first, second = draws[0, :16], draws[0, 16:32]
    assert not np.array_equal(first[1:], second[1:])  # each block draws its own columns, flips and order


def test_same_seed_same_masks_and_random_is_lime_s_independent_draw():
    a = draw_masks(np.random.default_rng(3), 100, 7, "balanced")
    np.testing.assert_array_equal(a, draw_masks(np.random.default_rng(3), 100, 7, "balanced"))
    r = draw_masks(np.random.default_rng(3), 100, 7)
    expected = np.random.default_rng(3).integers(0, 2, (100, 7), dtype=np.int8).astype(bool)
    expected[0] = True
    np.testing.assert_array_equal(r, expected)


def interaction_model(seg):
    """Two classes from which of six grid cells are shown (images of ones, hidden cells 0): main effects and
    pairwise interactions, the case where independent rows leave the most noise in the weights."""
    cells = np.stack([seg == k for k in range(6)])

    def fn(x):
        c = (x[..., 0][:, None] * cells).sum(axis=(2, 3)) / cells.sum(axis=(1, 2))  # (n, 6): 1 shown, 0 hidden
        logit = 2 * c[:, 0] - 1.5 * c[:, 1] + 3 * c[:, 2] * c[:, 3] - 2 * c[:, 4] * c[:, 5] + 0.5 * c[:, 1] * c[:, 4]
        p = 1 / (1 + np.exp(-logit))
        return np.stack([1 - p, p], axis=1)

    return fn


def _weights(design, num_samples, seeds):
    h, w = 12, 17
    seg = np.broadcast_to(grid_segments(h, w), (1, h, w))
    fn, x = interaction_model(seg[0]), np.ones((1, h, w, 3), np.float32)
    res = [explain_lime(fn, x, LimeOptions.reference(num_samples=num_samples, design=design, hide_color=0.0),
                        segments=seg, labels=[1], seed=s) for s in seeds]
    return np.stack([r[0].weights[1] for r in res])


def test_balanced_weights_are_the_same_estimate_with_less_noise():
    truth = _weights("random", 20000, [99])[0]  # many random rows: the estimand of both designs
    seeds = range(40)
    random, balanced = _weights("random", 64, seeds), _weights("balanced", 64, seeds)
    error = {name: np.sqrt(((w - truth) ** 2).mean()) for name, w in (("random", random), ("balanced", balanced))}
    assert error["balanced"] < 0.9 * error["random"]  # measured 0.82 (0.74 at 256 rows)
    # the same estimand: over the seeds both means sit as close to the 20000-row weights (the Ridge's shrinkage
    # at 64 rows is the same for both)
    bias = {name: np.abs(w.mean(0) - truth).max() for name, w in (("random", random), ("balanced", balanced))}
    assert bias["balanced"] < bias["random"] + 0.05 * np.abs(truth).max()


def test_an_unknown_design_is_refused_where_it_enters():
    with pytest.raises(ValueError, match="design 'hadamard'"):
        LimeOptions.reference(num_samples=20, design="hadamard")
    with pytest.raises(ValueError, match="design.*hadamard.*random, balanced"):
        LimeOptions(design="hadamard")


def test_design_and_control_variate_flags(demo_dir, tmp_path, capsys):
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path / "run", classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 16))
    common = ["explain", "--model", str(run), "--data", str(demo_dir), "--method", "lime", "--limit", "2",
              "--plots", "none", "--num-samples", "200", "--n-superpixels", "12", "--no-adaptive"]
    variants = {"random": ["--design", "random", "--no-control-variate"],
                "balanced": ["--design", "balanced", "--no-control-variate"],
                "balanced_cv": ["--design", "balanced", "--control-variate"], "default": []}
    weights = {}
    for name, flags in variants.items():
        assert main(common + ["--out", str(tmp_path / name), *flags]) == 0
        table = tables.read_table(tmp_path / name / "lime.parquet").sort_values(["image_id", "superpixel"])
        assert (table["num_samples"] == 200).all()
        weights[name] = table["weight"].to_numpy()
    assert len({len(w) for w in weights.values()}) == 1
    assert not np.allclose(weights["balanced"], weights["random"])
    assert not np.allclose(weights["balanced_cv"], weights["balanced"])
    np.testing.assert_array_equal(weights["default"], weights["balanced_cv"])  # the defaults: balanced, with it
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "bad"), "--design", "sobol"]) == 2
    assert "design" in capsys.readouterr().err
