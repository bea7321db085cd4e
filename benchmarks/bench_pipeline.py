"""The whole pipeline as `fruitlens run`: first run, second run with nothing changed, one changed test image.

Each run is the real command in a fresh process (wall time, Python start included), against a Prefect server
started here (`prefect server start`, SQLite, its own PREFECT_HOME) or the one PREFECT_API_URL names, with a
fresh task cache, on the demo data (`fruitlens demo-data`'s 200 + 50 images per class) and the default config.
`--ephemeral` also measures the case with no server: each command then starts Prefect's temporary server
itself, a fixed cost of several seconds per command.

For each run it records the wall time, the load average before it (the machine may be shared), the seconds
per step from run.json, the decision line the command printed, and which task and flow runs finished
Cached or Completed (flow runs and the bookkeeping tasks without a cache always say Completed).

    python benchmarks/bench_pipeline.py [--train-per-class 200] [--test-per-class 50] [--ephemeral]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, write_result  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.read().strip() == b"true":
                    return proc, url
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise RuntimeError("the Prefect server did not start in 180 s")


FINISHED = re.compile(r"^([\w.+-]+): \d\d:\d\d:\d\d Finished in state (\w+)", re.M)


def timed_run(data: Path, out: Path, cache: Path, api_url: str | None) -> dict:
    """One `fruitlens run` in a fresh process: wall seconds, load before it, run.json's step seconds, the
    decision line, and the names of the runs that finished Cached and Completed."""
    env = {**os.environ, "FRUITLENS_CACHE": str(cache)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:  # Prefect's temporary server, with a database of its own
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_HOME"] = str(cache.parent / "prefect-ephemeral")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fruitlens", "run", "--data", str(data), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fruitlens run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    decision = next((line for line in proc.stdout.splitlines() if line.startswith("test accuracy")), "")
    states: dict[str, list[str]] = {}
    for name, state in FINISHED.findall(proc.stdout + proc.stderr):
        states.setdefault(state, []).append(name)
    steps = json.loads((out / "run.json").read_text())["timings"]
    print(f"{seconds:6.1f} s (load {load:.1f}): {decision}; steps {steps}")
    return {"seconds": round(seconds, 2), "load_before": round(load, 2), "steps": steps, "decision": decision,
            "cached": sorted(states.get("Cached", [])), "completed": sorted(states.get("Completed", []))}


def flip_one_test_image(data: Path) -> Path:
    from PIL import Image

    path = sorted((data / "Test").rglob("*.jpg"))[-1]
    with Image.open(path) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=95)
    return path


def measure(data: Path, work: Path, api_url: str | None, label: str) -> dict:
    out, cache = work / f"run-{label}" / "bench", work / f"cache-{label}"
    first = timed_run(data, out, cache, api_url)
    second = timed_run(data, out, cache, api_url)
    return {"first_s": first["seconds"], "second_s": second["seconds"],
            "second_over_first": round(second["seconds"] / first["seconds"], 3),
            "load_before": [first["load_before"], second["load_before"]], "first": first, "second": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--ephemeral", action="store_true", help="also measure without a running server")
    args = parser.parse_args()

    from fruitlens.config import PipelineConfig
    from fruitlens.synthetic import CLASSES, write_demo_dataset

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        data = write_demo_dataset(work / "data", n_train=args.train_per_class, n_test=args.test_per_class)
        server, api_url = None, os.environ.get("PREFECT_API_URL")
        if not api_url:
            server, api_url = start_server(work / "prefect-home")
        try:
            result = {"dataset": {"classes": len(CLASSES), "train_per_class": args.train_per_class,
                                  "test_per_class": args.test_per_class},
                      "config": PipelineConfig().to_dict(), "with_server": measure(data, work, api_url, "server")}
            out, cache = work / "run-server" / "bench", work / "cache-server"
            if args.ephemeral:  # before the image changes: the same data as the runs with a server
                result["ephemeral_server"] = measure(data, work, None, "ephemeral")
            flipped = flip_one_test_image(data)
            changed = timed_run(data, out, cache, api_url)
            result["with_server"]["one_test_image_changed_s"] = changed["seconds"]
            result["with_server"]["one_test_image_changed"] = changed
            result["with_server"]["changed_image"] = str(flipped.relative_to(data))
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    result["load_after"] = round(os.getloadavg()[0], 2)
    for name in ("with_server", "ephemeral_server"):
        if name in result:
            r = result[name]
            print(f"{name}: first {r['first_s']} s, unchanged rerun {r['second_s']} s, ratio {r['second_over_first']}")
    write_result("pipeline", result)


if __name__ == "__main__":
    main()
