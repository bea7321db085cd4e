"""Prefect servers that fruitlens starts itself, which die with the command even when it is killed.

:func:`temporary_server` is the throwaway one of `fruitlens run` / `demo`; :func:`local_server` is the one
`fruitlens serve` starts when no ``PREFECT_API_URL`` is set (``prefect server start``, UI and scheduler on, its
database under ``FRUITLENS_HOME``); :func:`server_answers` checks a configured one before anything relies on it.

Without ``PREFECT_API_URL`` Prefect starts a temporary server of its own in a subprocess and stops it at exit;
a command killed with SIGKILL never reaches its exit handlers and leaves that server running as an orphan.
:func:`temporary_server` starts the same server (``uvicorn`` on ``prefect.server.api.server:create_app``, UI
off) with the kernel's parent-death signal set, so it goes when the command goes, however it ends.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_UI_URL, temporary_settings

from fruitlens.lifetime import die_with_parent

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server fruitlens started exited with code {proc.returncode}")
            try:
                if client.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"the Prefect server fruitlens started at {url} did not answer within {timeout:.0f} s")


def server_answers(url: str, timeout: float = 5.0) -> bool:
    """Whether a Prefect API answers its health check at ``url`` (``http://host:port/api``)."""
    try:
        with httpx.Client() as client:
            return client.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM ``proc``, SIGKILL it if it is still there after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class LocalServer:
    """A running local Prefect server: its API and UI addresses, database, log file and process id."""

    api_url: str
    ui_url: str
    database: Path
    log_path: Path
    pid: int


@contextmanager
def local_server(home: Path, *, ui: bool = True, timeout: float = 180.0) -> Iterator[LocalServer]:
    """``prefect server start`` on 127.0.0.1 and a free port, its SQLite database and log under ``home``.

    The server runs in a session of its own (a Ctrl-C in the terminal reaches this process, which then stops
    the server after the block, instead of both at once) with the parent-death signal set, so it goes when
    this process goes, however it ends. ``PREFECT_API_URL`` (and ``PREFECT_UI_URL``) point at it for this
    process and the processes it starts while the block runs.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api_url, ui_url = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    database = home / "prefect.db"
    log_path = home / "server.log"
    env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "1" if ui else "0"}
    env.pop("PREFECT_API_URL", None)
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, start_new_session=True)
    log.info("started a Prefect server on %s (pid %d, log %s)", api_url, proc.pid, log_path)
    before = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    try:
        try:
            _wait_healthy(api_url, proc, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log: {log_path}") from None
        os.environ.update(PREFECT_API_URL=api_url, PREFECT_UI_URL=ui_url)
        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_UI_URL: ui_url}):
            yield LocalServer(api_url, ui_url, database, log_path, proc.pid)
    finally:
        _flush_run_logs()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(proc)


def _flush_run_logs() -> None:
    """Send the flow and task run logs still queued to the server while it is there to take them."""
    from prefect.logging.handlers import APILogHandler

    try:
        APILogHandler().flush()
    except Exception as exc:  # noqa: BLE001 - logs lost at exit must not fail the command
        log.debug("could not flush run logs: %s", exc)


@contextmanager
def temporary_server(timeout: float = 120.0) -> Iterator[str]:
    """The API URL of the server to use: ``PREFECT_API_URL`` if set, else a temporary one for this block.

    The temporary server's URL is set for this process and the processes it starts (Dask workers) while the
    block runs; the server is stopped afterwards, and the kernel kills it if this process dies first.
    """
    current = PREFECT_API_URL.value()
    if current:
        yield current
        return
    Path(PREFECT_HOME.value()).mkdir(parents=True, exist_ok=True)  # where the server's SQLite database goes
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, preexec_fn=die_with_parent, stdin=subprocess.DEVNULL)
    log.info("started a temporary Prefect server on %s (pid %d)", url, proc.pid)
    before = os.environ.get("PREFECT_API_URL")
    try:
        _wait_healthy(url, proc, timeout)
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        _flush_run_logs()
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        _stop(proc, grace=10.0)
