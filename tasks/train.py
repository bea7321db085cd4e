"""Train a model into the run folder."""

from __future__ import annotations

from prefect import get_run_logger, task

from tasks.cache import content_cache, run_name


def _fit_content(inputs: dict) -> dict:
    """The training data's content: the train+val digest of the run's index (written by the index task)."""
    from fruitlens.digests import split_digests, tree_digest
    from fruitlens.layout import RunLayout

    index_dir = RunLayout(inputs["run_dir"]).index_dir
    try:
        return {"fit": split_digests(index_dir)["fit"]}
    except (OSError, ValueError, KeyError):
        return {"tree": tree_digest(inputs["data_dir"])}


@task(name="train", cache_policy=content_cache(_fit_content), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=run_name("train", "run_dir"))
def train_task(data_dir: str, run_dir: str, train_config: dict) -> dict:
    """Train with ``train_config`` (TrainConfig fields) into ``run_dir``; resumes from its checkpoint."""
    from fruitlens.config import TrainConfig
    from fruitlens.layout import RunLayout
    from fruitlens.progress import epoch_lines
    from fruitlens.runs import model_digest
    from fruitlens.training import ResumeError, train_model
    from fruitlens.typed import build

    config = build(TrainConfig, train_config, "train")
    log = get_run_logger()
    resume = (RunLayout(run_dir).checkpoints_dir / "last.keras").is_file()
    lines = [epoch_lines(log, config.epochs)]
    try:  # a run killed mid-training goes on from its last checkpoint
        result = train_model(data_dir, run_dir, config, resume=resume, callbacks=lines)
    except ResumeError as exc:  # the checkpoint is of other data or another configuration
        log.info("not resuming (%s): training from scratch", exc)
        result = train_model(data_dir, run_dir, config, resume=False, callbacks=lines)
    return {"run_dir": run_dir, "model_digest": model_digest(run_dir), "epochs": result.epochs,
            "metrics": dict(result.metrics), "classes": list(result.classes),
            "curves_path": str(RunLayout(run_dir).curves)}
