"""Index the dataset into the run folder."""

from __future__ import annotations

from prefect import task

from fruitlens.digests import tree_digest
from tasks.cache import content_cache, run_name


@task(name="index", cache_policy=content_cache(lambda i: {"tree": tree_digest(i["data_dir"])}), retries=2,
      retry_delay_seconds=1, persist_result=True, task_run_name=run_name("index", "data_dir"))
def index_task(data_dir: str, out_dir: str) -> dict:
    """Index ``data_dir`` into ``out_dir`` (images.parquet, classes.json, index.json); digests per split."""
    from fruitlens.dataset import index_or_load
    from fruitlens.digests import split_digests

    index = index_or_load(data_dir, out_dir)
    return {"index_dir": out_dir, "fingerprint": index.fingerprint, "digests": split_digests(out_dir),
            "num_ok": int(len(index.usable)), "num_bad": int(len(index.table) - len(index.usable)),
            "classes": sorted(index.classes)}
