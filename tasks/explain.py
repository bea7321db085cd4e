"""Explain images chunk by chunk with ``fruitlens.batch.engine``: plan, one task per (method, chunk), finish."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import content_cache


@task(name="plan-explanations", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def plan_task(model: dict, index_dir: str, out_dir: str, split: str, limit: int | None, select: str,
              predictions_path: str | None, chunk_size: int, methods: list[str], options: dict) -> dict:
    """The chunks (plain records), each (method, chunk)'s part key, and which parts are already done."""
    from fruitlens import tables
    from fruitlens.batch import engine, rows
    from fruitlens.config import ExplainOptions
    from fruitlens.layout import ExplainLayout
    from fruitlens.modelio import as_model_source
    from fruitlens.selection import explain_budget, images_to_explain
    from fruitlens.typed import build

    first = []
    if select == "report" and limit is not None and predictions_path:
        predictions = tables.read_table(predictions_path)
        limit = explain_budget(predictions, limit)  # at least one image per class
        first = images_to_explain(predictions, limit=limit)
    chunks = engine.plan_chunks(rows.rows_from_index(index_dir, split, limit, first), chunk_size)
    digest = as_model_source(model).digest()  # the file's content and the options given: no loading
    keys = engine.plan_keys(chunks, methods, build(ExplainOptions, options), digest, engine.engine_code())
    out = ExplainLayout(out_dir)
    done = {m: [engine.part_state(out, m, k) == "done" for k in keys[m]] for m in methods}
    return {"chunks": chunks, "keys": keys, "done": done}


@task(name="explain-chunk", cache_policy=content_cache(), retries=1, retry_delay_seconds=1, persist_result=True,
      task_run_name="{method}-chunk-{index}")
def explain_chunk_task(model: dict, out_dir: str, method: str, options: dict, chunk: list[dict], index: int,
                       key: str) -> dict:
    """One method's part of one chunk (``key``: its content key: model, options, code and images)."""
    from fruitlens.batch import engine
    from fruitlens.modelio import as_model_source
    from fruitlens.registry import METHODS
    from fruitlens.typed import build

    keras_model, card = as_model_source(model).load()
    return engine.explain_chunk(keras_model, card, chunk, out_dir, method,
                                build(METHODS[method].options, options), key)


@task(name="finish-explanations", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def finish_task(out_dir: str, chunks: list[list[dict]], keys: dict[str, list[str]], redone: list[int]) -> dict:
    """Side-by-side pictures of the chunks that ran (or lack them), then each method's table; row counts."""
    from fruitlens import tables
    from fruitlens.batch import engine

    for i, chunk in enumerate(chunks):
        engine.compose_chunk(chunk, out_dir, force=i in set(redone))
    paths = engine.finish(out_dir, keys)
    return {"tables": {m: str(p) for m, p in paths.items()},
            "rows": {m: int(tables.pq.read_metadata(p).num_rows) for m, p in paths.items()}}
