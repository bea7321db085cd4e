"""explain_flow: explain a split chunk by chunk over the task runner; resumable; progress in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.settings import build_task_runner, run_name, slug
from tasks.cache import fresh
from tasks.evaluate import model_digest_task
from tasks.explain import consolidate_task, explain_chunk_task, plan_chunks_task
from tasks.index import index_task


def _name() -> str:
    return run_name("explain", "methods", "split", "limit", "run_dir")


@flow(name="explain", flow_run_name=_name, task_runner=build_task_runner("thread"), log_prints=True)
def explain_flow(run_dir: str, data_dir: str, methods: list[str] | None = None, split: str = "test",
                 limit: int | None = None, chunk_size: int = 8, options: dict | None = None,
                 out_dir: str | None = None, select: str = "first") -> dict:
    """Explain ``limit`` images of ``split`` (all when None) with ``methods``.

    ``select`` picks the limited images: "first" by image id, or "report": those the run's report shows
    (from run_dir/eval/predictions.parquet), then the first by image id.

    Each chunk of ``chunk_size`` images and each method is one task writing one Parquet part; chunks whose
    part exists and whose inputs did not change are Cached, so a rerun after a crash redoes only the missing
    ones, and a change to one method's options re-runs that method only (and the ones after it).
    Returns the consolidated table paths and row counts.
    """
    methods = list(methods or ["lime", "gradcam"])
    out = out_dir or str(Path(run_dir) / "explain")
    index_dir = str(Path(run_dir) / "index")
    fresh(index_task, Path(index_dir) / "index.json")(data_dir, index_dir)
    digest = model_digest_task(run_dir)
    if select not in ("first", "report"):
        raise ValueError(f"select {select!r}: expected first or report")
    predictions = str(Path(run_dir) / "eval" / "predictions.parquet") if select == "report" else None
    plan = plan_chunks_task(index_dir, split, limit, chunk_size, out, methods, predictions)
    chunks, complete = plan["chunks"], plan["complete"]
    total = sum(len(c) for c in chunks) * len(methods)
    progress = create_progress_artifact(0.0, key=f"{slug(Path(run_dir).name)}-explain-progress",
                                        description=f"{total // max(len(methods), 1)} images in {len(chunks)} "
                                        f"chunks, explained with {', '.join(methods)}")
    options = dict(options or {})
    futures, sizes, before, after = [], {}, [], {}
    for method in methods:  # a method's chunks start after the previous method's (side-by-side PNGs)
        mine = []
        for is_done in (True, False):  # chunks with a part on disk may be Cached; the others run whatever the cache
            picked = [i for i, c in enumerate(complete[method]) if bool(c) == is_done]
            if picked:
                task = explain_chunk_task if is_done else explain_chunk_task.with_options(refresh_cache=True)
                batch = task.map(unmapped(run_dir), unmapped(digest), unmapped(out), unmapped(method),
                                 unmapped(dict(options.get(method, {}))), [chunks[i] for i in picked], picked,
                                 unmapped(dict(after)), wait_for=before)
                mine += list(batch)
                sizes.update({f.task_run_id: len(chunks[i]) for f, i in zip(batch, picked, strict=True)})
        futures += mine
        before, after = mine, {**after, method: options.get(method, {})}
    finished, failed = 0, []
    for future in as_completed(futures):
        future.wait()
        if future.state.is_completed():
            finished += sizes[future.task_run_id]
        else:
            failed.append(future)
        update_progress_artifact(progress, 100.0 * finished / max(total, 1))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(futures)} explanation chunks failed; rerun to redo only those "
                           f"({failed[0].state.type.value}: {failed[0].state.message})")
    result = consolidate_task(out, methods, chunks)
    result["first_image"] = chunks[0][0] if chunks else None
    return result
