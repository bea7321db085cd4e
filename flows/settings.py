"""Where the task cache lives, which task runner explains the chunks, and run names."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from fruitlens.config import cache_dir, mark_cache
from fruitlens.layout import RunLayout

RESULTS = "results"


def results_dir(cache: str | os.PathLike | None = None) -> Path:
    return Path(cache or cache_dir()) / RESULTS


@contextmanager
def pipeline_settings(cache: str | os.PathLike | None = None) -> Iterator[Path]:
    """Keep task results and cache records under ``<cache>/results`` while the block runs.

    Sets the setting for this process and ``PREFECT_LOCAL_STORAGE_PATH`` for the processes it starts
    (served flow runs, Dask workers); both are restored afterwards.
    """
    mark_cache(cache or cache_dir())  # only a marked folder is deleted by `fruitlens cache clear`
    path = results_dir(cache)
    path.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("PREFECT_LOCAL_STORAGE_PATH")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(path)
    try:
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: path}):
            yield path
    finally:
        if before is None:
            os.environ.pop("PREFECT_LOCAL_STORAGE_PATH", None)
        else:
            os.environ["PREFECT_LOCAL_STORAGE_PATH"] = before


def subflow(flow_fn):
    """``flow_fn`` called as a subflow without a heartbeat thread of its own.

    A subflow runs in its parent's process, whose heartbeat already tells the server it is alive; the
    subflow's own heartbeat thread costs up to a second at every subflow's end (Prefect joins it).
    """
    def call(*args, **kwargs):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return flow_fn(*args, **kwargs)
    return call


def build_task_runner(name: str = "thread", address: str | None = None, cluster_kwargs: dict | None = None,
                      max_workers: int = 2):
    """A task runner for the explanation chunks.

    Args:
        name: "thread" (a thread pool in this process) or "dask" (``prefect_dask.DaskTaskRunner``).
        address: a Dask scheduler address ("tcp://host:8786"); None starts a local cluster.
        cluster_kwargs: options of the local ``distributed.LocalCluster`` (n_workers, processes, ...).
        max_workers: threads of the thread pool.
    """
    if name == "thread":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        kwargs = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        return DaskTaskRunner(cluster_kwargs={**kwargs, **(cluster_kwargs or {})})
    raise ValueError(f"task runner {name!r}: expected thread or dask")


def slug(text: str) -> str:
    """Lowercase letters, digits and dashes (artifact keys, run names)."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "run"


def _folder_label(path: Path) -> str:
    """A folder's name, or its run folder's name for a run's explanation folder (RUN/explain -> RUN)."""
    return path.parent.name if RunLayout(path.parent).explain_dir == path else path.name


def run_name(prefix: str, *keys: str) -> str:
    """``prefix-<param>-<param>`` from the running flow's parameters (paths shortened to their last part)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    parts = [prefix]
    for key in keys:
        value = params.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list | tuple):
            value = "+".join(map(str, value))
        elif key.endswith("_dir"):
            value = _folder_label(Path(str(value)))
        parts.append(str(value))
    return "-".join(slug(p) for p in parts)
