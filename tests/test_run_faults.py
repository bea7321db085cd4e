"""`fruitlens run` killed with SIGKILL during training and during explanation, then run again.

The rerun resumes training from its checkpoint, loses and doubles no explanation row, writes a complete report,
and the killed command leaves no process behind (its temporary Prefect server dies with it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fruitlens import tables

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"train": {"image_size": 16, "epochs": 30, "batch_size": 8}, "explain_limit": 24, "chunk_size": 2,
          "explain_options": {"lime": {"num_samples": 200, "plots": "none"}, "gradcam": {"faithfulness_steps": 3}},
          "visualize": False}


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL")}
    return env | {"FRUITLENS_CACHE": str(cache), "PREFECT_HOME": str(cache / "prefect"), "PYTHONPATH": str(ROOT)}


def _command(data: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "fruitlens", "run", "--data", str(data), "--out", str(out), "--config", str(config)]


def _children(pid: int) -> list[int]:
    """Every process whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; it only waits for its new parent to reap it
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _kill_when(cmd: list[str], env: dict, ready, timeout: float = 400.0) -> list[int]:
    """Start ``cmd``, SIGKILL it (the process alone, as the kernel's OOM killer would) once ``ready()``; return
    the pids of the children it had."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended (rc={proc.returncode}) before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill the run never came"
            time.sleep(0.05)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return children


def _no_orphans(children: list[int]) -> None:
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "the killed run left processes behind"


def test_killed_run_resumes_training_and_explanations_without_loss_or_orphans(demo_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    out, env = tmp_path / "run", _env(tmp_path / "cache")
    cmd = _command(demo_dir, out, config)
    state = out / "checkpoints" / "state.json"

    def training_half_done() -> bool:
        try:
            return json.loads(state.read_text())["epoch"] >= 3
        except (OSError, ValueError, KeyError):
            return False

    children = _kill_when(cmd, env, training_half_done)
    assert children, "the run had started its temporary Prefect server"
    _no_orphans(children)
    killed_at = json.loads(state.read_text())["epoch"]
    assert 3 <= killed_at < CONFIG["train"]["epochs"] and not (out / "model.keras").exists()

    parts = out / "explain" / "lime.parts"
    children = _kill_when(cmd, env, lambda: parts.is_dir() and any(parts.glob("part-*.parquet")))
    _no_orphans(children)
    history = tables.read_table(out / "history.parquet")  # training finished on the second try, resumed
    assert history["epoch"].tolist() == list(range(1, CONFIG["train"]["epochs"] + 1))
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 0 < done_before < 12  # killed between the first and the last LIME chunk

    final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    printed = final.stdout + final.stderr
    assert "epoch 1/30:" not in printed  # training was not started over
    for method in ("lime", "gradcam"):
        table = tables.read_table(out / "explain" / f"{method}.parquet")
        key = ["image_id", "label", "superpixel"] if method == "lime" else ["image_id"]
        assert table["image_id"].nunique() == CONFIG["explain_limit"], method
        assert not table.duplicated(key).any(), method
    assert len(list(parts.glob("part-*.parquet"))) == 12
    report = (out / "report.html").read_text()
    before_visualize = report.split('id="visualize"')[0]  # visualize is off in this config
    assert 'id="explanations"' in before_visualize and 'class="missing"' not in before_visualize
    assert not list(out.rglob("*.tmp*"))  # no temp file left by the kills


# ---------------------------------------------------------------- `fruitlens explain`: no process outlives it


def _in_session(sid: int) -> list[int]:
    """Every live process of session ``sid`` (a command started with start_new_session: its whole family)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _picture_worker(pid: int) -> int | None:
    return next((c for c in _children(pid) if "spawn_main" in _cmdline(c)), None)


def _explain_command(run: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fruitlens", "explain", "--model", str(run), "--data", str(data), "--split", "train",
            "--out", str(out), "--method", "lime,gradcam", "--chunk-size", "2", "--num-samples", "300",
            "--no-adaptive", "--plots", "all"]


@pytest.mark.parametrize("moment", ["worker_started", "parts_written"])
def test_kill_9_of_explain_leaves_no_process_behind(moment, demo_dir, tmp_path):
    from tests.helpers import tiny_run

    run, out = tiny_run(tmp_path / "run"), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_explain_command(run, demo_dir, out), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / "lime.parts"
    ready = {"worker_started": lambda: _picture_worker(proc.pid) is not None,
             "parts_written": lambda: parts.is_dir() and len(list(parts.glob("part-*.parquet"))) >= 2}[moment]
    deadline = time.monotonic() + 300
    try:
        while not ready():
            assert proc.poll() is None, f"explain ended (rc={proc.returncode}) before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill explain never came"
            time.sleep(0.05)
        family = _in_session(proc.pid)
        assert len(family) >= 2, "no helper process to outlive the command: nothing tested"
        proc.send_signal(signal.SIGKILL)  # the command alone, as the OOM killer would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _in_session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: _cmdline(pid)[:120] for pid in _in_session(proc.pid)}
        assert not left, f"kill -9 of explain left processes behind: {left}"
    finally:
        for pid in _in_session(proc.pid):  # never leave them to the next test
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_picture_process_is_one_line_and_the_rerun_redoes_its_chunks(demo_dir, tmp_path):
    from tests.helpers import tiny_run

    run, out = tiny_run(tmp_path / "run"), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = _explain_command(run, demo_dir, out)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    parts = out / "lime.parts"
    deadline = time.monotonic() + 300
    try:
        while not (parts.is_dir() and any(parts.glob("part-*.parquet"))):
            assert proc.poll() is None and time.monotonic() < deadline, "explain ended before a part was written"
            time.sleep(0.05)
        worker = _picture_worker(proc.pid)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)  # as the OOM killer would
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err[-2000:]
    lines = [line for line in err.splitlines() if "picture process died" in line]
    assert len(lines) == 1 and "Traceback" not in err and "BrokenProcessPool" not in err, err[-2000:]
    written = len(list(parts.glob("part-*.parquet")))
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    n = len(list((demo_dir / "Training").rglob("*.jpg")))
    lime = tables.read_table(out / "lime.parquet")
    assert lime["image_id"].nunique() == n and f"{written * 2} already done" in again.stdout, again.stdout
