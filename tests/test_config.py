"""The pipeline's library side (no Prefect server): typed config, digests, rows, metrics tables, promotion."""

import json
import os
import shutil

import pandas as pd
import pytest

from fruitlens import digests, metrics, promotion, summary, tables
from fruitlens.batch.rows import rows_from_index
from fruitlens.cli import main
from fruitlens.config import PipelineConfig, cache_dir, load_config
from fruitlens.dataset import index_or_load
from fruitlens.lime_options import LimeOptions
from fruitlens.method_options import CamOptions
from tests.helpers import tiny_run


def test_config_round_trip_and_partial_sections(tmp_path):
    cfg = PipelineConfig.from_dict({"train": {"epochs": 3}, "explain_options": {"lime": {"num_samples": 50}}})
    assert cfg.train.epochs == 3 and cfg.train.arch == "fruit_net"  # the rest of train keeps its defaults
    assert cfg.explain_options.lime.num_samples == 50 and cfg.explain_options.lime.plots == "explanation"
    assert cfg.explain_options.gradcam == CamOptions()
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())  # plain values: a flow parameter
    (tmp_path / "c.yaml").write_text("chunk_size: 4\nmethods: [gradcam]\nexplain_limit: null\n")
    (tmp_path / "c.json").write_text('{"chunk_size": 4, "methods": ["gradcam"], "explain_limit": null}')
    assert load_config(tmp_path / "c.yaml") == load_config(tmp_path / "c.json")
    assert load_config(tmp_path / "c.yaml").methods == ("gradcam",)
    assert load_config(None) == PipelineConfig()


@pytest.mark.parametrize("bad, match", [
    ({"chunk": 3}, "unknown key chunk; expected one of train, split"),
    ({"chunk_size": 0}, "chunk_size 0: expected at least 1"),
    ({"chunk_size": "8"}, "chunk_size '8': expected an integer"),
    ({"task_runner": "ray"}, "task_runner 'ray': expected one of thread, dask"),
    ({"promote_metric": "loss"}, "promote_metric 'loss': expected one of accuracy, macro_f1"),
    ({"split": "tst"}, "split 'tst': expected one of train, val, test"),
    ({"methods": ["lime", "foo"]}, "methods 'foo': expected one or more of lime, gradcam"),
    ({"explain_limit": "all"}, "explain_limit 'all': expected an integer or null"),
    ({"train": {"epochs": "5"}}, r"train.epochs '5': expected an integer"),
    ({"train": {"epoch": 5}}, r"unknown key train.epoch; expected one of arch, image_size, epochs"),
    ({"train": {"image_size": 0}}, "train.image_size 0: expected a positive int"),
    ({"train": {"arch": "resnet"}}, "train: architecture 'resnet'"),
    ({"explain_options": {"gradcm": {}}}, r"unknown key explain_options.gradcm; expected one of lime, gradcam"),
    ({"explain_options": {"lime": {"num_sample": 5}}},
     r"unknown key explain_options.lime.num_sample; expected one of num_samples, seed"),
    ({"explain_options": {"lime": {"num_samples": 1}}}, "explain_options.lime.num_samples 1: expected 2 to 100000"),
    ({"explain_options": {"lime": {"segmenter_params": {"n_superpixel": 9}}}},
     "unknown slic parameter.s. n_superpixel"),
    ({"explain_options": {"gradcam": {"variant": "gradcam+"}}}, "variant 'gradcam\\+': expected one of gradcam"),
    ({"explain_options": {"gradcam": {"palette": "rainbowz"}}}, "palette 'rainbowz': expected a matplotlib colormap"),
])
def test_config_errors_name_the_key_at_any_depth(bad, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig.from_dict(bad)


def test_option_errors_carry_key_value_and_expectation():
    """Nothing parses a message to find out what went wrong: the key path, the value and the expectation."""
    import pickle

    from fruitlens.errors import FruitlensError, OptionError

    with pytest.raises(OptionError) as caught:
        PipelineConfig.from_dict({"explain_options": {"lime": {"num_samples": 1}}})
    err = caught.value
    assert (err.key, err.value, err.expected, err.unknown) == ("explain_options.lime.num_samples", 1, "2 to 100000",
                                                               False)
    assert isinstance(err, FruitlensError) and isinstance(err, ValueError)
    with pytest.raises(OptionError) as caught:
        PipelineConfig.from_dict({"explain_options": {"rise": {"maskz": 3}}})
    assert caught.value.key == "explain_options.rise.maskz" and caught.value.unknown
    again = pickle.loads(pickle.dumps(caught.value))  # crosses process boundaries whole
    assert (again.key, again.unknown, str(again)) == (caught.value.key, True, str(caught.value))


def test_options_are_hashable_and_round_trip():
    lime = LimeOptions(segmenter_params={"n_superpixels": 30}, hide_color=(0.1, 0.2, 0.3))
    assert hash(lime) == hash(LimeOptions(segmenter_params={"n_superpixels": 30}, hide_color=(0.1, 0.2, 0.3)))
    assert lime.fill == (0.1, 0.2, 0.3) and LimeOptions().fill is None and LimeOptions(hide_color="white").fill == 1.0


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_cache_dir_and_clear(tmp_path, monkeypatch, capsys):
    from fruitlens.config import mark_cache

    monkeypatch.setenv("FRUITLENS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FRUITLENS_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / "cache"
    monkeypatch.setenv("FRUITLENS_CACHE", str(tmp_path / "c"))
    mark_cache(tmp_path / "c")  # as a run does when it creates its cache
    (tmp_path / "c" / "results").mkdir(parents=True)
    assert main(["cache", "path"]) == 0 and capsys.readouterr().out.strip() == str(tmp_path / "c")
    assert main(["cache", "clear"]) == 0 and not (tmp_path / "c").exists()
    assert "cleared" in capsys.readouterr().out


def test_code_digest_covers_the_import_closure(monkeypatch):
    closure = dict(digests.import_closure("tasks.explain"))
    for module in ("fruitlens.explain.base", "fruitlens.explain.segmentation", "fruitlens.explain.faithfulness",
                   "fruitlens.plots", "fruitlens.batch.engine", "fruitlens.explain.lime", "fruitlens.explain.gradcam"):
        assert module in closure, module  # imported directly, indirectly or inside a function
    assert "prefect" not in closure and "numpy" not in closure  # only the project's own code
    before = digests.code_digest("tasks.explain")
    assert digests.code_digest("tasks.explain") == before
    base = closure["fruitlens.explain.base"]
    real = digests.read_source
    monkeypatch.setattr(digests, "read_source", lambda p: real(p) + ("\n# edited\n" if p == base else ""))
    assert digests.code_digest("tasks.explain") != before
    assert digests.code_digest("fruitlens.dataset") == digests.code_digest("fruitlens.dataset")


def test_digests_follow_content(demo_dir, tmp_path):
    data = shutil.copytree(demo_dir, tmp_path / "data")
    index_or_load(data, tmp_path / "index")
    tree, split = digests.tree_digest(data), digests.split_digests(tmp_path / "index")
    assert set(split) >= {"fit", "test", "train", "all"}
    image = sorted((data / "Test" / "red_dot").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes() + b"\0")  # one test image changes
    assert digests.tree_digest(data) != tree
    index_or_load(data, tmp_path / "index")
    after = digests.split_digests(tmp_path / "index")
    assert after["fit"] == split["fit"] and after["test"] != split["test"]


def test_rows_from_index_with_a_priority_list(demo_dir, tmp_path):
    index_or_load(demo_dir, tmp_path / "index")
    rows = rows_from_index(tmp_path / "index", "test", limit=10)
    assert list(rows["image_id"]) == sorted(rows["image_id"]) and len(rows) == 10
    assert rows["sha256"].str.len().min() == 64 and all(os.path.isabs(p) for p in rows["path"])
    everything = rows_from_index(tmp_path / "index", "test")
    wanted = list(everything["image_id"].iloc[[20, 3, 17]])  # e.g. the images a report shows
    picked = rows_from_index(tmp_path / "index", "test", limit=5, first=wanted)
    assert set(wanted) <= set(picked["image_id"]) and len(picked) == 5
    assert list(picked["image_id"]) == sorted(picked["image_id"])
    assert set(picked["image_id"]) - set(wanted) == set(everything["image_id"].iloc[:2])  # then the first by id


def test_metrics_tables_and_comparison():
    pred = pd.DataFrame({"label": ["a", "a", "b", "b"], "pred_label": ["a", "b", "b", "b"]})
    pc = metrics.per_class_metrics(pred).set_index("class")
    assert pc.loc["a", "recall"] == 0.5 and pc.loc["b", "precision"] == pytest.approx(2 / 3)
    assert pc["support"].sum() == 4
    cc = metrics.confusion_counts(pred)
    assert cc["count"].sum() == 4 and cc[~cc["correct"]][["true", "pred_label"]].values.tolist() == [["a", "b"]]
    head = metrics.headline_metrics(pred)
    assert head["accuracy"] == 0.75 and head["n"] == 4
    table, promote = promotion.compare_models(head, None)
    assert promote and table["current"].isna().all()
    _, promote = promotion.compare_models(head, {"accuracy": 0.8, "macro_f1": 0.8, "n": 4})
    assert not promote  # worse on accuracy: the current model stays
    table, promote = promotion.compare_models(head, dict(head))
    assert promote and (table["delta"] == 0).all()  # not worse: promoted
    drift = {"images": 10, "moved_share": 0.4, "mean_rank": 0.6, "predictions_changed": 1}
    table, promote = promotion.compare_models(head, dict(head), drift=drift)
    assert promote and table.set_index("metric").loc["evidence_moved_share", "new"] == 0.4  # off by default
    _, promote = promotion.compare_models(head, dict(head), drift=drift, max_drift=0.3)
    assert not promote  # the evidence moved on more probe images than allowed
    _, promote = promotion.compare_models(head, dict(head), drift=drift, max_drift=0.5)
    assert promote
    with pytest.raises(ValueError, match="max_drift"):
        PipelineConfig.from_dict({"max_drift": 2})


def test_promote_model_swaps_current(tmp_path):
    a = tiny_run(tmp_path / "a", seed=0)
    b = tiny_run(tmp_path / "b", seed=1)
    home = tmp_path / "models"
    promotion.promote_model(a, home, {"accuracy": 0.5})
    assert digests.file_digest(home / "current" / "model.keras") == digests.file_digest(a / "model.keras")
    promotion.promote_model(b, home, {"accuracy": 0.6})
    assert digests.file_digest(home / "current" / "model.keras") == digests.file_digest(b / "model.keras")
    assert tables.read_json(home / "current.json")["run_dir"] == str(b.resolve())
    assert sorted(p.name for p in home.iterdir()) == ["current", "current.json"]  # no staging left behind
    assert promotion.comparable(("a", "b", "c"), home) == (True, "")
    ok, why = promotion.comparable(("a", "b"), home)  # a new model of other classes: not comparable, said why
    assert not ok and "knows other classes (3: a, b, c)" in why
    assert promotion.comparable(("a",), tmp_path / "empty") == (False, "")


def test_default_models_home_is_the_run_folders_own_and_each_run_ends_in_one_decision(tmp_path):
    runs = tmp_path / "runs"
    assert promotion.default_models_home(runs / "demo") == (runs / "models" / "demo").resolve()
    assert promotion.default_models_home(runs / "fruits") == (runs / "models" / "fruits").resolve()
    assert promotion.default_models_home(runs / "demo" / ".." / "demo") == promotion.default_models_home(runs / "demo")
    assert promotion.decide(same_model=True, promote=True) == "unchanged"  # nothing to decide: it is current
    assert promotion.decide(same_model=False, promote=True) == "promoted"
    assert promotion.decide(same_model=False, promote=False) == "kept"
    home = runs / "models" / "demo"
    assert promotion.decision_line("unchanged", home) == f"unchanged: the current model in {home} is already this one"
    assert promotion.decision_line("promoted", home) == f"promoted to current in {home}"
    assert promotion.decision_line("kept", home) == f"kept the current model in {home}"
    with pytest.raises(ValueError, match="decision 'maybe': expected one of promoted, kept, unchanged"):
        promotion.decision_line("maybe", home)


def test_report_key_leaves_out_what_describes_one_invocation(tmp_path):
    """run.json's timings and decision change on every rerun; the report's digest ignores them, nothing else."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text('{"accuracy": 0.9}')
    record = {"config": {"epochs": 5}, "data_dir": "d", "timings": {"train": 9.0}, "total_seconds": 9.0,
              "promoted": True, "decision": "promoted"}
    tables.write_json(run / "run.json", record)
    before = digests.run_digest(run)
    tables.write_json(run / "run.json", {**record, "timings": {"train": 0.1}, "total_seconds": 0.1,
                                         "promoted": False, "decision": "unchanged"})
    assert digests.run_digest(run) == before
    tables.write_json(run / "run.json", {**record, "config": {"epochs": 6}})
    assert digests.run_digest(run) != before
    tables.write_json(run / "run.json", record)
    (run / "eval" / "metrics.json").write_text('{"accuracy": 0.8}')
    assert digests.run_digest(run) != before


def test_summary_markdown_embeds_thumbnails(tmp_path):
    import numpy as np

    from fruitlens.plots import save_png

    png = save_png(np.random.default_rng(0).random((300, 200, 3)).astype("float32"), tmp_path / "x.png")
    md = summary.summary_markdown("run", {"accuracy": 0.5, "n": 3, "class": "<b>x</b>"}, ["- a line"],
                                  [("curves", png), ("missing", tmp_path / "no.png")])
    assert "<b>" not in md and "| class | &lt;b&gt;x&lt;/b&gt; |" in md  # markup in names is escaped
    assert "| accuracy | 0.5000 |" in md and "- a line" in md and md.count("data:image/png;base64,") == 1
    assert len(md) < 200_000


def test_model_field_takes_a_spec_or_source_fields():
    assert PipelineConfig.from_dict({"model": "imagenet:vgg16"}).model["spec"] == "imagenet:vgg16"
    cfg = PipelineConfig.from_dict({"model": {"spec": "pets.h5", "classes": ["cat", "dog"], "image_size": [48, 64]}})
    assert cfg.model["classes"] == ["cat", "dog"] and cfg.model["image_size"] == [48, 64]
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key model.clases"):
        PipelineConfig.from_dict({"model": {"spec": "pets.h5", "clases": ["cat"]}})
    with pytest.raises(ValueError, match="model.preprocessing 'caffee': expected one of"):
        PipelineConfig.from_dict({"model": {"spec": "pets.h5", "preprocessing": "caffee"}})
