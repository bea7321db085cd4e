"""predict --tta flip: the same test-time augmentation as evaluate, through the same code (recipes.tta_probs)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fruitlens.cli import main  # noqa: E402
from fruitlens.images import read_rgb  # noqa: E402
from fruitlens.inference import predict_files  # noqa: E402
from fruitlens.tables import read_table  # noqa: E402
from fruitlens.training import TrainConfig, train_model  # noqa: E402


@pytest.fixture(scope="module")
def run(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tta") / "run"
    train_model(demo_dir, out, TrainConfig(arch="seed_cnn", image_size=(12, 16), epochs=1, batch_size=16, seed=2))
    return out


@pytest.mark.parametrize("n", [1, 2])
def test_predict_flip_is_the_mean_of_the_model_on_the_image_and_its_mirror(run, demo_dir, tmp_path, n):
    files = sorted((demo_dir / "Test").rglob("*.png"))[:n]
    table = predict_files(run, files, tmp_path / "out", annotate=False, tta="flip", top_k_count=6)
    model = keras.models.load_model(run / "model.keras", compile=False)
    x = np.stack([read_rgb(f, (12, 16)) for f in files])  # non-square: the flip is along the width
    expected = (np.asarray(model(x, training=False)) + np.asarray(model(x[:, :, ::-1], training=False))) / 2
    plain = np.asarray(model(x, training=False))
    assert not np.allclose(expected, plain, atol=1e-6)  # the mirror changes the answer: the test can fail
    classes = [str(c) for c in read_table(run / "index" / "images.parquet")["label"].drop_duplicates().sort_values()]
    for i, row in enumerate(table.itertuples()):
        got = dict(zip(row.topk_labels, row.topk_probs, strict=True))  # all 6 classes (top_k 6)
        np.testing.assert_allclose([got[c] for c in classes], expected[i], rtol=1e-5, atol=1e-6)
        assert row.pred_label == classes[int(expected[i].argmax())]


def test_cli_predict_tta_flip_differs_from_none_and_bad_values_are_one_line(run, demo_dir, tmp_path, capsys):
    files = [str(f) for f in sorted((demo_dir / "Test").rglob("*.png"))[:3]]
    assert main(["predict", *files, "--model", str(run), "--out", str(tmp_path / "p0")]) == 0
    assert main(["predict", *files, "--model", str(run), "--out", str(tmp_path / "p1"), "--tta", "flip"]) == 0
    p0, p1 = (read_table(tmp_path / d / "predictions.parquet") for d in ("p0", "p1"))
    assert not np.allclose(p0["pred_prob"], p1["pred_prob"])
    capsys.readouterr()
    assert main(["predict", *files, "--model", str(run), "--out", str(tmp_path / "p2"), "--tta", "rotate"]) == 2
    err = capsys.readouterr().err
    assert "--tta 'rotate': expected none or flip" in err and err.count("\n") == 1
    assert not (tmp_path / "p2").exists()
