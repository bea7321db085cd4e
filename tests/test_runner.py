"""The chunked, resumable explanation runner, with a fake method so it is tested on its own."""

import sys

import numpy as np
import pandas as pd
import pytest

from fruitlens import tables
from fruitlens.explain import runner
from fruitlens.runs import load_run, predict_batches
from tests.helpers import tiny_run

CALLS: list[list[str]] = []


def explain_chunk(model, card, images, rows, out_dir, scale=1.0):
    """Fake method: one row per image with its mean pixel value and the model's top class."""
    CALLS.append(list(rows["image_id"]))
    assert images.shape == (len(rows), *card.image_size, 3) and images.dtype == np.float32
    probs = predict_batches(model, images)
    return pd.DataFrame({"image_id": rows["image_id"], "mean": images.mean(axis=(1, 2, 3)) * scale,
                         "top": [card.classes[i] for i in probs.argmax(1)]})


@pytest.fixture()
def fake_method(monkeypatch):
    monkeypatch.setitem(runner.METHODS, "fake", __name__)
    CALLS.clear()
    return "fake"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"))


def test_select_images_from_dataset_and_files(demo_dir):
    rows = runner.select_images([demo_dir], split="test")
    assert len(rows) == 24 and set(rows["label"]) and rows["mask_path"].notna().all()
    files = runner.select_images([demo_dir / "Test" / "red_dot" / "0000.jpg"])
    assert len(files) == 1 and files["label"].iloc[0] == ""
    assert len(runner.select_images([demo_dir], limit=5)) == 5
    with pytest.raises(runner.DatasetError, match="splits present: test, train"):
        runner.select_images([demo_dir], split="val")


def test_unknown_method_named():
    with pytest.raises(ValueError, match="unknown method 'limey'; expected one of lime, gradcam"):
        runner.parse_methods("limey")


def test_chunks_resume_and_skip_bad_images(demo_dir, run_dir, tmp_path, fake_method):
    rows = runner.select_images([demo_dir], split="test")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    rows = pd.concat([rows, runner.select_images([bad])], ignore_index=True)
    out = tmp_path / "out"

    # a "crash" after the first two chunks: only those parts exist
    model, card = load_run(run_dir)
    for start in (0, 7):
        runner.explain_part(model, card, rows.iloc[start:start + 7], out, ["fake"])
    assert len(list((out / "fake.parts").glob("*.parquet"))) == 2
    CALLS.clear()

    totals = runner.explain_images(run_dir, rows, out, ["fake"], chunk_size=7)
    assert totals["skipped"] == 14 and totals["fake"] == len(rows) - 14 - 1 and totals["failed"] == 1
    assert not {i for c in CALLS for i in c} & set(rows["image_id"].iloc[:14])
    table = tables.read_table(out / "fake.parquet")
    assert sorted(table["image_id"]) == sorted(rows["image_id"].iloc[:-1])  # nothing lost or duplicated
    failed = tables.read_table(out / "failed.parquet")
    assert list(failed["path"]) == [str(bad.resolve())] and "broken.jpg" in failed["error"].iloc[0]

    CALLS.clear()  # a third run has nothing left to do
    again = runner.explain_images(run_dir, rows, out, ["fake"], chunk_size=7)
    assert again["skipped"] == len(rows) and CALLS == []
    pd.testing.assert_frame_equal(tables.read_table(out / "fake.parquet"), table)


def test_one_pass_equals_chunked(demo_dir, run_dir, tmp_path, fake_method):
    rows = runner.select_images([demo_dir], split="test")
    runner.explain_images(run_dir, rows, tmp_path / "a", ["fake"], chunk_size=100)
    runner.explain_images(run_dir, rows, tmp_path / "b", ["fake"], chunk_size=5)
    a, b = (tables.read_table(tmp_path / d / "fake.parquet") for d in "ab")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    assert sys.modules[__name__].CALLS


def test_lime_and_gradcam_together_fill_the_side_by_side(demo_dir, run_dir, tmp_path):
    """With both methods, LIME runs first in each chunk, so Grad-CAM's side-by-side picture gets its panel."""
    from PIL import Image

    rows = runner.select_images([demo_dir], split="test", limit=2)
    lime_opts = {"num_samples": 30, "plots": "explanation", "faithfulness_steps": 4}
    runner.explain_images(run_dir, rows, tmp_path / "both", ["lime", "gradcam"],
                          options={"lime": lime_opts, "gradcam": {"steps": 4}})
    runner.explain_images(run_dir, rows, tmp_path / "gc", ["gradcam"], options={"gradcam": {"steps": 4}})
    for image_id in rows["image_id"]:
        both = Image.open(tmp_path / "both" / "side_by_side" / f"{image_id}.png").size[0]
        alone = Image.open(tmp_path / "gc" / "side_by_side" / f"{image_id}.png").size[0]
        assert both > alone
    lime = tables.read_table(tmp_path / "both" / "lime.parquet")
    gradcam = tables.read_table(tmp_path / "both" / "gradcam.parquet")
    assert set(lime["image_id"]) == set(gradcam["image_id"]) == set(rows["image_id"])
