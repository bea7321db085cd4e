"""The heatmap methods in batch runs: gradcam-style rows with a method column, captioned pictures, faithfulness,
pointing game on the demo masks; selectable with --method and in the pipeline config; options checked."""

import shutil

import pytest
from PIL import Image

from fruitlens import plots, tables
from fruitlens.config import METHODS as CONFIG_METHODS
from fruitlens.config import ExplainOptions, PipelineConfig, RiseOptions, SmoothGradOptions
from fruitlens.registry import METHODS, heatmap_methods, title
from tests.helpers import tiny_run

FAST = ["--set", "smoothgrad.samples=3", "--set", "integrated_gradients.steps=4", "--set", "rise.masks=20",
        "--set", "occlusion.window=6", "--set", "occlusion.stride=6", "--set", "scorecam.channels=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("run"), classes=("a", "b", "c", "d", "e", "f"), image_size=(20, 20))


def test_every_method_is_read_from_the_registry():
    from dataclasses import fields

    from fruitlens.batch.methods import RUNNERS
    from fruitlens.cli import build_parser

    assert tuple(CONFIG_METHODS) == tuple(METHODS) == tuple(f.name for f in fields(ExplainOptions))
    assert all(isinstance(ExplainOptions().of(m), spec.options) for m, spec in METHODS.items())
    assert all(spec.table in tables.SCHEMAS and spec.table in RUNNERS for spec in METHODS.values())
    assert set(heatmap_methods()) == set(METHODS) - {"lime"} and all(title(m) != m for m in METHODS)
    assert all(callable(spec.explainer_class().from_options) for spec in METHODS.values())
    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    assert all(m in explain.format_help() for m in METHODS)  # --method's help lists them


def test_cli_explains_with_every_heatmap_method(demo_dir, run_dir, tmp_path, capsys):
    from fruitlens.cli import main

    out = tmp_path / "out"
    methods = [m for m in heatmap_methods() if m != "gradcam"]
    args = ["explain", "--model", str(run_dir), "--data", str(demo_dir), "--method", ",".join(methods), "--out",
            str(out), "--limit", "3", "--chunk-size", "2", "--faithfulness-steps", "4", *FAST]
    assert main(args) == 0
    for method in methods:
        df = tables.read_table(out / f"{method}.parquet")
        assert len(df) == 3 and set(df["method"]) == {method}
        assert df["deletion_auc"].between(0, 1).all() and df["insertion_auc"].between(0, 1).all()
        assert df["pointing_hit"].map(lambda v: isinstance(v, bool)).all()  # the demo has evidence masks
        assert set(df["layer"]) == ({"input"} if method not in ("layercam", "scorecam") else set(df["layer"]))
        if method in ("smoothgrad", "integrated_gradients"):  # adaptive: passes and the statistic per image
            assert df["passes"].notna().all() and (df["passes"] >= 2).all() and df["convergence"].notna().all()
        for path in [*df["heatmap_path"], *df["overlay_path"]]:
            assert path.startswith(f"{method}/") and Image.open(out / path).size[0] == 300
            caption = plots.read_caption(out / path)
            name = "Faster Score-CAM" if method == "scorecam" else title(method)
            assert name in caption and "predicted" in caption
    assert set(tables.read_table(out / "scorecam.parquet")["variant"]) == {"scorecam@2"}
    assert main(args) == 0 and "3 already done" in capsys.readouterr().out
    assert main([*args, "--set", "rise.maskz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "rise.maskz" in err and len(err.splitlines()) == 1
    assert main([*args, "--method", "nosuch"]) == 2


def test_pipeline_config_takes_the_methods_and_their_options():
    config = PipelineConfig.from_dict({"methods": ["rise", "smoothgrad"],
                                       "explain_options": {"rise": {"masks": 64}, "smoothgrad": {"noise": 0.3}}})
    assert config.methods == ("rise", "smoothgrad") and config.explain_options.rise == RiseOptions(masks=64)
    assert config.explain_options.smoothgrad == SmoothGradOptions(noise=0.3)
    assert PipelineConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown key explain_options.rise.maskz"):
        PipelineConfig.from_dict({"explain_options": {"rise": {"maskz": 3}}})
    with pytest.raises(ValueError, match="keep 1.5: expected a probability"):
        PipelineConfig.from_dict({"explain_options": {"rise": {"keep": 1.5}}})
    with pytest.raises(ValueError, match="reference 'pink'"):
        PipelineConfig.from_dict({"explain_options": {"integrated_gradients": {"reference": "pink"}}})
    with pytest.raises(ValueError, match="methods 'nosuch'"):
        PipelineConfig.from_dict({"methods": ["nosuch"]})


def test_faithfulness_table_ranks_every_method_and_the_report_shows_it(demo_dir, run_dir, tmp_path):
    from fruitlens.batch import engine
    from fruitlens.batch.rows import rows_from_inputs
    from fruitlens.config import ExplainOptions, LimeOptions, OcclusionOptions
    from fruitlens.report import build_report
    from fruitlens.runs import load_run, model_digest

    model, card = load_run(run_dir)
    rows = rows_from_inputs([demo_dir], split="test", limit=4)
    options = ExplainOptions(lime=LimeOptions(num_samples=20, faithfulness_steps=4),
                             occlusion=OcclusionOptions(window=5, stride=5, faithfulness_steps=4),
                             rise=RiseOptions(masks=16, faithfulness_steps=4))
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    out = run / "explain"
    engine.explain_images(model, card, model_digest(run_dir), rows, out, ["lime", "occlusion", "rise"], options,
                          chunk_size=3)
    ranked = tables.read_table(out / "faithfulness.parquet")
    assert list(ranked.columns) == tables.FAITHFULNESS_SCHEMA.names
    assert set(ranked["method"]) == {"lime", "occlusion", "rise"} and (ranked["images"] == 4).all()
    assert ranked["rank"].min() == 1 and list(ranked["rank"]) == sorted(ranked["rank"])
    pointing = ranked.set_index("method")["pointing_game"]
    assert pointing.isna()["lime"] and pointing[["occlusion", "rise"]].between(0, 1).all()
    from fruitlens.batch.ranking import faithfulness_rows

    again = faithfulness_rows(out)
    assert again.equals(ranked)
    page = build_report(run).read_text()
    section = page[page.index('<section id="ranking">'):]
    section = section[:section.index("</section>")]
    assert "RISE" in section and "Occlusion" in section and "LIME" in section and "most faithful" in section


NEW_METHOD = '''
import sys
from dataclasses import dataclass

from fruitlens import registry
from fruitlens.method_options import HeatmapOptions


@dataclass(frozen=True)
class SharpOptions(HeatmapOptions):  # 1. one options class
    power: float = 2.0


registry.METHODS["sharp"] = registry.MethodSpec("sharp", SharpOptions, "Sharp gradients", "gradcam",
                                                "__main__:Sharp")  # 3. one registry line

from fruitlens.explain.base import scale_per_image  # noqa: E402
from fruitlens.explain.gradients import Saliency  # noqa: E402


class Sharp(Saliency):  # 2. one explainer class
    method = "sharp"

    def __init__(self, model, *, power: float = 2.0, batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        self.power = power

    @classmethod
    def from_options(cls, model, options):
        return cls(model, power=options.power, batch_size=options.batch_size)

    def scale(self, raw):
        return scale_per_image(raw ** self.power)


if __name__ == "__main__":  # the picture processes import this file too
    from fruitlens.cli import main

    sys.exit(main(sys.argv[1:]))
'''


def test_a_new_method_is_one_options_class_one_explainer_and_one_registry_line(demo_dir, run_dir, tmp_path):
    """Nothing else: --method and --set take it, the batch run writes its table and captioned pictures."""
    import os
    import subprocess
    import sys

    script = tmp_path / "sharp.py"
    script.write_text(NEW_METHOD)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(script), "explain", "--model", str(run_dir), "--data", str(demo_dir),
                           "--method", "sharp,saliency", "--set", "sharp.power=3", "--out", str(out), "--limit", "2",
                           "--faithfulness-steps", "2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr[-2000:]
    sharp, plain = tables.read_table(out / "sharp.parquet"), tables.read_table(out / "saliency.parquet")
    assert len(sharp) == 2 and set(sharp["method"]) == {"sharp"} and set(sharp["layer"]) == {"input"}
    assert "Sharp gradients" in plots.read_caption(out / sharp["overlay_path"].iloc[0])
    assert list(sharp["label"]) == list(plain["label"])  # the same targets as the method it sharpens
