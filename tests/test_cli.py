import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fruitlens import tables
from fruitlens.cli import COMMANDS, all_commands, main

PACKAGE = Path(__file__).resolve().parents[1] / "fruitlens"


def test_library_source_never_imports_prefect_or_flows():
    """Read every module of fruitlens/: no import of prefect, flows or tasks, at the top or inside a function."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("prefect", "prefect_dask", "flows", "tasks")]
    assert offenders == []


def test_no_library_module_is_over_500_lines():
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


def test_library_does_not_import_prefect():
    code = ("import sys, fruitlens, fruitlens.dataset, fruitlens.synthetic, fruitlens.cli, fruitlens.tables, "
            "fruitlens.images; import pkgutil, importlib\n"
            "for m in pkgutil.walk_packages(fruitlens.__path__, 'fruitlens.'):\n"
            "    importlib.import_module(m.name) if not m.name.endswith('__main__') else None\n"
            "assert 'prefect' not in sys.modules, sorted(k for k in sys.modules if 'prefect' in k)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pipeline_commands_plug_in_through_the_entry_point():
    assert {"run", "demo", "serve", "cache"} <= set(all_commands()) and not {"run", "demo"} & set(COMMANDS)


@pytest.mark.parametrize("command", sorted(all_commands()))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: fruitlens" in capsys.readouterr().out


def test_index_command_writes_tables(demo_dir, tmp_path, capsys):
    assert main(["index", str(demo_dir), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "red_dot" in out and "TOTAL" in out and "fingerprint" in out
    assert len(tables.read_table(tmp_path / "images.parquet")) == 6 * 16
    assert len(tables.read_json(tmp_path / "classes.json")) == 6


@pytest.mark.parametrize(
    "args, reason",
    [
        (["index", "/no/such/dir", "--out", "x"], "no such directory"),
        (["index", "{demo}", "--out", "x", "--classes", "red_dott"], "closest: red_dot"),
        (["index", "{demo}", "--out", "x", "--val-fraction", "1.5"], "--val-fraction 1.5"),
        (["index", "{demo}", "--out", "x", "--workers", "0"], "--workers 0: expected at least 1"),
        (["index", "{demo}", "--out", "x", "--workers", "-1"], "--workers -1: expected at least 1"),
        (["index", "{demo}", "--out", "x", "--classes", ","], "expected comma-separated names"),
        (["index", "{demo}", "--out", "{file}"], "is a file; expected a folder"),
        (["index", "{demo}", "--out", "{file}/sub"], "is a file; expected a folder"),
        (["index", "{demo}", "--out", "{readonly}/sub"], "is not writable"),
        (["train", "--data", "{demo}", "--out", "{file}"], "is a file; expected a folder"),
        (["train", "--data", "{demo}", "--out", "x", "--image-size", "0"], "--image-size 0: expected a positive"),
        (["train", "--data", "{demo}", "--out", "x", "--epochs", "0"], "--epochs 0: expected at least 1"),
        (["evaluate", "--model", "{file}", "--data", "{demo}", "--out", "{file}"], "is a file; expected a folder"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "{file}"], "is a file; expected a folder"),
        (["predict", "{file}", "--model", "x", "--out", "{file}/o"], "is a file; expected a folder"),
        (["run", "--data", "{demo}", "--out", "{file}"], "is a file; expected a folder"),
        # option errors name what the user typed: the flag, or the --set key (fruitlens.cli.common.as_typed)
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--set", "lime.num_sample=100"],
         "error: unknown key lime.num_sample; expected one of num_samples, seed"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--num-samples", "1"],
         "error: --num-samples 1: expected at least 2"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--set", "lime.num_samples=1"],
         "error: lime.num_samples 1: expected at least 2"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--set", "rise.keep=1.5"],
         "error: rise.keep 1.5: expected a probability in (0, 1)"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--gradcam-variant", "gradcam+"],
         "error: --gradcam-variant 'gradcam+': expected one of gradcam, gradcam++, cam"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--method", "lime,nosuch"],
         "error: --method 'nosuch': expected one or more of lime, gradcam"),
        (["run", "--data", "{demo}", "--out", "x", "--config", "{config}"],
         "unknown key explain_options.lime.num_sample; expected one of num_samples"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, reason, demo_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "config.yaml").write_text("explain_options: {lime: {num_sample: 100}}\n")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    real_access = os.access  # root may write anywhere: the refusal os.access gives a normal user, simulated
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != readonly and real_access(p, mode))
    subs = {"{demo}": str(demo_dir), "{file}": str(tmp_path / "file"), "{readonly}": str(readonly),
            "{config}": str(tmp_path / "config.yaml")}
    expanded = []
    for a in args:
        for key, value in subs.items():
            a = a.replace(key, value)
        expanded.append(str(tmp_path / "x") if a == "x" else a)
    args = expanded
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1


def test_empty_root_is_an_error(tmp_path, capsys):
    assert main(["index", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no class folders" in capsys.readouterr().err


def test_demo_data_command(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path), "--train-per-class", "2", "--test-per-class", "1"]) == 0
    assert len(list(tmp_path.rglob("*.jpg"))) == 18


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fruitlens", "--help"], capture_output=True, text=True, check=True)
    assert "index" in out.stdout and "explain" in out.stdout and "demo" in out.stdout


def test_logging_set_up_by_main_survives_a_closed_stderr(capsys):
    """main() installs a log handler; it must follow sys.stderr, not keep the (later closed) one of its call."""
    import io
    import logging

    temp, saved = io.StringIO(), sys.stderr
    sys.stderr = temp
    try:
        main(["cache", "path"])
    finally:
        sys.stderr = saved
    temp.close()  # as pytest closes a test's capture
    logging.getLogger("prefect.task_runs").info("a line after the stream main() saw was closed")
    assert "a line after" in capsys.readouterr().err


def test_progress_line_shows_share_bar_and_time_left():
    from fruitlens.progress import progress_line

    line = progress_line("explained", 15, 60, 30.0)
    assert line == "explained: 15/60 images (25%) [##........] 30s, about 1m30s left"
    assert progress_line("explained", 60, 60, 75.0) == "explained: 60/60 images (100%) [##########] 1m15s"


def test_every_help_shows_every_default(capsys):
    import argparse

    from fruitlens.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if not action.option_strings or action.default in (None, False, argparse.SUPPRESS, []):
                continue
            if "--help" in action.option_strings:
                continue
            own = command._get_formatter()._get_help_string(action) if action.help else ""
            assert "default" in own.lower() and action.option_strings[-1] in text, (name, action.option_strings)


def test_progress_prints_periodic_lines_when_not_a_terminal():
    import io

    from fruitlens.cli.common import Progress

    stream = io.StringIO()  # not a terminal: lines, no bar
    with Progress(4, "explained", every=0.0, stream=stream) as bar:
        for _ in range(4):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("explained: 1/4 images (25%)") and lines[-1].startswith("explained: 4/4 images (100%)")
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    quiet = io.StringIO()
    with Progress(3, "visualized", every=3600.0, stream=quiet) as bar:
        bar.advance_to(2, 3)
    assert quiet.getvalue().splitlines() == [quiet.getvalue().splitlines()[-1]]  # only the final line
    assert "2/3" in quiet.getvalue()


def test_visualize_layers_draws_only_those_and_names_a_bad_one(tmp_path, capsys):
    import keras
    from PIL import Image

    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(2, 3, name="c1"),
                              keras.layers.Conv2D(2, 3, name="c2"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "m.keras")
    Image.new("RGB", (20, 14), (200, 30, 30)).save(tmp_path / "a.png")
    common = ["visualize", "--model", str(tmp_path / "m.keras"), "--classes", "x,y", "--preprocessing", "rescale",
              "--image", str(tmp_path / "a.png"),
              "--filters", "2", "--steps", "1", "--channels", "2"]
    assert main([*common, "--layers", "c2", "--out", str(tmp_path / "v")]) == 0
    assert sorted(p.name for p in (tmp_path / "v").rglob("*.png")) == ["c2.png", "c2.png"]
    from fruitlens import plots

    title = plots.read_caption(tmp_path / "v" / "activations" / "c2.png")
    assert "model m.keras |" in title and "from_01" not in title  # the file, not the wrapper's internal name
    assert "visualized: 2/2" in capsys.readouterr().err  # progress in a log: the final line
    assert main([*common, "--layers", "nope", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--layers nope" in err


def test_augment_preview_keeps_the_photos_aspect(tmp_path, capsys):
    from PIL import Image
    from skimage.data import chelsea

    Image.fromarray(chelsea()).save(tmp_path / "cat.jpg")  # 451 x 300
    assert main(["augment-preview", "--data", str(tmp_path / "cat.jpg"), "--out", str(tmp_path / "a"), "-n", "10"]) == 0
    Image.new("RGB", (300, 300)).save(tmp_path / "sq.png")
    assert main(["augment-preview", "--data", str(tmp_path / "sq.png"), "--out", str(tmp_path / "b"), "-n", "10"]) == 0
    with Image.open(tmp_path / "a" / "augment_preview.png") as wide, \
            Image.open(tmp_path / "b" / "augment_preview.png") as even:  # tiles 100 x 67 against 100 x 100
        assert wide.width == even.width and wide.height < 0.75 * even.height
