"""The amortised explainer of the nightly: trained beside the classifier (cached by the classifier's digest and
the data's), then the audit of the whole split against the exact method."""

from __future__ import annotations

from prefect import task

from tasks.cache import content_cache, run_folder_name
from tasks.keys import model_and_images


@task(name="amortised-train", cache_policy=content_cache(model_and_images), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"amortised-train-{run_folder_name()}")
def amortised_train_task(model: dict, index_dir: str, options: dict, out_dir: str) -> str:
    """Train (or resume) the amortised explainer on the training split; its folder."""
    from fruitlens.batch.amortised_audit import train_run_explainer
    from fruitlens.method_options import AmortisedOptions
    from fruitlens.modelio import as_model_source
    from fruitlens.typed import build

    return train_run_explainer(as_model_source(model), index_dir, build(AmortisedOptions, options), out_dir)


@task(name="amortised-audit", cache_policy=content_cache(model_and_images), retries=1, retry_delay_seconds=1,
      persist_result=True, task_run_name=lambda: f"amortised-audit-{run_folder_name()}")
def amortised_audit_task(model: dict, index_dir: str, split: str, options: dict, audit_images: int,
                         min_agreement: float, top_k: int, out_dir: str) -> dict:
    """Explain the split with the explainer, audit a sample against KernelSHAP on its grid; the table, maps, counts."""
    from dataclasses import asdict

    from fruitlens.batch.amortised_audit import audit_run
    from fruitlens.method_options import AmortisedOptions
    from fruitlens.modelio import as_model_source
    from fruitlens.typed import build

    return asdict(audit_run(as_model_source(model), index_dir, split, build(AmortisedOptions, options),
                            audit_images, min_agreement, top_k, out_dir))
