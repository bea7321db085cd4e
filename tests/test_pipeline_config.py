"""The pipeline's library side (no Prefect server): config, digests, chunks, metrics tables, promotion."""

import json
import os
import shutil

import pandas as pd
import pytest

from fruitlens import pipeline, tables
from fruitlens.cli import main
from fruitlens.config import PipelineConfig, cache_dir, code_version, load_config
from fruitlens.dataset import index_or_load
from fruitlens.explain import runner
from tests.helpers import tiny_run


def test_config_round_trip_and_partial_sections(tmp_path):
    cfg = PipelineConfig.from_dict({"train": {"epochs": 3}, "explain_options": {"lime": {"num_samples": 50}}})
    assert cfg.train["epochs"] == 3 and cfg.train["arch"] == "fruit_net"  # the rest of train keeps its defaults
    assert cfg.explain_options["lime"] == {"num_samples": 50} and "gradcam" in cfg.explain_options
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())  # plain values: a flow parameter
    (tmp_path / "c.yaml").write_text("chunk_size: 4\nmethods: [gradcam]\nexplain_limit: null\n")
    (tmp_path / "c.json").write_text('{"chunk_size": 4, "methods": ["gradcam"], "explain_limit": null}')
    assert load_config(tmp_path / "c.yaml") == load_config(tmp_path / "c.json")
    assert load_config(tmp_path / "c.yaml").methods == ("gradcam",)
    assert load_config(None) == PipelineConfig()


@pytest.mark.parametrize("bad, match", [
    ({"chunk": 3}, "unknown config key.s. chunk; expected some of train, split"),
    ({"chunk_size": 0}, "chunk_size 0: expected at least 1"),
    ({"task_runner": "ray"}, "task_runner 'ray': expected one of thread, dask"),
    ({"promote_metric": "loss"}, "promote_metric 'loss': expected one of accuracy, macro_f1"),
])
def test_config_errors_name_the_value(bad, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig.from_dict(bad)


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_cache_dir_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRUITLENS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FRUITLENS_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.setenv("FRUITLENS_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "results").mkdir(parents=True)
    assert main(["cache", "path"]) == 0 and capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert main(["cache", "clear"]) == 0 and not (tmp_path / "c").exists()
    assert "cleared" in capsys.readouterr().out


def test_code_version_follows_the_source(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg_cv"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_version(["pkg_cv.mod"])
    assert code_version(["pkg_cv.mod"]) == before
    (pkg / "mod.py").write_text("x = 2\n")
    assert code_version(["pkg_cv.mod"]) != before
    assert code_version(["pkg_cv.missing"]) != code_version(["pkg_cv.other_missing"])


def test_digests_follow_content(demo_dir, tmp_path):
    data = shutil.copytree(demo_dir, tmp_path / "data")
    index_or_load(data, tmp_path / "index")
    tree, digests = pipeline.tree_digest(data), pipeline.split_digests(tmp_path / "index")
    assert set(digests) >= {"fit", "test", "train", "all"}
    image = sorted((data / "Test" / "red_dot").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes() + b"\0")  # one test image changes
    assert pipeline.tree_digest(data) != tree
    index_or_load(data, tmp_path / "index")
    after = pipeline.split_digests(tmp_path / "index")
    assert after["fit"] == digests["fit"] and after["test"] != digests["test"]


def test_chunks_and_pruning(demo_dir, tmp_path):
    index_or_load(demo_dir, tmp_path / "index")
    rows = pipeline.explain_rows(tmp_path / "index", "test", limit=10)
    assert list(rows["image_id"]) == sorted(rows["image_id"]) and len(rows) == 10
    assert rows["sha256"].str.len().min() == 64
    assert all(os.path.isabs(p) for p in rows["path"])
    everything = pipeline.explain_rows(tmp_path / "index", "test")
    wanted = list(everything["image_id"].iloc[[20, 3, 17]])  # e.g. the images a report shows
    picked = pipeline.explain_rows(tmp_path / "index", "test", limit=5, first=wanted)
    assert set(wanted) <= set(picked["image_id"]) and len(picked) == 5
    assert list(picked["image_id"]) == sorted(picked["image_id"])
    assert set(picked["image_id"]) - set(wanted) == set(everything["image_id"].iloc[:2])  # then the first by id
    chunks = pipeline.chunk_records(rows, 4)
    assert [len(c) for c in chunks] == [4, 4, 2] and set(chunks[0][0]) >= {"image_id", "path", "label", "mask_path"}
    out = tmp_path / "explain"
    ids = [[r["image_id"] for r in c] for c in chunks]
    for c in ids + [ids[0][:2]]:  # a stale part from another chunking
        tables.write_table(pd.DataFrame({"image_id": c}), runner.part_path(out, "m", c))
    gone = pipeline.prune_parts(out, "m", ids)
    assert [p.name for p in gone] == [runner.part_path(out, "m", ids[0][:2]).name]
    assert sorted(tables.read_table(runner.consolidate(out, "m"))["image_id"]) == sorted(rows["image_id"])


def test_metrics_tables_and_comparison():
    pred = pd.DataFrame({"label": ["a", "a", "b", "b"], "pred_label": ["a", "b", "b", "b"]})
    pc = pipeline.per_class_metrics(pred).set_index("class")
    assert pc.loc["a", "recall"] == 0.5 and pc.loc["b", "precision"] == pytest.approx(0.6667)
    assert pc["support"].sum() == 4
    cc = pipeline.confusion_counts(pred)
    assert cc["count"].sum() == 4 and cc[~cc["correct"]][["true", "pred_label"]].values.tolist() == [["a", "b"]]
    head = pipeline.headline_metrics(pred)
    assert head["accuracy"] == 0.75 and head["n"] == 4
    table, promote = pipeline.compare_models(head, None)
    assert promote and table["current"].isna().all()
    _, promote = pipeline.compare_models(head, {"accuracy": 0.8, "macro_f1": 0.8, "n": 4})
    assert not promote  # worse on accuracy: the current model stays
    table, promote = pipeline.compare_models(head, dict(head))
    assert promote and (table["delta"] == 0).all()  # not worse: promoted


def test_promote_model_swaps_current(tmp_path):
    a = tiny_run(tmp_path / "a", seed=0)
    b = tiny_run(tmp_path / "b", seed=1)
    home = tmp_path / "models"
    pipeline.promote_model(a, home, {"accuracy": 0.5})
    assert pipeline.file_digest(home / "current" / "model.keras") == pipeline.file_digest(a / "model.keras")
    pipeline.promote_model(b, home, {"accuracy": 0.6})
    assert pipeline.file_digest(home / "current" / "model.keras") == pipeline.file_digest(b / "model.keras")
    assert tables.read_json(home / "current.json")["run_dir"] == str(b.resolve())
    assert sorted(p.name for p in home.iterdir()) == ["current", "current.json"]  # no staging left behind


def test_summary_markdown_embeds_thumbnails(tmp_path):
    import numpy as np

    from fruitlens.plots import save_png

    png = save_png(np.random.default_rng(0).random((300, 200, 3)).astype("float32"), tmp_path / "x.png")
    md = pipeline.summary_markdown("run", {"accuracy": 0.5, "n": 3}, ["- a line"], [("curves", png),
                                                                                  ("missing", tmp_path / "no.png")])
    assert "| accuracy | 0.5000 |" in md and "- a line" in md and md.count("data:image/png;base64,") == 1
    assert len(md) < 200_000
