"""Small things several test modules need: a tiny saved run folder."""

from __future__ import annotations

from pathlib import Path

from fruitlens.card import ModelCard, write_card


def tiny_run(run_dir: Path, classes=("a", "b", "c"), image_size=(12, 10), seed=0) -> Path:
    """Save an untrained 2-conv model and its card in ``run_dir`` (fast; for plumbing tests)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((*image_size, 3)),
        keras.layers.Rescaling(2.0, offset=-1.0),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(classes), activation="softmax"),
    ])
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    write_card(run_dir, ModelCard(classes=classes, image_size=image_size, arch="tiny"))
    return run_dir


_LAUNCHER = """
import json, os, resource, sys
args, limit, report = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
pid = os.posix_spawn(args[0], args, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as fh:
    fh.write(str(usage.ru_maxrss * 1024))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(args: list[str], *, memory_limit: int | None = None, timeout: float = 240.0,
                 env: dict | None = None, cwd=None) -> tuple[int, str, int]:
    """Run ``args`` in a child process; (exit code, stdout + stderr, peak RSS in bytes of that child alone).

    ``memory_limit`` sets RLIMIT_AS for the command (bytes of address space; only for commands without
    TensorFlow, which reserves far more address space than it uses). The peak RSS is the command's own
    ``ru_maxrss`` from ``os.wait4``, measured by a small launcher that spawns it: a child forked straight from
    this (large) test process would count this process's pages as its own. A command past ``timeout`` is
    killed with its whole process group (exit code -9).
    """
    import json
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "maxrss")
        launcher = [sys.executable, "-c", _LAUNCHER, json.dumps([str(a) for a in args]), str(memory_limit or 0),
                    report]
        proc = subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return -9, out.decode("utf-8", "replace"), 0
        peak = int(open(report).read()) if os.path.exists(report) else 0
    return proc.returncode, out.decode("utf-8", "replace"), peak
