"""What a nightly run has to say to the outside: the payload of each event it emits, and when it emits it.

The flow turns these into Prefect events (``flows/events.py`` owns the event names; ``flows/alerts.py`` maps
the fields of :class:`NightAlerts` to them). Every payload is small JSON: metrics, shares, verdicts, names.

- ``completed`` (fruitlens.run.completed): every run; headline metrics, seconds, report path.
- ``promotion`` (fruitlens.model.promoted / fruitlens.model.rejected, by ``promotion["promoted"]``): when a
  trained model was compared with the current one and something changed; a rerun that trained the same model
  as the current one emits neither (nothing was promoted or rejected).
- ``drifted`` (fruitlens.explanations.drifted): the evidence moved on at least one probe image, or on more
  than ``max_drift`` of them (``over_max_drift`` says which).
- ``sanity_failed`` (fruitlens.sanity.failed): a method failed the randomisation test.
- ``shortcut`` (fruitlens.evidence.shortcut): a class's Grad-CAM evidence sits mostly on the border or on
  plain background (``fruitlens.explain.shortcut``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fruitlens import tables
from fruitlens.layout import RunLayout


@dataclass(frozen=True)
class NightAlerts:
    """The payload of each event a run emits; None where that event is not emitted."""

    completed: dict[str, Any]
    promotion: dict[str, Any] | None = None
    drifted: dict[str, Any] | None = None
    sanity_failed: dict[str, Any] | None = None
    shortcut: dict[str, Any] | None = None


def _num(metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
    return None if metrics is None else {str(k): float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def promotion_reason(new: Mapping[str, float], old: Mapping[str, float] | None, metric: str, promoted: bool,
                     drift: Mapping[str, Any] | None, max_drift: float | None) -> str:
    """One line: why the new model was promoted or rejected."""
    if old is None:
        return "there was no comparable current model"
    worse = float(new[metric]) < float(old[metric])
    words = f"{metric} new {float(new[metric]):.4f}, current {float(old[metric]):.4f}"
    if promoted:
        return f"not worse on {words}"
    if worse:
        return f"worse on {words}"
    moved = float((drift or {}).get("moved_share") or 0.0)
    if max_drift is None or moved <= max_drift:  # kept for no reason this function knows of: say what it knows
        return f"kept the current model, not worse on {words}"
    return f"the evidence moved on {moved:.0%} of the probe images, more than max_drift {max_drift:.0%}"


def night_alerts(run_dir: str | os.PathLike, *, metrics: Mapping[str, float], seconds: float, report: str | None,
                 model_digest: str, comparison: Mapping[str, Any], metric: str,
                 max_drift: float | None = None, trained: bool = True) -> NightAlerts:
    """The events of a finished run, from its figures and the files it wrote (RUN/sanity, RUN/evidence).

    Args:
        comparison: the nightly's comparison: ``promote``, ``old`` (the current model's metrics or None),
            ``same`` (the new model is the current one), ``drift`` (``explain.drift.drift_summary`` or None).
        trained: False when the run explained an existing model (nothing compared or promoted).
    """
    from fruitlens.explain.shortcut import BORDER_BAND, MAX_SHARE, MIN_LIFT, flagged_classes

    run = RunLayout(Path(run_dir).resolve())
    promoted = bool(comparison.get("promote")) and trained
    completed = {"run_dir": str(run.root), "metrics": _num(metrics), "seconds": round(float(seconds), 3),
                 "report": str(report or ""), "model_digest": str(model_digest), "promoted": promoted}
    promotion = None
    if trained and not comparison.get("same"):
        old = comparison.get("old")
        drift = comparison.get("drift")
        promotion = {"promoted": promoted, "metric": metric, "new": _num(metrics), "old": _num(old),
                     "reason": promotion_reason(metrics, old, metric, promoted, drift, max_drift)}
    drifted = None
    drift = comparison.get("drift") or {}
    if drift.get("images") and float(drift.get("moved_share") or 0.0) > 0:
        share = float(drift["moved_share"])
        drifted = {"drift_share": share, "max_drift": max_drift, "images": int(drift["images"]),
                   "over_max_drift": max_drift is not None and share > max_drift,
                   "mean_rank": drift.get("mean_rank"), "classes": dict(drift.get("classes") or {})}
    sanity_failed = None
    if run.sanity.verdicts.is_file():
        found = tables.read_json(run.sanity.verdicts).get("verdicts", [])
        failed = [v for v in found if not v.get("passed")]
        if failed:
            keys = ("passed", "rank", "ssim", "top_k", "reason")
            sanity_failed = {"methods": [str(v["method"]) for v in failed],
                             "figures": {str(v["method"]): {k: _json(v.get(k)) for k in keys} for v in found}}
    shortcut = None
    if run.shortcut.is_file() and (classes := flagged_classes(tables.read_table(run.shortcut))):
        shortcut = {"classes": classes, "border_band": BORDER_BAND, "max_share": MAX_SHARE, "min_lift": MIN_LIFT}
    return NightAlerts(completed=completed, promotion=promotion, drifted=drifted, sanity_failed=sanity_failed,
                       shortcut=shortcut)


def _json(value: Any) -> Any:
    """NaN (a similarity a method has not got) as None: payloads are strict JSON."""
    return None if isinstance(value, float) and value != value else value
