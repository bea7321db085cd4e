"""The explain flow on a thread pool vs a real Dask cluster of worker processes, same model, images and options.

Starts a temporary Prefect server, trains a small model on the demo data (or uses ``--model``), then explains the
same test images three ways, each into a fresh folder with the results cache left behind: the thread runner
(2 threads), and a `dask scheduler` with 1 and 2 `dask worker` processes (1 thread each) on 127.0.0.1. The
tables of all three must be identical; the figure is the wall time of each flow call.

    python benchmarks/bench_cluster.py [--images 96] [--chunk-size 8] [--num-samples 500]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, write_result  # noqa: E402


def _cluster(n_workers: int, env: dict) -> tuple[str, list[subprocess.Popen]]:
    from distributed import Client

    from flows.server import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, "env": env}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              **quiet)]
    procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"], **quiet)
              for _ in range(n_workers)]
    with Client(address, timeout=120) as client:
        client.wait_for_workers(n_workers, timeout=120)
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()

    import pandas as pd
    from prefect_dask import DaskTaskRunner

    from flows.explain import explain_flow
    from flows.server import temporary_server
    from flows.settings import pipeline_settings
    from fruitlens import tables
    from fruitlens.config import TrainConfig
    from fruitlens.dataset import index_or_load
    from fruitlens.synthetic import write_demo_dataset
    from fruitlens.training import train_model

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    data = write_demo_dataset(work / "data", n_train=40, n_test=max(args.images // 6 + 1, 4))
    run = work / "run"
    train_model(data, run, TrainConfig(arch="fruit_net", image_size=32, epochs=2))
    index_or_load(data, run / "index")
    params = {"model": str(run), "index_dir": str(run / "index"), "methods": ["lime", "gradcam"],
              "limit": args.images, "chunk_size": args.chunk_size,
              "options": {"lime": {"num_samples": args.num_samples}, "gradcam": {}}}
    seconds, frames = {}, {}
    with temporary_server() as api, pipeline_settings(work / "cache"):
        env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        for name, workers in (("threads", 0), ("dask-1-worker", 1), ("dask-2-workers", 2)):
            procs = []
            flow = explain_flow
            if workers:
                address, procs = _cluster(workers, env)
                flow = explain_flow.with_options(task_runner=DaskTaskRunner(address=address))
            out = work / name
            start = time.perf_counter()
            result = flow(**params, out_dir=str(out))
            seconds[name] = time.perf_counter() - start
            frames[name] = {m: tables.read_table(p).replace(str(out), "OUT", regex=True)
                            for m, p in result["tables"].items() if m in ("lime", "gradcam")}
            _stop(procs)
            print(f"{name}: {seconds[name]:.1f} s")
    for name in ("dask-1-worker", "dask-2-workers"):
        for method, frame in frames["threads"].items():
            pd.testing.assert_frame_equal(frame, frames[name][method])
    load = os.getloadavg()[0]
    result = {"images": args.images, "chunk_size": args.chunk_size, "num_samples": args.num_samples,
              "seconds": {k: round(v, 2) for k, v in seconds.items()},
              "speedup_2_workers_vs_threads": round(seconds["threads"] / seconds["dask-2-workers"], 3),
              "speedup_2_workers_vs_1": round(seconds["dask-1-worker"] / seconds["dask-2-workers"], 3),
              "tables_identical": True, "load_average_at_end": round(load, 2)}
    print(result)
    write_result("cluster", result)


if __name__ == "__main__":
    main()
