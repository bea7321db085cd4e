"""train_flow: index, then train a model into a run folder."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.settings import run_name
from tasks.cache import fresh
from tasks.index import index_task
from tasks.train import train_task


def _name() -> str:
    from prefect.runtime import flow_run

    cfg = (flow_run.parameters or {}).get("train_config") or {}
    detail = [f"{cfg['arch']}" if "arch" in cfg else "", f"{cfg['image_size']}px" if "image_size" in cfg else "",
              f"e{cfg['epochs']}" if "epochs" in cfg else ""]
    return "-".join(p for p in [run_name("train", "data_dir"), *detail] if p)


@flow(name="train", flow_run_name=_name, log_prints=True)
def train_flow(data_dir: str, run_dir: str, train_config: dict | None = None) -> dict:
    """Train with ``train_config`` (TrainConfig fields; defaults for the rest) into ``run_dir``."""
    index_dir = str(Path(run_dir) / "index")
    index = fresh(index_task, Path(index_dir) / "index.json")(data_dir, index_dir)
    train = fresh(train_task, Path(run_dir) / "model.keras", Path(run_dir) / "model.json")
    return train(data_dir, run_dir, dict(train_config or {}), index["digests"]["fit"])
