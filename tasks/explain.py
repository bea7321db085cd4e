"""Explain the test set chunk by chunk; each chunk writes its own Parquet part atomically."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cache import content_cache


@task(name="plan-chunks", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def plan_chunks_task(index_dir: str, split: str, limit: int | None, chunk_size: int, out_dir: str,
                     methods: list[str], predictions_path: str | None = None) -> dict:
    """The chunks (lists of row dicts with sha256) and, per method, whether each chunk's part is written.

    With ``predictions_path``, a limited selection starts with the images the report shows.
    """
    from pathlib import Path

    from fruitlens import tables
    from fruitlens.explain.runner import done_ids, parse_methods
    from fruitlens.pipeline import chunk_records, explain_rows

    methods = parse_methods(methods)
    first: list[str] = []
    if predictions_path and limit is not None and Path(predictions_path).is_file():
        from fruitlens.report import images_to_explain

        first = images_to_explain(tables.read_table(predictions_path))
    chunks = chunk_records(explain_rows(index_dir, split, limit, first), chunk_size)
    done = {m: done_ids(out_dir, m) for m in methods}
    complete = {m: [all(r["image_id"] in done[m] for r in c) for c in chunks] for m in methods}
    return {"chunks": chunks, "complete": complete}


@task(name="explain-chunk", cache_policy=content_cache("fruitlens.explain.runner", "fruitlens.explain.lime",
                                                       "fruitlens.explain.gradcam"),
      retries=1, retry_delay_seconds=1, persist_result=True, task_run_name="{method}-chunk-{chunk_index}")
def explain_chunk_task(run_dir: str, model_digest: str, out_dir: str, method: str, options: dict,
                       chunk: list[dict], chunk_index: int, after: dict | None = None) -> dict:
    """Explain one chunk with one method (one Parquet part); rows written.

    ``after``: options of the methods run before this one (Grad-CAM's side-by-side PNGs show LIME's), so a
    change there re-runs this chunk too.
    """
    import pandas as pd

    from fruitlens.explain.runner import explain_part
    from fruitlens.runs import load_run

    model, card = load_run(run_dir)
    rows = pd.DataFrame(chunk)[["image_id", "path", "label", "mask_path"]]
    return explain_part(model, card, rows, out_dir, [method], {method: options})


@task(name="consolidate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def consolidate_task(out_dir: str, methods: list[str], chunks: list[list[dict]]) -> dict:
    """Drop parts left from another test set or chunking, then join each method's parts into one table."""
    from fruitlens import tables
    from fruitlens.explain.runner import FAILED, consolidate
    from fruitlens.pipeline import prune_parts

    out = {}
    for method in methods:
        prune_parts(out_dir, method, [[r["image_id"] for r in c] for c in chunks])
        out[method] = str(consolidate(out_dir, method))
    out[FAILED] = str(consolidate(out_dir, FAILED))
    out["rows"] = {m: int(len(tables.read_table(out[m]))) for m in methods}
    return out
