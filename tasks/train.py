"""Train a model into the run folder."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_name


@task(name="train", cache_policy=content_cache("fruitlens.training", "fruitlens.models", "fruitlens.inputs"),
      retries=1, retry_delay_seconds=1, persist_result=True, task_run_name=run_name("train", "run_dir"))
def train_task(data_dir: str, run_dir: str, train_config: dict, fit_digest: str) -> dict:
    """Train with ``train_config`` (TrainConfig fields); ``fit_digest`` (train+val content) keys the cache."""
    from pathlib import Path

    from fruitlens.runs import model_digest
    from fruitlens.training import TrainConfig, train_model

    result = train_model(data_dir, run_dir, TrainConfig.from_dict(train_config))
    return {"run_dir": run_dir, "model_digest": model_digest(run_dir), "epochs": int(result.get("epochs", 0)),
            "metrics": dict(result.get("metrics", {})), "history_path": str(result.get("history_path", "")),
            "curves_path": str(Path(run_dir) / "curves.png")}
