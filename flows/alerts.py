"""Emit a nightly run's events: each field of ``fruitlens.alerts.NightAlerts`` becomes the event of that name.

A plain function the flow calls (no task run of its own), like the artifacts; the names and the resource
come from ``flows.events``.
"""

from __future__ import annotations

from pathlib import Path

from flows import events
from fruitlens.alerts import NightAlerts


def emit_alerts(alerts: NightAlerts, run_dir: str | Path) -> list[str]:
    """Emit the events ``alerts`` holds about the run folder ``run_dir``; the names emitted, in order."""
    sent = []
    promotion = alerts.promotion
    for name, payload in (
            (events.RUN_COMPLETED, alerts.completed),
            (events.MODEL_PROMOTED if promotion and promotion["promoted"] else events.MODEL_REJECTED, promotion),
            (events.EXPLANATIONS_DRIFTED, alerts.drifted),
            (events.SANITY_FAILED, alerts.sanity_failed),
            (events.EVIDENCE_SHORTCUT, alerts.shortcut)):
        if payload is not None:
            events.emit(name, run_dir, payload)
            sent.append(name)
    return sent
