"""Small things several test modules need: a tiny saved run folder."""

from __future__ import annotations

from pathlib import Path

from fruitlens.runs import ModelCard, write_card


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


def run_measured(args: list[str], *, memory_limit: int | None = None, timeout: float = 240.0,
                 env: dict | None = None, cwd=None) -> tuple[int, str, int]:
    """Run ``args`` in a child process; (exit code, stdout + stderr, peak RSS in bytes of that child alone).

    ``memory_limit`` sets RLIMIT_AS in the child (bytes of address space; only for children without TensorFlow,
    which reserves far more address space than it uses). The peak RSS comes from ``os.wait4`` of the child, so
    other processes the tests started never count. A child past ``timeout`` is killed (exit code -9).
    """
    import os
    import resource
    import subprocess
    import tempfile
    import threading

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, preexec_fn=limit)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return proc.returncode, text, usage.ru_maxrss * 1024  # Linux: ru_maxrss in KiB
