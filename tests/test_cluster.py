"""The explain flow on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1.

Tables equal the thread runner's; a worker killed with SIGKILL mid-run loses and doubles nothing (Dask moves its
chunks to the other worker, or a rerun redoes the missing ones).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fruitlens import tables
from fruitlens.dataset import index_or_load
from fruitlens.synthetic import CLASSES
from tests.helpers import tiny_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))
OPTIONS = {"lime": {"num_samples": 300, "plots": "none"}, "gradcam": {"faithfulness_steps": 4}}


@pytest.fixture(scope="module")
def api():
    """A Prefect server the test process and the worker processes share."""
    from flows.server import temporary_server

    with temporary_server() as url:
        yield url


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([DASK, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _wait_for_workers(address: str, n: int, timeout: float = 120) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.fixture()
def cluster(api, tmp_path):
    """(scheduler address, [worker processes]) on this machine, stopped afterwards."""
    from flows.server import free_port
    from flows.settings import pipeline_settings

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with pipeline_settings(tmp_path / "cache"):  # the workers keep task results where the flow does
        env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], env)]
        try:
            procs += [_start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                              "--name", f"w{i}"], env) for i in range(2)]
            _wait_for_workers(address, 2)
            yield address, procs[1:]
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _tables(result: dict, out: Path) -> dict[str, pd.DataFrame]:
    return {m: tables.read_table(p).replace(str(out), "OUT", regex=True) for m, p in result["tables"].items()}


def test_explain_flow_on_two_worker_processes_equals_threads_and_survives_a_killed_worker(cluster, demo_dir,
                                                                                         tmp_path):
    from prefect_dask import DaskTaskRunner

    from flows.explain import explain_flow

    address, workers = cluster
    run_dir = tiny_run(tmp_path / "run", classes=CLASSES, image_size=(16, 16))
    index_or_load(demo_dir, run_dir / "index")
    params = {"model": str(run_dir), "index_dir": str(run_dir / "index"), "methods": ["lime", "gradcam"],
              "limit": 24, "chunk_size": 2, "options": OPTIONS}
    threads = _tables(explain_flow(**params, out_dir=str(tmp_path / "threads")), tmp_path / "threads")
    on_cluster = explain_flow.with_options(task_runner=DaskTaskRunner(address=address))
    dask = _tables(on_cluster(**params, out_dir=str(tmp_path / "dask")), tmp_path / "dask")
    for method in ("lime", "gradcam"):
        assert threads[method]["image_id"].nunique() == 24
        pd.testing.assert_frame_equal(threads[method], dask[method])

    killed_out = tmp_path / "killed"
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = on_cluster(**params, out_dir=str(killed_out))
        except Exception as exc:  # noqa: BLE001 - the run may fail with the worker; the rerun must not
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    parts = killed_out / "lime.parts"
    deadline = time.monotonic() + 300
    while not (parts.is_dir() and any(parts.glob("part-*.parquet"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(workers[0].pid, signal.SIGKILL)  # one worker dies mid-run, its chunks with it
    thread.join(timeout=600)
    assert not thread.is_alive()
    if "error" in outcome:  # the run failed with the worker: the same call again redoes what is missing
        outcome["result"] = on_cluster(**params, out_dir=str(killed_out))
    after_kill = _tables(outcome["result"], killed_out)
    for method in ("lime", "gradcam"):
        pd.testing.assert_frame_equal(threads[method], after_kill[method])
