"""Content cache keys for the pipeline's tasks, and where the cache lives.

A task's key is a digest of its inputs (paths, content digests, the resolved config: plain values only),
its own source (``TASK_SOURCE``) and the source of the library modules it calls (the code version). A
folder input named in ``trees`` adds a cheap stat digest of that folder, so editing one image changes the
key of the indexing step. The key never contains the flow run id: an unchanged step is ``Cached`` in every
later run. Cache records and results live under ``fruitlens.config.cache_dir()/results`` (see
``flows.settings.pipeline_settings``); ``fruitlens cache clear`` deletes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy, CachePolicy

from fruitlens.config import code_version
from fruitlens.pipeline import tree_digest


def content_key(inputs: dict, modules: Sequence[str] = (), trees: Sequence[str] = ()) -> str:
    """sha256 over the task inputs, the library code version and stat digests of the ``trees`` folders."""
    payload = {"inputs": inputs, "code": code_version(modules),
               "trees": {name: tree_digest(inputs[name]) for name in trees}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def content_cache(*modules: str, trees: Sequence[str] = ()) -> CachePolicy:
    """``TASK_SOURCE`` plus a key over the inputs and the code of ``modules`` (never the run id)."""
    def key_fn(context, inputs: dict) -> str:
        return content_key(inputs, modules, trees)
    return TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=key_fn)


def fresh(task, *outputs: str | Path):
    """``task`` as is when its output files exist; otherwise one that ignores (and then refreshes) its cache.

    A cached result is only a record of paths: if the files were deleted since, the step runs again.
    """
    if all(Path(p).exists() for p in outputs):
        return task
    return task.with_options(refresh_cache=True)


def run_name(prefix: str, *keys: str):
    """A task_run_name callable: ``prefix-<last part of each path parameter>``."""
    def name() -> str:
        from prefect.runtime import task_run

        params = task_run.parameters or {}
        parts = [prefix] + [Path(str(params[k])).name if k.endswith("_dir") else str(params[k])
                            for k in keys if params.get(k) is not None]
        return "-".join(parts)
    return name
