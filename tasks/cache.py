"""Content cache keys for the pipeline's tasks.

A task's key is a digest of its inputs (paths and plain values), of the content behind them (a ``content``
function of the inputs: a dataset's stat digest, a model file's sha256, ...) and of its code: the import
closure of the task's module (``fruitlens.digests.code_digest``), so an edit to anything the task can run,
however indirectly, changes the key. The key never contains the flow run id: an unchanged step is ``Cached``
in every later run. Cache records and results live under ``fruitlens.config.cache_dir()/results``
(``flows.settings.pipeline_settings``); ``fruitlens cache clear`` deletes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy, CachePolicy

from fruitlens.digests import code_digest

Content = Callable[[dict[str, Any]], dict[str, Any]]


def content_key(module: str, inputs: dict[str, Any], content: Content | None = None) -> str:
    """sha256 over the inputs, ``content(inputs)`` and the code digest of ``module``'s import closure."""
    payload = {"inputs": inputs, "code": code_digest(module), "content": content(inputs) if content else {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def content_cache(content: Content | None = None) -> CachePolicy:
    """A cache policy keyed by the task's inputs, ``content(inputs)`` and its code (never the run id)."""
    def key_fn(context, inputs: dict[str, Any]) -> str:
        return content_key(context.task.fn.__module__, inputs, content)
    return CacheKeyFnPolicy(cache_key_fn=key_fn)


def fresh(task, *outputs: str | Path):
    """``task`` as is when its output files exist; otherwise one that ignores (and then refreshes) its cache.

    A cached result is only a record of paths: if the files were deleted since, the step runs again.
    """
    if all(Path(p).exists() for p in outputs):
        return task
    return task.with_options(refresh_cache=True)


def run_folder_name(key: str = "out_dir") -> str:
    """The name of the run folder a task writes into (the parent of its ``key`` folder)."""
    from prefect.runtime import task_run

    return Path(str((task_run.parameters or {}).get(key, ""))).parent.name


def run_name(prefix: str, *keys: str):
    """A task_run_name callable: ``prefix-<last part of each path parameter>``."""
    def name() -> str:
        from prefect.runtime import task_run

        params = task_run.parameters or {}
        parts = [prefix] + [Path(str(params[k])).name if k.endswith("_dir") else str(params[k])
                            for k in keys if params.get(k) is not None]
        return "-".join(parts)
    return name
