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
         "error: --num-samples 1: expected 2 to 100000"),
        (["explain", "--model", "x", "--data", "{demo}", "--out", "x", "--set", "lime.num_samples=1"],
         "error: lime.num_samples 1: expected 2 to 100000"),
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


def test_the_lock_file_goes_when_its_writer_ends_also_on_failure(tmp_path):
    from fruitlens.locks import FolderBusy, folder_lock

    out = tmp_path / "out"
    with folder_lock(out):
        assert (out / ".fruitlens.lock").is_file()
        with pytest.raises(FolderBusy), folder_lock(out):
            pass
        assert (out / ".fruitlens.lock").is_file()  # the refused writer leaves the holder's file alone
    assert not (out / ".fruitlens.lock").exists()
    with pytest.raises(RuntimeError), folder_lock(out):
        raise RuntimeError("the writer failed")
    assert not (out / ".fruitlens.lock").exists()
    (out / ".fruitlens.lock").touch()  # left by a writer killed with -9: unlocked, taken over
    with folder_lock(out):
        pass
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- limits wherever a size enters


@pytest.mark.parametrize(
    "args, reason",
    [
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--image-size", "100000"],
         "expected at most 1024 pixels per side"),
        (["predict", "{photo}", "--model", "{run}", "--out", "x", "--image-size", "100000x20"],
         "expected at most 1024 pixels per side"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--method", "smoothgrad",
          "--set", "smoothgrad.samples=100000000"], "samples 100000000: expected 1 to 10000"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--method", "rise",
          "--set", "rise.masks=100000000"], "masks 100000000: expected 1 to 10000"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--method", "integrated_gradients",
          "--set", "integrated_gradients.steps=100000000"], "steps 100000000: expected 2 to 10000"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--method", "lime", "--no-adaptive",
          "--num-samples", "1000000000"], "--num-samples 1000000000: expected 2 to 100000"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--faithfulness-steps", "10000000"],
         "expected 0 (off) to 1000"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--n-superpixels", "100000000"],
         "expected at most 10000"),
        (["augment-preview", "--data", "{photo}", "--out", "x", "--count", "100000"],
         "--count 100000: expected 1 to 200"),
        (["augment-preview", "--data", "{photo}", "--out", "x", "--image-size", "5000"], "expected at most 1024"),
        (["superpixels", "{photo}", "--out", "x", "--size", "100000x100000"], "expected at most 1024"),
        (["explain", "--model", "{run}", "--data", "{photo}", "--out", "x", "--classes-file", "/dev/zero"],
         "not a regular file"),
        (["predict", "{photo}", "--model", "{run}", "--out", "x", "--classes-file", "{big}"],
         "expected a class names file of at most"),
    ],
)
def test_every_size_has_a_limit_refused_in_one_line_before_any_work(args, reason, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (8, 6), (200, 30, 30)).save(photo)
    big = tmp_path / "classes.txt"
    with open(big, "wb") as fh:  # a sparse 5 GB file: never read
        fh.truncate(5 << 30)
    subs = {"{run}": str(tmp_path / "no-model-needed"), "{photo}": str(photo), "{big}": str(big)}
    expanded = [str(tmp_path / "x") if a == "x" else subs.get(a, a) for a in args]
    assert main(expanded) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()  # refused before any work


def test_a_fifo_as_classes_file_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "classes.txt"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    (tmp_path / "photos").mkdir()
    proc = subprocess.run([sys.executable, "-m", "fruitlens", "predict", str(tmp_path / "photos"), "--model", "x",
                           "--out", str(tmp_path / "o"), "--classes-file", str(fifo)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr


def test_smoothgrad_draws_are_bounded_by_the_models_input_size():
    from fruitlens.config import SmoothGradOptions
    from fruitlens.method_options import MAX_DRAW_BYTES

    opts = SmoothGradOptions(samples=10_000, round_size=10_000)  # one round's noise is held at a time
    opts.check_memory((20, 20), "smoothgrad")  # 48 MB: fine
    with pytest.raises(ValueError, match=r"smoothgrad.samples 10000: .* GiB of draws at 1024x1024 pixels"):
        opts.check_memory((1024, 1024), "smoothgrad")
    assert opts.draw_bytes((1024, 1024)) > MAX_DRAW_BYTES
    SmoothGradOptions(samples=10_000).check_memory((1024, 1024), "smoothgrad")  # rounds of 8: 100 MB


BOMB = ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
        "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n")


def test_a_yaml_billion_laughs_config_fails_fast_in_bounded_memory(tmp_path):
    """300 bytes that expand to 10^9 items: refused in seconds under a 1.5 GiB address-space limit."""
    from tests.helpers import run_measured

    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB + "explain_options: {lime: {num_samples: *i}}\n")
    code = ("import sys; from fruitlens.config import load_config\n"
            "try:\n    load_config(sys.argv[1])\nexcept ValueError as exc:\n    print('refused:', exc); sys.exit(2)\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    rc, out, peak = run_measured([sys.executable, "-c", code, str(config)], memory_limit=3 << 29, timeout=60,
                                 env=env)
    assert rc == 2 and "more than 100000 values" in out and len(out) < 400, out
    assert peak < 400 << 20, peak


def test_a_billion_laughs_set_value_and_long_values_are_cut_in_messages(tmp_path, capsys):
    from fruitlens.config import LimeOptions, build

    value = "[" + ",".join(["[" + ",".join(["[1,2,3,4,5,6,7,8,9,10]"] * 10) + "]"] * 10) + "]"
    assert main(["explain", "--model", "x", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--set", "lime.seed=" + value]) == 2
    err = capsys.readouterr().err
    assert len(err) < 400 and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError) as info:
        build(LimeOptions, {"segmenter": "x" * 100_000})
    assert len(str(info.value)) < 400


# ---------------------------------------------------------------- exit codes that tell the truth


def test_cheap_checks_come_before_tensorflow_is_imported(tmp_path):
    code = ("import sys\nfrom fruitlens.cli import main\n"
            "rc = main(['train', '--data', '/nonexistent', '--out', sys.argv[1]])\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow first'\n"
            "sys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2 and "--data /nonexistent: no such folder" in proc.stderr, proc.stderr


def test_an_unreachable_dask_scheduler_is_refused_before_any_step(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "data").mkdir()
    assert main(["run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--task-runner", "dask",
                 "--dask-address", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot connect" in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_evaluating_zero_images_is_exit_2_with_the_reason(demo_dir, tmp_path, capsys):
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path / "run")
    (run / "model.json").unlink()  # a run folder without its card: class_0, class_1, class_2
    assert main(["evaluate", "--model", str(run / "model.keras"), "--data", str(demo_dir), "--out",
                 str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # after 2 warnings
    assert "none of the 24 images of split 'test' has a label the model knows" in last, err
    assert not (tmp_path / "eval" / "metrics.json").exists()  # no NaN accuracy written


def test_explaining_zero_readable_images_is_exit_2(tmp_path, capsys):
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path / "run")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    assert main(["explain", "--model", str(run), "--data", str(notes), "--out", str(tmp_path / "out"),
                 "--method", "gradcam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "none of the 1 images could be read" in err.splitlines()[-1], err


def test_a_one_unit_sigmoid_model_is_a_binary_classifier_and_a_one_unit_linear_is_refused(tmp_path, capsys):
    import keras
    import numpy as np
    from PIL import Image

    for activation in ("sigmoid", "linear"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(1, activation=activation)])
        model.save(tmp_path / f"{activation}.keras")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    assert main(["predict", str(photos), "--model", str(tmp_path / "sigmoid.keras"), "--classes", "cat,dog",
                 "--out", str(tmp_path / "p")]) == 0
    preds = tables.read_table(tmp_path / "p" / "predictions.parquet")
    assert set(preds["pred_label"]) <= {"cat", "dog"} and (preds["pred_prob"] >= 0.5).all()
    assert all(abs(sum(p) - 1) < 1e-5 for p in preds["topk_probs"])  # [1 - p, p]
    capsys.readouterr()
    assert main(["predict", str(photos), "--model", str(tmp_path / "linear.keras"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert "one output unit (linear activation)" in err.splitlines()[-1], err
