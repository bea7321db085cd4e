"""The Prefect events a nightly run emits, and the one function that emits them.

Event names are the vocabulary automations match on (``flows/automations.py``); every event's resource is
the run folder (``fruitlens.run.<slug of the run folder's name>``, with its path as a label), and its payload
carries the figures that explain it (metrics, shares, verdicts), small JSON values only.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

RUN_COMPLETED = "fruitlens.run.completed"
MODEL_PROMOTED = "fruitlens.model.promoted"
MODEL_REJECTED = "fruitlens.model.rejected"
EXPLANATIONS_DRIFTED = "fruitlens.explanations.drifted"
SANITY_FAILED = "fruitlens.sanity.failed"
EVIDENCE_SHORTCUT = "fruitlens.evidence.shortcut"
EVENTS = (RUN_COMPLETED, MODEL_PROMOTED, MODEL_REJECTED, EXPLANATIONS_DRIFTED, SANITY_FAILED, EVIDENCE_SHORTCUT)


def run_resource(run_dir: str | Path) -> dict[str, str]:
    """The Prefect resource of a run folder: a stable id (its name) and its path."""
    from flows.settings import slug

    path = Path(run_dir).resolve()
    return {"prefect.resource.id": f"fruitlens.run.{slug(path.name)}", "prefect.resource.name": path.name,
            "fruitlens.run-dir": str(path)}


def emit(event: str, run_dir: str | Path, payload: dict) -> None:
    """Emit ``event`` about the run folder ``run_dir`` with ``payload`` (JSON values)."""
    from prefect.events import emit_event

    if event not in EVENTS:
        raise ValueError(f"event {event!r}: expected one of {', '.join(EVENTS)}")
    emit_event(event=event, resource=run_resource(run_dir), payload=payload)
