"""The randomisation test of the run's explanation methods on a small probe set (the nightly's sanity check)."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name


def _model_and_probe(inputs: dict) -> dict:
    from fruitlens.batch.rows import probe_content, probe_rows
    from fruitlens.modelio import as_model_source

    rows = probe_rows(inputs["index_dir"], inputs["split"], inputs["explain_dir"], inputs["images"])
    return {"model": as_model_source(inputs["model"]).digest(), "probe": probe_content(rows)}


@task(name="sanity", cache_policy=content_cache(_model_and_probe), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"sanity-{run_folder_name()}")
def sanity_task(model: dict, index_dir: str, explain_dir: str, split: str, images: int, methods: list[str],
                options: dict, out_dir: str) -> str:
    """Write out_dir/sanity.parquet, sanity.png and verdicts.json for the first ``images`` explained images."""
    from fruitlens.batch.rows import probe_rows
    from fruitlens.batch.sanity import sanity_run
    from fruitlens.config import ExplainOptions
    from fruitlens.modelio import as_model_source
    from fruitlens.typed import build

    rows = probe_rows(index_dir, split, explain_dir, images)
    return sanity_run(as_model_source(model), rows, methods, build(ExplainOptions, options), out_dir)


@task(name="sanity-off")
def discard_sanity_task(out_dir: str) -> list[str]:
    """The nightly's sanity check is off: remove an earlier night's verdicts from the run folder."""
    from fruitlens.batch.sanity import discard_sanity

    return discard_sanity(out_dir)
