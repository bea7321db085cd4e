"""The batch explanation engine: rows, content-keyed parts, resume, retry, pruning, locking."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fruitlens import plots, tables
from fruitlens.batch import engine, pictures
from fruitlens.batch import rows as batch_rows
from fruitlens.batch.methods import RUNNERS
from fruitlens.config import ExplainOptions, LimeOptions
from fruitlens.dataset import DatasetError
from fruitlens.layout import ExplainLayout
from fruitlens.runs import load_run, model_digest, predict_batches
from tests.helpers import tiny_run

CALLS: list[list[str]] = []


def fake_run(method, model, card, images, rows, options, out):
    """A method that records its calls: one row per image with its mean pixel and the model's top class."""
    CALLS.append(list(rows["image_id"]))
    assert images.shape == (len(rows), *card.image_size, 3) and images.dtype == np.float32
    probs = predict_batches(model, images)
    return pd.DataFrame({"image_id": rows["image_id"], "path": rows["path"], "true_label": rows["label"],
                         "label": [card.classes[i] for i in probs.argmax(1)],
                         "mean": images.mean(axis=(1, 2, 3)) * options.num_samples}), engine.no_drawing


@pytest.fixture()
def fake(monkeypatch):
    """The 'lime' method replaced by the fake (its options type stays LimeOptions: num_samples scales)."""
    monkeypatch.setitem(RUNNERS, "lime", fake_run)
    monkeypatch.setitem(tables.SCHEMAS, "lime", tables.pa.schema([("image_id", tables.pa.string())]))
    CALLS.clear()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"))


def _explain(run_dir, rows, out, chunk_size=7, num_samples=2, model_dir=None):
    model, card = load_run(model_dir or run_dir)
    options = ExplainOptions(lime=LimeOptions(num_samples=num_samples))
    return engine.explain_images(model, card, model_digest(model_dir or run_dir), rows, out, ["lime"], options,
                                 chunk_size=chunk_size)


def test_rows_from_dataset_files_and_photo_folders(demo_dir, tmp_path):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test")
    assert len(rows) == 24 and rows["label"].notna().all() and rows["mask_path"].notna().all()
    assert rows["sha256"].str.len().eq(64).all() and list(rows["image_id"]) == sorted(rows["image_id"])
    one = batch_rows.rows_from_inputs([demo_dir / "Test" / "red_dot" / "0000.jpg"])
    assert len(one) == 1 and one["label"].iloc[0] is None
    assert len(batch_rows.rows_from_inputs([demo_dir], limit=5)) == 5
    with pytest.raises(DatasetError, match="splits present: test, train"):
        batch_rows.rows_from_inputs([demo_dir], split="val")
    # a folder of unlabelled photos in nested folders: every image, labels unknown, masks skipped
    photos = tmp_path / "photos"
    for i, sub in enumerate(["", "2023/a", "2024"]):
        (photos / sub).mkdir(parents=True, exist_ok=True)
        (photos / sub / f"p{i}.jpg").write_bytes((demo_dir / "Test" / "red_dot" / "0001.jpg").read_bytes())
    (photos / "p0.mask.png").write_bytes(b"")
    got = batch_rows.rows_from_inputs([photos])
    assert sorted(os.path.basename(p) for p in got["path"]) == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert got["label"].isna().all()


def test_resume_skips_done_chunks_and_nothing_is_lost_or_doubled(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test")
    out = tmp_path / "out"
    first = _explain(run_dir, rows.iloc[:14], out)  # a "crash" after two chunks of 7
    assert first["lime"] == 14 and len(list((out / "lime.parts").glob("*.parquet"))) == 2
    CALLS.clear()
    again = _explain(run_dir, rows, out)
    assert again["skipped"] == 14 and not {i for c in CALLS for i in c} & set(rows["image_id"].iloc[:14])
    table = tables.read_table(out / "lime.parquet")
    assert sorted(table["image_id"]) == sorted(rows["image_id"])
    CALLS.clear()
    assert _explain(run_dir, rows, out)["skipped"] == len(rows) and CALLS == []


def test_other_options_or_model_recompute_and_chunk_sizes_never_double(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test")
    out = tmp_path / "out"
    _explain(run_dir, rows, out, num_samples=2)
    before = tables.read_table(out / "lime.parquet")
    CALLS.clear()
    _explain(run_dir, rows, out, num_samples=5)  # other options: everything recomputed
    assert sum(map(len, CALLS)) == len(rows)
    after = tables.read_table(out / "lime.parquet")
    np.testing.assert_allclose(after["mean"], before["mean"] * 2.5, rtol=1e-6)
    CALLS.clear()
    other = tiny_run(tmp_path / "other", seed=3)
    _explain(run_dir, rows, out, num_samples=5, model_dir=other)  # another model: recomputed
    assert sum(map(len, CALLS)) == len(rows)
    for size in (5, 11, 24):  # another chunking: same rows, once each, stale parts pruned
        _explain(run_dir, rows, out, chunk_size=size)
        table = tables.read_table(out / "lime.parquet")
        assert len(table) == len(rows) and table["image_id"].is_unique
        assert len(list((out / "lime.parts").glob("*.parquet"))) == -(-len(rows) // size)


def test_failed_images_are_recorded_and_retried(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test").head(6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    rows = pd.concat([rows, batch_rows.rows_from_inputs([broken])], ignore_index=True)
    out = tmp_path / "out"
    totals = _explain(run_dir, rows, out)
    assert totals["failed"] == 1 and totals["lime"] == 6
    failed = tables.read_table(out / "failed.parquet")
    assert list(failed["path"]) == [str(broken.resolve())] and "broken.jpg" in failed["error"].iloc[0]
    # fixed in place (same sha256 as recorded: a transient failure): the chunk is retried, the row appears
    broken.write_bytes((demo_dir / "Test" / "red_dot" / "0000.jpg").read_bytes())
    CALLS.clear()
    totals = _explain(run_dir, rows, out)
    assert totals["failed"] == 0 and CALLS and len(tables.read_table(out / "lime.parquet")) == 7
    assert tables.read_table(out / "failed.parquet").empty


def test_a_truncated_part_is_redone_not_a_crash(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test")
    out = tmp_path / "out"
    _explain(run_dir, rows, out)
    part = sorted((out / "lime.parts").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:40])
    CALLS.clear()
    _explain(run_dir, rows, out)
    assert len(CALLS) == 1 and len(tables.read_table(out / "lime.parquet")) == len(rows)


def test_a_second_writer_is_refused_with_one_line(tmp_path):
    with engine.out_lock(tmp_path / "out"):
        with pytest.raises(ValueError, match="another fruitlens run is writing here"):
            with engine.out_lock(tmp_path / "out"):
                pass
    with engine.out_lock(tmp_path / "out"):  # released
        pass


def test_part_keys_follow_every_input():
    chunk = [{"image_id": "a", "sha256": "1"}, {"image_id": "b", "sha256": "2"}]
    key = engine.part_key("lime", LimeOptions(), "m", chunk, "c")
    assert key == engine.part_key("lime", LimeOptions(), "m", [dict(r) for r in chunk], "c")
    changed = [{"image_id": "a", "sha256": "1"}, {"image_id": "b", "sha256": "3"}]
    others = [engine.part_key("gradcam", LimeOptions(), "m", chunk, "c"),
              engine.part_key("lime", LimeOptions(num_samples=50), "m", chunk, "c"),
              engine.part_key("lime", LimeOptions(), "m2", chunk, "c"),
              engine.part_key("lime", LimeOptions(), "m", chunk, "c2"),
              engine.part_key("lime", LimeOptions(), "m", changed, "c")]
    assert len({key, *others}) == 6


def test_real_methods_write_traceable_tables_and_pictures(demo_dir, run_dir, tmp_path):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test").head(3)
    model, card = load_run(run_dir)
    options = ExplainOptions(lime=LimeOptions(num_samples=20, plots="all", faithfulness_steps=2))
    out = tmp_path / "out"
    engine.explain_images(model, card, model_digest(run_dir), rows, out, ["lime", "gradcam"], options, chunk_size=2)
    layout = ExplainLayout(out)
    lime, cam = tables.read_table(out / "lime.parquet"), tables.read_table(out / "gradcam.parquet")
    for table in (lime, cam):
        assert set(table["path"]) == set(rows["path"]) and set(table["true_label"]) == set(rows["label"])
    for rel in [*lime["picture_path"].dropna(), *cam["overlay_path"], *cam["heatmap_path"]]:
        assert (out / rel).is_file() and "-" in os.path.basename(rel)
    assert os.path.basename(lime["picture_path"].iloc[0]).startswith(os.path.splitext(
        os.path.basename(lime["path"].iloc[0]))[0])
    assert len(list(layout.side_by_side_dir.glob("*.png"))) == 3
    side = np.asarray(Image.open(next(layout.side_by_side_dir.glob("*.png"))).convert("RGB")).astype(int)
    band = side[-60:]  # under the panels: the LIME legend's swatches and Grad-CAM's colour scale
    assert (np.abs(band - [0, 204, 0]).sum(axis=2) < 30).sum() > 50, "no green 'supports' swatch"
    assert (np.abs(band - [0, 0, 128]).sum(axis=2) < 60).sum() > 20, "no jet colour scale (dark blue end)"
    recorded = plots.read_png_text(out / cam["overlay_path"].iloc[0])
    assert recorded["palette"] == "jet" and recorded["panel"].startswith("Grad-CAM · layer ")
    assert plots.read_png_text(out / lime["picture_path"].iloc[0])["panel"].startswith("LIME · ")


def test_side_by_side_from_the_panels_kept_in_memory_equals_the_one_from_their_files(demo_dir, run_dir, tmp_path):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test").head(2)
    model, card = load_run(run_dir)
    options = ExplainOptions(lime=LimeOptions(num_samples=20, faithfulness_steps=0))
    out = tmp_path / "out"
    chunk = engine.plan_chunks(rows, 2)[0]
    for method in ("lime", "gradcam"):  # in this process (as the pipeline's tasks do), so DRAWN is this one's
        engine.explain_chunk(model, card, chunk, out, method, options.of(method), method)
    engine.compose_chunk(chunk, out)
    layout = ExplainLayout(out)
    composed = {p.name: p.read_bytes() for p in layout.side_by_side_dir.glob("*.png")}
    assert len(composed) == 2
    assert pictures.DRAWN.take(layout.picture("lime", pictures.stems(rows)[0], "outline")) is None  # taken
    from_files = pictures.write_side_by_side(layout, rows)  # nothing kept now: the panels are decoded
    assert {p.name: p.read_bytes() for p in from_files} == composed


def test_a_part_is_written_only_after_its_pictures_and_a_rerun_draws_them(demo_dir, run_dir, tmp_path):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test").head(4)
    model, card = load_run(run_dir)
    options = ExplainOptions(lime=LimeOptions(num_samples=20, faithfulness_steps=0))
    out = tmp_path / "out"
    out.mkdir()
    (out / "gradcam").write_text("a file where Grad-CAM's pictures go")  # the picture process cannot write them

    def explain():
        return engine.explain_images(model, card, model_digest(run_dir), rows, out, ["lime", "gradcam"], options,
                                     chunk_size=2)

    with pytest.raises(OSError):  # raised in the picture process, surfaced here
        explain()
    assert not list(out.glob("*.parts/*.parquet"))  # no part on disk claims pictures it does not have
    (out / "gradcam").unlink()
    totals = explain()
    assert totals["skipped"] == 0 and totals["gradcam"] == 4
    cam = tables.read_table(out / "gradcam.parquet")
    assert all((out / p).is_file() for p in [*cam["overlay_path"], *cam["heatmap_path"]])
    lime = tables.read_table(out / "lime.parquet")
    drawn = {*lime["picture_path"].dropna(), *lime["segments_path"].dropna()}
    assert len(drawn) == 8 and all((out / p).is_file() for p in drawn)  # what the rows name is what was drawn
    assert len(list(ExplainLayout(out).side_by_side_dir.glob("*.png"))) == 4


def test_python_dash_m_fruitlens_explain_draws_in_its_picture_process(demo_dir, run_dir, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "fruitlens", "explain", "--data", str(demo_dir), "--model",
                           str(run_dir), "--out", str(tmp_path / "out"), "--limit", "2", "--num-samples", "20"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("explained 2 images") == 1  # the spawned process did not run the command again
    assert len(list(ExplainLayout(tmp_path / "out").side_by_side_dir.glob("*.png"))) == 2


def test_a_second_model_never_ranks_with_the_first_it_starts_the_folder_clean(tmp_path, caplog):
    """Model A's LIME, then model B's Grad-CAM into one folder: A's tables, parts and PNGs are removed (and
    said so) before B writes, so faithfulness.parquet ranks one model's methods only."""
    out = ExplainLayout(tmp_path / "out")
    assert engine.claim_folder(out.root, "digest-a") == []
    out.parts_dir("lime").mkdir()
    out.part("lime", "k").write_bytes(b"part")
    out.pictures_dir("lime").mkdir()
    (out.pictures_dir("lime") / "x_outline.png").write_bytes(b"png")
    for name in ("lime", "failed", "faithfulness"):
        out.table(name).write_bytes(b"table")
    assert engine.claim_folder(out.root, "digest-a") == []  # the same model: nothing touched
    assert out.table("lime").exists()
    with caplog.at_level("WARNING"):
        removed = engine.claim_folder(out.root, "digest-b")
    assert {"lime.parquet", "lime.parts", "lime", "failed.parquet", "faithfulness.parquet"} <= set(removed)
    assert not out.table("lime").exists() and not out.parts_dir("lime").exists()
    assert "another model" in caplog.text and "started clean" in caplog.text
    assert tables.read_json(out.model_record) == {"model_digest": "digest-b"}
    out.model_record.write_text("{not json")  # an unreadable record: start clean too
    out.table("gradcam").write_bytes(b"table")
    assert "gradcam.parquet" in engine.claim_folder(out.root, "digest-b")


def test_explaining_with_another_model_replaces_the_first_models_tables(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test", limit=4)
    out = tmp_path / "out"
    _explain(run_dir, rows, out)
    other = tiny_run(tmp_path / "other", seed=1)
    (out / "gradcam.parquet").write_bytes(b"a table of the first model")  # as an earlier --method gradcam left
    _explain(run_dir, rows, out, model_dir=other)
    assert not (out / "gradcam.parquet").exists() and len(tables.read_table(out / "lime.parquet")) == 4
    assert tables.read_json(ExplainLayout(out).model_record) == {"model_digest": model_digest(other)}


def test_a_part_damaged_in_the_middle_is_named_set_aside_and_redone(demo_dir, run_dir, tmp_path, fake, caplog):
    """400 random bytes in the middle of a part, footer intact: once every rerun failed naming no file."""
    rows = batch_rows.rows_from_inputs([demo_dir], split="test")
    out = tmp_path / "out"
    _explain(run_dir, rows, out)
    part = sorted((out / "lime.parts").glob("part-*.parquet"))[0]
    assert engine.checksum_path(part).is_file()  # recorded when it was written
    in_part = tables.read_table(part)["image_id"].nunique()  # 7, or the last chunk's 3: parts sort by their key
    data = bytearray(part.read_bytes())
    data[len(data) // 2 - 200: len(data) // 2 + 200] = os.urandom(400)
    part.write_bytes(bytes(data))
    CALLS.clear()
    with caplog.at_level("WARNING"):
        totals = _explain(run_dir, rows, out)
    assert len(CALLS) == 1 and totals["skipped"] == len(rows) - in_part  # only the damaged chunk was redone
    assert part.name in caplog.text and "damaged" in caplog.text
    assert part.with_name(part.name + ".damaged").is_file()  # set aside, not deleted
    assert len(tables.read_table(out / "lime.parquet")) == len(rows)
    CALLS.clear()
    assert _explain(run_dir, rows, out)["skipped"] == len(rows) and not CALLS  # whole again


def test_a_part_written_before_checksums_is_read_in_full_and_adopted(demo_dir, run_dir, tmp_path, fake):
    rows = batch_rows.rows_from_inputs([demo_dir], split="test", limit=7)
    out = tmp_path / "out"
    _explain(run_dir, rows, out)
    part = next((out / "lime.parts").glob("part-*.parquet"))
    engine.checksum_path(part).unlink()
    CALLS.clear()
    assert _explain(run_dir, rows, out)["skipped"] == 7 and not CALLS
    assert engine.checksum_path(part).is_file()


def test_read_first_skips_broken_files_without_shrinking_the_sample(tmp_path):
    import pandas as pd
    from PIL import Image

    from fruitlens.batch.engine import read_first

    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        if i in (0, 2):
            p.write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((9, 7, 3), 40 * i, np.uint8)).save(p)
        paths.append(str(p))
    rows = pd.DataFrame({"image_id": [f"id{i}" for i in range(5)], "path": paths})
    images, ok, failed = read_first(rows, 2, (8, 8))
    assert list(ok["image_id"]) == ["id1", "id3"] and images.shape == (2, 8, 8, 3)
    assert list(failed["image_id"]) == ["id0", "id2"]  # read no further than it needed
    images, ok, failed = read_first(rows, 10, (8, 8))
    assert len(ok) == 3 and len(failed) == 2
