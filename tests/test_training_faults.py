"""Training faults and bad input: absurd sizes, resuming onto other data or config, leftovers of a killed
checkpoint write, and a SIGKILLed training process that resumes to the uninterrupted run's history."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fruitlens import tables  # noqa: E402
from fruitlens.config import TrainConfig  # noqa: E402
from fruitlens.sizes import MAX_IMAGE_SIDE  # noqa: E402
from fruitlens.synthetic import write_demo_dataset  # noqa: E402
from fruitlens.training import train_model  # noqa: E402

FAST = dict(arch="seed_cnn", image_size=16, batch_size=16, seed=3)
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [100000, (20, 2000), MAX_IMAGE_SIDE + 1])
def test_image_size_beyond_the_maximum_is_refused(size):
    expected = re.escape(f"image_size {size!r}: expected at most {MAX_IMAGE_SIDE} pixels per side")
    with pytest.raises(ValueError, match=expected):
        TrainConfig(image_size=size)
    assert TrainConfig(image_size=MAX_IMAGE_SIDE).size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)


@pytest.fixture(scope="module")
def one_epoch(demo_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("one_epoch")
    train_model(demo_dir, run, TrainConfig(epochs=1, **FAST))
    return run


def _other_data(kind: str, demo_dir: Path, tmp: Path) -> Path:
    if kind == "fewer_classes":
        out = tmp / "fewer"
        shutil.copytree(demo_dir, out)
        for split in ("Training", "Test"):
            shutil.rmtree(out / split / "cyan_ring")
        return out
    return write_demo_dataset(tmp / "other", n_train=10, n_test=4)  # same classes, other files


@pytest.mark.parametrize("change,expected", [
    ({"arch": "lenet"}, r"configuration changed \(arch: 'seed_cnn' -> 'lenet'\)"),
    ({"seed": 4}, r"configuration changed \(seed: 3 -> 4\)"),
    ({"batch_size": 8}, r"configuration changed \(batch_size: 16 -> 8\)"),
    ({"image_size": 12}, r"configuration changed \(image_size: 16 -> 12\)"),
    ({"augment": True}, r"configuration changed \(augment: False -> True\)"),
])
def test_resume_with_another_config_is_refused_before_reading_data(one_epoch, demo_dir, change, expected):
    index = one_epoch / "index" / "index.json"
    before = index.stat().st_mtime_ns
    with pytest.raises(ValueError, match=f"cannot resume: the {expected}; train into a new --out") as info:
        train_model(demo_dir, one_epoch, TrainConfig(epochs=2, **{**FAST, **change}), resume=True)
    assert "\n" not in str(info.value)
    assert index.stat().st_mtime_ns == before  # refused before indexing
    assert json.loads((one_epoch / "checkpoints" / "state.json").read_text())["epoch"] == 1


@pytest.mark.parametrize("kind,expected", [
    ("fewer_classes", r"cannot resume: the classes changed \(black_cross, .*cyan_ring.* -> black_cross, "),
    ("other_files", r"cannot resume: the dataset changed \(fingerprint [0-9a-f]{16} -> [0-9a-f]{16}: files"),
])
def test_resume_onto_another_dataset_is_refused(one_epoch, demo_dir, tmp_path, kind, expected):
    data = _other_data(kind, demo_dir, tmp_path)
    with pytest.raises(ValueError, match=expected) as info:
        train_model(data, one_epoch, TrainConfig(epochs=2, **FAST), resume=True)
    assert "\n" not in str(info.value) and "train into a new --out" in str(info.value)
    assert json.loads((one_epoch / "checkpoints" / "state.json").read_text())["epoch"] == 1
    # the same data resumes (more epochs are an allowed change)
    again = train_model(demo_dir, one_epoch, TrainConfig(epochs=1, **FAST), resume=True)
    assert again.resumed_from == 1


@pytest.mark.parametrize("resume", [True, False])
def test_leftover_checkpoint_temp_files_are_removed_at_start(one_epoch, demo_dir, tmp_path, resume):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    ckpt = run / "checkpoints"
    leftovers = [ckpt / ".best.k3j2h1.tmp.keras", ckpt / ".last.x9y8z7.tmp.keras", ckpt / ".state.abc.tmp.json"]
    for path in leftovers:
        path.write_bytes(b"half a zip file")
    keep = ckpt / "notes.txt"  # not a temp file of ours
    keep.write_text("mine")
    result = train_model(demo_dir, run, TrainConfig(epochs=1, **FAST), resume=resume)
    assert not any(p.exists() for p in leftovers)
    assert keep.read_text() == "mine" and result.epochs == 1
    assert not list(run.rglob(".*.tmp*"))


KILLABLE = textwrap.dedent("""
    import sys, time
    import keras
    from fruitlens.training import TrainConfig, train_model

    class PauseAfterFirstEpoch(keras.callbacks.Callback):
        # runs after the checkpointer (extra callbacks come last): the epoch-1 checkpoint is on disk
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                print("checkpointed", flush=True)
                time.sleep(600)

    train_model(sys.argv[1], sys.argv[2], TrainConfig(**eval(sys.argv[3])), callbacks=[PauseAfterFirstEpoch()])
""")


@pytest.mark.slow
def test_sigkilled_training_process_resumes_to_the_uninterrupted_history(demo_dir, tmp_path):
    config = TrainConfig(epochs=3, **FAST)
    reference = tmp_path / "reference"
    train_model(demo_dir, reference, config)

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(demo_dir), str(run), repr(config.to_dict())],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until epoch 1 is checkpointed (or the process dies)
        assert line.strip() == "checkpointed", f"training subprocess ended early (rc={proc.poll()})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and not (run / "model.keras").exists()

    result = train_model(demo_dir, run, config, resume=True)
    assert result.resumed_from == 1 and result.epochs == 3
    history = tables.read_table(run / "history.parquet")
    ref = tables.read_table(reference / "history.parquet")
    assert history["epoch"].tolist() == [1, 2, 3]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_array_equal(history[column], ref[column], err_msg=column)
    final = keras.models.load_model(run / "model.keras", compile=False).get_weights()
    expected = keras.models.load_model(reference / "model.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, expected, strict=True))


def test_cli_says_why_in_one_line(one_epoch, demo_dir, tmp_path, capsys):
    from fruitlens.cli import main

    assert main(["train", "--data", str(demo_dir), "--out", str(tmp_path), "--image-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--image-size 100000: expected at most 1024 pixels per side" in err
    other = _other_data("other_files", demo_dir, tmp_path)
    assert main(["train", "--data", str(other), "--out", str(one_epoch), "--arch", "seed_cnn", "--image-size", "16",
                 "--batch-size", "16", "--seed", "3", "--epochs", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume: the dataset changed" in err


def test_a_full_disk_keeps_the_previous_table_and_says_which_file_in_one_line(monkeypatch, tmp_path, capsys):
    """ENOSPC in the middle of a table write: exit 1, one line naming the file, the old table byte-identical."""
    import errno

    import pyarrow.parquet as pq

    from fruitlens.cli import main

    data = write_demo_dataset(tmp_path / "data", n_train=2, n_test=1)
    out = tmp_path / "index"
    assert main(["index", str(data), "--out", str(out)]) == 0
    before = (out / "images.parquet").read_bytes()
    capsys.readouterr()

    def full_disk(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half a tab")  # the writer got this far, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    (data / "Test" / "red_dot" / "0000.jpg").unlink()  # something changed, so the table is written again
    assert main(["index", str(data), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(out / "images.parquet") in err[0]
    assert (out / "images.parquet").read_bytes() == before
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 400] = os.urandom(400)
    path.write_bytes(bytes(data))


def _epoch_99(path: Path) -> None:
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "epoch": 99}))


@pytest.mark.parametrize("damage, file, said", [
    (_truncate, "last.keras", "last.keras does not match the checksum"),
    (_flip_middle, "last.keras", "last.keras does not match the checksum"),
    (_flip_middle, "best.keras", "best.keras does not match the checksum"),
    (lambda p: p.write_text('{"epoch": 1, "hist'), "state.json", "state.json cannot be read"),
    (_epoch_99, "state.json", "state.json says epoch 99 but its history holds 1 epochs"),
    (lambda p: p.unlink(), "last.keras", "has state.json but not last.keras"),
])
def test_a_damaged_checkpoint_is_said_set_aside_and_training_starts_fresh(one_epoch, demo_dir, tmp_path, caplog,
                                                                         damage, file, said):
    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    damage(run / "checkpoints" / file)
    with caplog.at_level("WARNING"):
        result = train_model(demo_dir, run, TrainConfig(epochs=2, **FAST), resume=True)
    assert said in caplog.text and "starting a fresh run" in caplog.text, caplog.text
    assert result.resumed_from == 0 and result.epochs == 2  # trained from scratch, not failed
    assert (run / "checkpoints" / "set-aside").is_dir()  # kept for a look, never deleted
    again = train_model(demo_dir, run, TrainConfig(epochs=3, **FAST), resume=True)  # the fresh run's checkpoint
    assert again.resumed_from == 2


def test_a_whole_checkpoint_resumes_and_records_checksums(one_epoch, demo_dir, tmp_path):
    from fruitlens.checkpoints import checksums

    run = tmp_path / "run"
    shutil.copytree(one_epoch, run)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["checksums"] == checksums(run / "checkpoints") and "last.keras" in state["checksums"]
    assert train_model(demo_dir, run, TrainConfig(epochs=2, **FAST), resume=True).resumed_from == 1
