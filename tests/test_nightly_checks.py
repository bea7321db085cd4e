"""The nightly's checks without a flow: shortcut alert (known answers on synthetic images), the nights table and
its trend figure, the events' payloads and their emission, the sanity rows of the comparison, the report's
marks for a method that fails the sanity check."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from fruitlens import tables
from fruitlens.alerts import night_alerts
from fruitlens.config import MAX_SANITY_IMAGES, PipelineConfig
from fruitlens.explain import shortcut
from fruitlens.layout import RunLayout
from fruitlens.nights import Night, read_nights, record_night, trend_rows, write_trend
from fruitlens.promotion import compare_models

# ------------------------------------------------------------------------------------ shortcut alert


def scene(n: int = 2, h: int = 40, w: int = 32) -> np.ndarray:
    """A plain light backdrop, a flat dark object in the middle with a textured sticker on it."""
    rng = np.random.default_rng(0)
    images = np.full((n, h, w, 3), 0.85, np.float32)
    images[:, 12:30, 9:23] = 0.3  # the object: flat, inside its own outline
    images[:, 18:24, 13:19] = rng.uniform(0, 1, (n, 6, 6, 3))  # the sticker that decides the class
    return images


def heat_on(n: int, h: int, w: int, region: tuple[slice, slice]) -> np.ndarray:
    maps = np.zeros((n, h, w), np.float32)
    maps[(slice(None), *region)] = 1.0
    return maps


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(("region", "flagged", "where"), [
    ((slice(0, 3), slice(None)), True, "border"),  # a watermark strip along the top edge
    ((slice(None), slice(0, 3)), True, "border"),  # the left edge
    ((slice(12, 30), slice(9, 23)), False, ""),  # the object, flat interior included
    ((slice(18, 24), slice(13, 19)), False, ""),  # the sticker alone
    ((slice(5, 10), slice(5, 27)), True, "background"),  # plain backdrop above the object, off the border
])
def test_shortcut_flags_heat_on_the_border_or_backdrop_not_on_the_object(n, region, flagged, where):
    images = scene(n)
    before = images.copy()
    heat = heat_on(n, *images.shape[1:3], region)
    shares = shortcut.heat_shares(heat, images)
    table = shortcut.shortcut_table(shortcut.image_rows(["apple"] * n, shares))
    assert np.array_equal(images, before)  # the caller's images are not changed
    assert len(table) == 1 and table["images"].iloc[0] == n
    assert bool(table["flagged"].iloc[0]) is flagged
    if flagged:
        assert where in table["reason"].iloc[0] and table[f"{where}_share"].iloc[0] >= shortcut.MAX_SHARE
        assert shortcut.flagged_classes(table) == {"apple": {k: pytest.approx(table[f"{k}_share"].iloc[0], abs=1e-4)
                                                             for k in shortcut.REGIONS}}
    else:
        assert table["reason"].iloc[0] == "" and shortcut.flagged_classes(table) == {}
    tables.to_arrow(table, tables.SHORTCUT_SCHEMA)  # fits the explicit schema


def test_shortcut_regions_have_known_areas_and_a_flat_object_is_not_background():
    border = shortcut.border_mask(40, 30)
    assert border[:4].all() and border[-4:].all() and border[:, :3].all() and border[:, -3:].all()
    assert not border[4:-4, 3:-3].any()
    images = scene(1)
    background = shortcut.background_mask(images)[0]
    assert background[0, 0] and background[7, 16]  # the backdrop, at the edge and above the object
    assert not background[14:28, 11:21].any()  # the flat object's interior: plain, but not reaching the edge
    even = shortcut.heat_shares(np.ones((1, 40, 32), np.float32), images)
    assert even["border_share"][0] == pytest.approx(even["border_area"][0])  # an even heatmap: share = area
    assert shortcut.heat_shares(np.zeros((1, 40, 32), np.float32), images)["border_share"][0] == 0.0
    with pytest.raises(ValueError, match=r"heatmaps of shape \(1, 40, 31\)"):
        shortcut.heat_shares(np.ones((1, 40, 31), np.float32), images)


def test_an_even_heatmap_on_a_mostly_plain_photo_is_not_flagged():
    images = np.full((1, 30, 30, 3), 0.9, np.float32)
    images[:, 13:17, 13:17] = 0.1  # a small object: nearly all the photo is backdrop
    table = shortcut.shortcut_table(shortcut.image_rows(["a"], shortcut.heat_shares(np.ones((1, 30, 30)), images)))
    assert table["background_share"].iloc[0] > shortcut.MAX_SHARE and not table["flagged"].iloc[0]


def test_shortcut_table_from_class_evidence_weights_groups_by_images():
    evidence = pd.DataFrame({"label": ["a", "a", "b"], "images": [3, 1, 2], "border_share": [0.8, 0.0, 0.1],
                             "border_area": [0.36] * 3, "background_share": [0.0, 0.0, 0.1],
                             "background_area": [0.3] * 3})
    table = shortcut.shortcut_table(evidence).set_index("label")
    assert table.loc["a", "border_share"] == pytest.approx(0.6) and table.loc["a", "images"] == 4
    assert table.loc["a", "flagged"] and not table.loc["b", "flagged"]
    assert "Shortcut alert: 1 of 2 classes" in shortcut.shortcut_line(table.reset_index())


# ------------------------------------------------------------------------------------ nights


def night(run_dir, digest, acc, date, **kw) -> Night:
    return Night(run_dir=str(run_dir), model_digest=digest, accuracy=acc, macro_f1=acc - 0.05, seconds=10.0,
                 date=dt.datetime(2026, 12, date, 2, 0, tzinfo=dt.UTC), **kw)


def test_nights_keep_one_row_per_run_folder_and_model(tmp_path):
    home = tmp_path / "models"
    record_night(home, night("/runs/nightly", "aaa", 0.8, 1, promoted=True, sanity={"gradcam": True}))
    record_night(home, night("/runs/nightly", "bbb", 0.9, 2, drift_share=0.25, shortcut_classes=("red_dot",)))
    table = record_night(home, night("/runs/nightly", "bbb", 0.9, 3, drift_share=0.25))  # unchanged rerun
    assert list(table["model_digest"]) == ["aaa", "bbb"] and list(table["reruns"]) == [0, 1]
    assert table["date"].iloc[1] == pd.Timestamp("2026-12-03 02:00", tz="UTC")  # the latest values
    assert table["shortcut_flags"].iloc[1] == 0 and table["sanity"].iloc[0] == "gradcam:pass"
    assert pd.isna(table["sanity_failed"].iloc[1])  # not checked is not "0 failed"
    assert len(read_nights(home / "nights.parquet")) == 2
    assert not list(home.glob("*.tmp*"))
    rows = trend_rows(table)
    assert rows[0]["model_digest"] == "bbb" and rows[0]["date"].startswith("2026-12-03")
    json.dumps(rows)  # a Prefect table artifact takes JSON values
    path = write_trend(tmp_path / "run", table)
    lay = RunLayout(tmp_path / "run")
    assert path == lay.trend_table and lay.trend_png.stat().st_size > 5000


# ------------------------------------------------------------------------------------ events and comparison


def write_checks(run_dir, *, lime_passes: bool, flagged: bool):
    run = RunLayout(run_dir)
    verdicts = [{"method": "gradcam", "passed": True, "rank": 0.1, "ssim": 0.05, "top_k": float("nan"),
                 "reason": "changes with the model from the first conv layer on"},
                {"method": "lime", "passed": lime_passes, "rank": 0.7, "ssim": float("nan"), "top_k": 0.8,
                 "reason": "rank correlation 0.70 >= 0.5"}]
    tables.write_json(run.sanity.verdicts, {"thresholds": {}, "verdicts": verdicts})
    evidence = pd.DataFrame({"label": ["red_dot", "blue_dot"], "images": [4, 4],
                             "border_share": [0.9 if flagged else 0.2, 0.2], "border_area": [0.36, 0.36],
                             "background_share": [0.1, 0.1], "background_area": [0.3, 0.3]})
    tables.write_table(shortcut.shortcut_table(evidence), run.shortcut, "shortcut")


def test_night_alerts_payloads(tmp_path):
    run = tmp_path / "runs" / "night"
    write_checks(run, lime_passes=False, flagged=True)
    new, old = {"accuracy": 0.7, "macro_f1": 0.6, "n": 24}, {"accuracy": 0.8, "macro_f1": 0.75, "n": 24}
    drift = {"images": 12, "moved_share": 0.5, "mean_rank": 0.3, "classes": {"red_dot": 1.0}}
    comparison = {"promote": False, "old": old, "same": False, "drift": drift}
    alerts = night_alerts(run, metrics=new, seconds=12.345, report=str(run / "report.html"), model_digest="abc",
                          comparison=comparison, metric="accuracy", max_drift=0.2)
    assert alerts.completed == {"run_dir": str(run.resolve()), "metrics": new, "seconds": 12.345,
                                "report": str(run / "report.html"), "model_digest": "abc", "promoted": False}
    assert alerts.promotion == {"promoted": False, "metric": "accuracy", "new": new, "old": old,
                                "reason": "worse on accuracy new 0.7000, current 0.8000"}
    assert alerts.drifted["drift_share"] == 0.5 and alerts.drifted["over_max_drift"] is True
    assert alerts.drifted["classes"] == {"red_dot": 1.0}
    assert alerts.sanity_failed["methods"] == ["lime"]
    lime = alerts.sanity_failed["figures"]["lime"]
    assert lime["rank"] == 0.7 and lime["ssim"] is None and lime["passed"] is False
    assert alerts.shortcut["classes"] == {"red_dot": {"border": 0.9, "background": 0.1}}
    json.dumps([alerts.completed, alerts.promotion, alerts.drifted, alerts.sanity_failed, alerts.shortcut],
               allow_nan=False)
    # not worse, but the evidence moved too much: rejected for the drift
    held = night_alerts(run, metrics=old, seconds=1, report=None, model_digest="abc", metric="accuracy",
                        comparison={**comparison, "old": old}, max_drift=0.2)
    assert "evidence moved on 50%" in held.promotion["reason"]


def test_an_unchanged_clean_rerun_emits_only_completed(tmp_path):
    run = tmp_path / "night"
    write_checks(run, lime_passes=True, flagged=False)
    alerts = night_alerts(run, metrics={"accuracy": 0.8}, seconds=1, report=None, model_digest="abc",
                          comparison={"promote": True, "old": {"accuracy": 0.8}, "same": True, "drift": None},
                          metric="accuracy")
    assert alerts.promotion is None and alerts.drifted is None and alerts.sanity_failed is None
    assert alerts.shortcut is None and alerts.completed["promoted"] is True
    first = night_alerts(tmp_path / "empty", metrics={"accuracy": 0.8}, seconds=1, report=None, model_digest="abc",
                         comparison={"promote": True, "old": None, "same": False}, metric="accuracy")
    assert first.promotion["promoted"] and first.promotion["reason"] == "there was no comparable current model"


def test_emit_alerts_maps_each_payload_to_its_event(tmp_path, monkeypatch):
    from flows import events
    from flows.alerts import emit_alerts
    from fruitlens.alerts import NightAlerts

    calls = []
    monkeypatch.setattr(events, "emit", lambda name, run_dir, payload: calls.append((name, run_dir, payload)))
    sent = emit_alerts(NightAlerts(completed={"a": 1}, promotion={"promoted": False}, sanity_failed={"m": ["lime"]}),
                       tmp_path)
    assert sent == [events.RUN_COMPLETED, events.MODEL_REJECTED, events.SANITY_FAILED]
    assert calls[1] == (events.MODEL_REJECTED, tmp_path, {"promoted": False})
    calls.clear()
    emit_alerts(NightAlerts(completed={}, promotion={"promoted": True}, shortcut={"classes": {}}), tmp_path)
    assert [c[0] for c in calls] == [events.RUN_COMPLETED, events.MODEL_PROMOTED, events.EVIDENCE_SHORTCUT]


def test_comparison_lists_the_sanity_verdicts_without_deciding():
    table, promote = compare_models({"accuracy": 0.9}, {"accuracy": 0.8}, sanity={"gradcam": True, "lime": False})
    rows = table.set_index("metric")["new"]
    assert promote and rows["sanity_gradcam"] == 1.0 and rows["sanity_lime"] == 0.0


def test_sanity_images_is_bounded():
    assert PipelineConfig().sanity_images == 4 and PipelineConfig(sanity_images=0).sanity_images == 0
    with pytest.raises(ValueError, match="sanity_images"):
        PipelineConfig.from_dict({"sanity_images": MAX_SANITY_IMAGES + 1})
    with pytest.raises(ValueError, match="sanity_images"):
        PipelineConfig.from_dict({"sanity_images": -1})


def test_sanity_methods_follow_the_run_options():
    """Every method of the run is checked (the registry builds any of them from the run's options)."""
    from fruitlens.batch.sanity import sanity_methods

    cfg = PipelineConfig.from_dict({"methods": ["lime", "gradcam"],
                                    "explain_options": {"gradcam": {"variant": "gradcam++"}}})
    assert sanity_methods(cfg.methods, cfg.explain_options) == ("lime", "gradcam++")
    cfg = PipelineConfig.from_dict({"methods": ["saliency"]})
    assert sanity_methods(cfg.methods, cfg.explain_options) == ("saliency",)


# ------------------------------------------------------------------------------------ a model with a shortcut


def frame_or_object_data(n: int, where: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) images of a textured object on a plain backdrop and labels 0/1, decided by the colour of a
    stripe along the top edge (``where="border"``) or of a patch in the middle of the object ("object")."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 32, 32, 3), 0.8, np.float32)
    images[:, 8:26, 8:26] = rng.uniform(0.2, 0.6, (n, 18, 18, 3))  # the object: texture that says nothing
    labels = rng.integers(0, 2, n)
    colour = np.where(labels[:, None] == 1, [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]).astype(np.float32)
    if where == "border":
        images[:, 0:3, :, :] = colour[:, None, None, :]
    else:
        images[:, 14:20, 14:20, :] = colour[:, None, None, :]
    return images, labels


def frame_or_object_flags(where: str) -> pd.DataFrame:
    """The shortcut table of a small convnet trained to tell the classes by the stripe or by the patch."""
    import keras

    from fruitlens.explain.gradcam import GradCAM

    keras.utils.set_random_seed(0)
    x, y = frame_or_object_data(160, where)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.MaxPooling2D(2),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    tx, ty = frame_or_object_data(40, where, seed=1)
    assert (model.predict(tx, verbose=0).argmax(axis=1) == ty).mean() >= 0.9  # it learned the rule
    heat = GradCAM(model).explain(tx).heatmaps
    return shortcut.shortcut_table(shortcut.image_rows(np.where(ty == 1, "red", "blue"),
                                                       shortcut.heat_shares(heat, tx))).set_index("label")


def test_a_model_that_reads_the_frame_is_flagged_one_that_reads_the_object_is_not():
    frame, patch = frame_or_object_flags("border"), frame_or_object_flags("object")
    assert not patch["flagged"].any(), patch.to_string()
    assert frame["flagged"].any() and frame.loc[frame["flagged"], "reason"].str.contains("border").all()
    assert frame["border_share"].min() > patch["border_share"].max()
    # measured (seed 0): blue 56% of its heat on the border (flagged), red 38% on the border and 46% on the
    # backdrop-and-stripe (not "mostly" either): Grad-CAM of the second class of two is not all on the stripe


def test_an_unchanged_rerun_keeps_its_nights_findings_and_draws_no_new_trend(tmp_path):
    """The rerun of a promoted night (decision "unchanged": promoted False, no drift measured) keeps the row's
    promotion and drift; the run folder's trend copy and figure are left as they are (the report stays Cached)."""
    home, run = tmp_path / "models", tmp_path / "run"
    record_night(home, night("/runs/nightly", "aaa", 0.8, 1, promoted=True))
    table = record_night(home, night("/runs/nightly", "bbb", 0.9, 2, promoted=True, drift_share=0.25))
    write_trend(run, table)
    lay = RunLayout(run)
    drawn = {p: p.stat().st_mtime_ns for p in (lay.trend_png, lay.trend_table)}
    again = record_night(home, night("/runs/nightly", "bbb", 0.9, 3))  # the unchanged rerun
    assert list(again["promoted"]) == [True, True] and again["drift_share"].iloc[1] == 0.25
    assert list(again["reruns"]) == [0, 1]
    write_trend(run, again)
    assert {p: p.stat().st_mtime_ns for p in drawn} == drawn
    newer = record_night(home, night("/runs/nightly", "ccc", 0.95, 4, promoted=True))  # a new night: drawn again
    write_trend(run, newer)
    assert len(tables.read_table(lay.trend_table)) == 3 and lay.trend_png.stat().st_mtime_ns != drawn[lay.trend_png]


def test_a_night_without_the_sanity_check_discards_the_verdicts_of_an_earlier_night(tmp_path):
    from fruitlens.batch.sanity import discard_sanity, read_verdicts

    run = RunLayout(tmp_path / "run")
    run.sanity.root.mkdir(parents=True)
    tables.write_json(run.sanity.verdicts, {"verdicts": [{"method": "gradcam", "passed": False}]})
    run.sanity.figure.write_bytes(b"png")
    (run.sanity.root / "notes.txt").write_text("the user's own file")
    assert read_verdicts(run.sanity.root) == {"gradcam": False}

    removed = discard_sanity(run.sanity.root)

    assert sorted(removed) == sorted([str(run.sanity.verdicts), str(run.sanity.figure)])
    assert read_verdicts(run.sanity.root) == {}
    assert (run.sanity.root / "notes.txt").read_text() == "the user's own file"  # nothing else is touched
    assert discard_sanity(tmp_path / "never-made") == []
