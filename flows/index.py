"""index_flow: index a dataset folder."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.settings import run_name
from tasks.cache import fresh
from tasks.index import index_task


def _name() -> str:
    return run_name("index", "data_dir")


@flow(name="index", flow_run_name=_name, log_prints=True)
def index_flow(data_dir: str, out_dir: str) -> dict:
    """Index ``data_dir`` into ``out_dir``: images.parquet, classes.json, index.json; the digests."""
    return fresh(index_task, Path(out_dir) / "images.parquet", Path(out_dir) / "index.json")(data_dir, out_dir)
