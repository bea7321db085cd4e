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
