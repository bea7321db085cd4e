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
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, reason, demo_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    real_access = os.access  # root may write anywhere: the refusal os.access gives a normal user, simulated
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != readonly and real_access(p, mode))
    subs = {"{demo}": str(demo_dir), "{file}": str(tmp_path / "file"), "{readonly}": str(readonly)}
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


# ---------------------------------------------------------------- nothing deleted or poisoned by mistake


def test_cache_clear_deletes_only_a_folder_fruitlens_marked_as_its_cache(tmp_path, capsys):
    from fruitlens.config import CACHE_MARKER, mark_cache

    home = tmp_path / "home"  # FRUITLENS_CACHE=$HOME: a folder with the user's files, never marked
    home.mkdir()
    (home / "thesis.txt").write_text("years of work")
    mark_cache(home)  # a run pointed at it uses it, but does not mark a folder that held something else
    assert not (home / CACHE_MARKER).exists()
    assert main(["cache", "clear", "--cache-dir", str(home)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a fruitlens task cache" in err and "nothing deleted" in err and len(err.splitlines()) == 1
    assert (home / "thesis.txt").read_text() == "years of work"

    cache = mark_cache(tmp_path / "cache")  # created by fruitlens: marked
    (cache / "results").mkdir()
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0 and not cache.exists()
    link = tmp_path / "link"  # a link to a marked cache is not followed into a delete
    mark_cache(tmp_path / "cache2")
    link.symlink_to(tmp_path / "cache2")
    assert main(["cache", "clear", "--cache-dir", str(link)]) == 2 and (tmp_path / "cache2").is_dir()


@pytest.mark.parametrize("command", ["explain", "predict", "train", "evaluate", "run"])
@pytest.mark.parametrize("nesting", ["out_in_data", "data_in_out"])
def test_out_and_data_apart_or_one_line_before_any_work(command, nesting, tmp_path, capsys):
    photos = tmp_path / "photos"
    out = photos / "explained" if nesting == "out_in_data" else tmp_path / "out"
    data = photos if nesting == "out_in_data" else out / "photos"
    data.mkdir(parents=True)
    args = {"explain": ["explain", "--model", "x", "--data", str(data), "--out", str(out)],
            "predict": ["predict", str(data), "--model", "x", "--out", str(out)],
            "train": ["train", "--data", str(data), "--out", str(out)],
            "evaluate": ["evaluate", "--model", "x", "--data", str(data), "--out", str(out)],
            "run": ["run", "--data", str(data), "--out", str(out)]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inside" in err and str(data) in err, err
    assert not (out / ".fruitlens.lock").exists()  # refused before anything was written


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "explain"])
def test_every_writer_of_a_folder_takes_the_one_lock(command, demo_dir, tmp_path, capsys):
    from fruitlens.locks import folder_lock

    out = tmp_path / "out"
    photo = demo_dir / "Test" / "red_dot" / "0000.jpg"
    args = {"train": ["train", "--data", str(demo_dir), "--out", str(out), "--epochs", "1"],
            "evaluate": ["evaluate", "--model", str(tmp_path / "run"), "--data", str(demo_dir), "--out", str(out)],
            "predict": ["predict", str(photo), "--model", str(tmp_path / "run"), "--out", str(out)],
            "explain": ["explain", "--model", str(tmp_path / "run"), "--data", str(photo), "--out", str(out)]}
    if command != "train":
        from tests.helpers import tiny_run

        tiny_run(tmp_path / "run")
    with folder_lock(out):  # another command is writing there
        assert main(args[command]) == 2
    err = capsys.readouterr().err.strip()
    assert "another fruitlens run is writing here" in err and len(err.splitlines()) == 1, err
