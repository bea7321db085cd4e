"""Prefect's own tools against a real ``prefect server start``: the pinned FastAPI must let Prefect's CLI
(``prefect flow-run ls``, ``prefect deployment ls``) and its Python client (``read_flow_runs``,
``read_task_runs``, ``read_deployments``, ``read_artifacts``) talk to the server it ships.

The server runs as a subprocess in its own process group with a temporary PREFECT_HOME, on a free port;
the flows run in subprocesses with PREFECT_API_URL pointing at it; the group is killed at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("prefect")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

TINY_FLOW = textwrap.dedent("""
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact

    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def total(values: list[int]) -> int:
        create_markdown_artifact("**stack test**", key="stack-test-total")
        return sum(values)

    @flow(name="stack-tiny")
    def tiny(n: int = 3) -> int:
        return total([double(i) for i in range(n)])

    if __name__ == "__main__":
        assert tiny(3) == 6
        tiny.to_deployment(name="stack-test").apply()
        print("ok")
""")


@dataclass(frozen=True)
class Server:
    url: str  # the API root, http://127.0.0.1:<port>/api
    env: dict[str, str]  # environment for clients: PREFECT_API_URL and PREFECT_HOME
    proc: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after 20 s; no orphan survives."""
    pgid = proc.pid  # start_new_session: the server leads its own group
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        if not _group_alive(pgid):
            break
        os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            if proc.poll() is None:
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)  # children of the group, re-parented to init, are reaped there
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT),
                PREFECT_UI_API_URL=url)  # the UI in a browser calls this API, not :4200 (test_ui_artifacts.py)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=base, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server start did not answer (rc={proc.poll()}): "
                            f"{(home / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield Server(url, {**base, "PREFECT_API_URL": url}, proc)
    finally:
        _stop_group(proc)
        log.close()
    assert not _group_alive(proc.pid), "the Prefect server left processes behind"


def _run(cmd: list[str], server: Server, timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**server.env, "COLUMNS": "300"}  # rich truncates table cells to the terminal width
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _read(server: Server, flow_name: str):
    """The flow runs of ``flow_name``, their task runs, the deployments and the artifacts, via Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
            ids = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
            task_runs = await client.read_task_runs(flow_run_filter=ids)
            deployments = await client.read_deployments()
            artifacts = await client.read_artifacts(flow_run_filter=ids)
            return runs, task_runs, deployments, artifacts

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        return asyncio.run(read())


def test_prefect_cli_and_client_work_against_prefect_server_start(server):
    flow_file = Path(server.env["PREFECT_HOME"]) / "tiny_flow.py"
    flow_file.write_text(TINY_FLOW)
    done = _run([sys.executable, str(flow_file)], server, cwd=flow_file.parent)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

    runs, task_runs, deployments, artifacts = _read(server, "stack-tiny")
    assert len(runs) == 1 and runs[0].state.name == "Completed"
    names = sorted(t.name.rsplit("-", 1)[0] for t in task_runs)
    assert names == ["double"] * 3 + ["total"]
    assert {t.state.name for t in task_runs} == {"Completed"}
    assert [d.name for d in deployments] == ["stack-test"]
    assert [a.key for a in artifacts] == ["stack-test-total"]

    flow_runs = _run([sys.executable, "-m", "prefect", "flow-run", "ls"], server, timeout=120)
    assert flow_runs.returncode == 0, flow_runs.stdout[-2000:] + flow_runs.stderr[-2000:]
    assert runs[0].name in flow_runs.stdout and "stack-tiny" in flow_runs.stdout
    listed = _run([sys.executable, "-m", "prefect", "deployment", "ls"], server, timeout=120)
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    assert "stack-tiny/stack-test" in listed.stdout


def test_fruitlens_demo_runs_against_prefect_server_start(server, tmp_path):
    demo = _run([sys.executable, "-m", "fruitlens", "demo", "--train-per-class", "8", "--test-per-class", "4",
                 "--out", str(tmp_path / "runs" / "demo"), "--data", str(tmp_path / "data"),
                 "--cache-dir", str(tmp_path / "cache")], server, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert (tmp_path / "runs" / "demo" / "report.html").is_file()

    runs, task_runs, _, artifacts = _read(server, "nightly")
    assert len(runs) == 1 and runs[0].state.name == "Completed"
    assert task_runs and {t.state.name for t in task_runs} <= {"Completed", "Cached"}
    assert artifacts  # the run's summary and links
    flow_runs = _run([sys.executable, "-m", "prefect", "flow-run", "ls"], server, timeout=120)
    assert flow_runs.returncode == 0 and runs[0].name in flow_runs.stdout, flow_runs.stderr[-2000:]
