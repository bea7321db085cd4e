"""explain_flow: explain a split chunk by chunk over the task runner; resumable; progress in the UI."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.settings import build_task_runner, run_name, slug
from fruitlens.batch.engine import claim_folder, out_lock
from fruitlens.config import CHUNK_SIZE, ExplainOptions, model_source_fields
from fruitlens.progress import progress_line
from fruitlens.typed import build, to_plain
from tasks.explain import explain_chunk_task, finish_task, plan_task


def _name() -> str:
    return run_name("explain", "methods", "split", "limit", "out_dir")


def _map_chunks(model: dict, out_dir: str, method: str, options: dict, plan: dict) -> list[tuple]:
    """One task per chunk of ``method`` (with its image count): chunks whose part is on disk may be Cached,
    the others always run."""
    futures = []
    for done in (True, False):
        picked = [i for i, d in enumerate(plan["done"][method]) if d == done]
        if picked:
            task = explain_chunk_task if done else explain_chunk_task.with_options(refresh_cache=True)
            mapped = task.map(unmapped(model), unmapped(out_dir), unmapped(method), unmapped(options),
                              [plan["chunks"][i] for i in picked], picked, [plan["keys"][method][i] for i in picked])
            futures += [(f, len(plan["chunks"][i])) for f, i in zip(mapped, picked, strict=True)]
    return futures


@flow(name="explain", flow_run_name=_name, task_runner=build_task_runner("thread"), log_prints=True)
def explain_flow(model: str | dict, index_dir: str, out_dir: str, methods: list[str], split: str = "test",
                 limit: int | None = None, chunk_size: int = CHUNK_SIZE, options: dict | None = None,
                 select: str = "first", predictions_path: str | None = None, artifact_prefix: str = "") -> dict:
    """Explain ``limit`` images of ``split`` (all when None) of an index with ``methods``, by ``model`` (a run
    folder, a model file, ``imagenet:<app>``, or a mapping of ``ModelSource`` fields).

    ``select``: "first" (by image id) or "report" (the images the report shows first, from
    ``predictions_path``). Every (method, chunk) is one task writing one content-keyed part
    (``fruitlens.batch.engine``): a rerun redoes only what is missing or changed. Returns the tables' paths
    and row counts, and the first image explained.
    """
    opts = to_plain(build(ExplainOptions, options or {}))
    model = model_source_fields(model)
    plan = plan_task(model, index_dir, out_dir, split, limit, select, predictions_path, chunk_size,
                     list(methods), opts)
    total = sum(map(len, plan["chunks"])) * len(methods)
    with out_lock(out_dir):
        from fruitlens.modelio import as_model_source

        claim_folder(out_dir, as_model_source(model).digest())  # another model's tables: removed, said so
        progress = create_progress_artifact(0.0, key=f"{slug(artifact_prefix + 'explain-progress')}",
                                            description=f"{total // max(len(methods), 1)} images in "
                                            f"{len(plan['chunks'])} chunks, explained with {', '.join(methods)}")
        mapped = [item for m in methods for item in _map_chunks(model, out_dir, m, opts[m], plan)]
        sizes = {future.task_run_id: n for future, n in mapped}
        finished, failed, start, log = 0, [], time.perf_counter(), get_run_logger()
        for future in as_completed([future for future, _ in mapped]):
            future.wait()
            if future.state.is_completed():
                finished += sizes[future.task_run_id]
            else:
                failed.append(future)
            update_progress_artifact(progress, 100.0 * finished / max(total, 1))
            log.info(progress_line("explained", finished, total, time.perf_counter() - start,
                                   "image explanations" if len(methods) > 1 else "images"))
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(mapped)} explanation chunks failed; rerun to redo only "
                               f"those ({failed[0].state.type.value}: {failed[0].state.message})")
        redone = sorted({i for m in methods for i, d in enumerate(plan["done"][m]) if not d})
        result = finish_task(out_dir, plan["chunks"], plan["keys"], redone)
    result["first_image"] = plan["chunks"][0][0] if plan["chunks"] else None
    return result
