"""`fruitlens run` as a user runs it (a subprocess): what it prints, and own data after the demo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fruitlens import tables

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TINY = {"train": {"image_size": 16, "epochs": 2, "batch_size": 16}, "explain_limit": 8, "chunk_size": 4,
        "explain_options": {"lime": {"num_samples": 32, "plots": "explanation"}, "gradcam": {"faithfulness_steps": 3}},
        "visualize": False}


def _subset(demo_dir: Path, dest: Path, classes: list[str]) -> Path:
    for split in ("Training", "Test"):
        for cls in classes:
            shutil.copytree(demo_dir / split / cls, dest / split / cls)
    return dest


def _run(data: Path, out: Path, config: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "TF_CPP_MIN_LOG_LEVEL")}
    env |= {"FRUITLENS_CACHE": str(cache), "PREFECT_HOME": str(cache / "prefect")}
    return subprocess.run([sys.executable, "-m", "fruitlens", "run", "--data", str(data), "--out", str(out),
                           "--config", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_own_data_after_the_demo_and_what_the_run_prints(demo_dir, tmp_path):
    """Own data after the demo: each run folder has its own models home (no note, nothing replaced); an
    unchanged rerun is Cached and says "unchanged"."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    demo = _subset(demo_dir, tmp_path / "demo", ["red_dot", "blue_dot", "green_square"])
    fruits = _subset(demo_dir, tmp_path / "fruits", ["black_cross", "cyan_ring", "purple_triangle", "red_dot"])
    artifacts = tmp_path / "artifacts"

    first = _run(demo, artifacts / "demo", config, tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    printed = first.stdout + first.stderr
    assert "epoch 1/2:" in printed and "epoch 2/2:" in printed  # one line per epoch
    assert "explained:" in printed and "[##########]" in printed  # the explanation progress bar
    assert "lime-chunk-0: " in printed and "train-demo: " in printed  # task lines name their task
    assert "lime-stability-demo: " in printed and "explain-lime-gradcam-test-8-demo: " in printed  # and the run
    assert not re.search(r"^[\w-]+-: ", printed, re.M), "a task run name ends without its run folder"
    for noise in ("cpu_feature_guard", "oneDNN", "absl::InitializeLog", "\x1b["):  # TF start-up, ANSI codes
        assert noise not in printed, noise
    assert (artifacts / "models" / "demo" / "current" / "model.keras").is_file()
    assert f"promoted to current in {artifacts / 'models' / 'demo'}" in first.stdout  # the models home is printed

    second = _run(fruits, artifacts / "fruits", config, tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "knows other classes" not in second.stdout  # its own models home: the demo's model is not in the way
    assert f"promoted to current in {artifacts / 'models' / 'fruits'}" in second.stdout
    assert len(tables.read_json(artifacts / "models" / "fruits" / "current" / "model.json")["classes"]) == 4
    assert len(tables.read_json(artifacts / "models" / "demo" / "current" / "model.json")["classes"]) == 3

    again = _run(fruits, artifacts / "fruits", config, tmp_path / "cache")  # nothing changed: Cached
    assert again.returncode == 0 and "train-fruits: " in again.stderr + again.stdout
    assert "Cached" in again.stdout + again.stderr
    unchanged = f"unchanged: the current model in {artifacts / 'models' / 'fruits'} is already this one"
    assert unchanged in again.stdout, again.stdout[-1500:]
    assert "promoted" not in again.stdout


def test_a_failure_inside_the_flow_is_one_line_and_exit_1(demo_dir, tmp_path):
    data = _subset(demo_dir, tmp_path / "one", ["red_dot"])  # one class: training refuses it inside the flow
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    proc = _run(data, tmp_path / "out", config, tmp_path / "cache")
    assert proc.returncode == 1
    last = [line for line in proc.stderr.splitlines() if line.startswith("fruitlens run: failed:")]
    assert len(last) == 1 and "expected at least 2" in last[0] and "Traceback" not in proc.stderr
