"""train_flow: index, then train a model into a run folder."""

from __future__ import annotations

from prefect import flow

from flows.settings import run_name
from fruitlens.layout import RunLayout
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
def train_flow(data_dir: str, run_dir: str, train_config: dict) -> dict:
    """Index ``data_dir`` and train with ``train_config`` (TrainConfig fields) into ``run_dir``."""
    run = RunLayout(run_dir)
    fresh(index_task, run.index_json)(data_dir, str(run.index_dir))
    return fresh(train_task, run.model, run.card)(data_dir, run_dir, train_config)
