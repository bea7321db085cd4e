"""The "current" model of a models home, and promoting a new model when it is not worse.

``<models_home>/current/`` holds the promoted model.keras and model.json; ``<models_home>/current.json`` says
which run it came from. A new model is compared with the current one only when both know the same classes:
a model trained on other classes is another task, not a better or worse model.

The default models home belongs to one run folder (:func:`default_models_home`): two run folders under one
parent keep their own current models. Sharing one is deliberate (``--models-home`` / ``models_home``).
Each run ends in one :data:`Decision`; :func:`decision_line` says it in words.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fruitlens import tables
from fruitlens.layout import CARD_FILE, CURRENT, MODEL_FILE

MODELS = "models"

Decision = Literal["promoted", "kept", "unchanged", "explained"]
"""promoted: this run's model became current; kept: the current model stays (the new one is worse, or its
evidence drifted too far); unchanged: this run's model already is the current one (nothing retrained since it
was promoted); explained: an existing model was explained, nothing trained or compared."""

DECISION_WORDS: dict[str, str] = {
    "promoted": "promoted to current",
    "kept": "kept the current model",
    "unchanged": "unchanged: the current model is already this one",
    "explained": "nothing promoted (an existing model was explained)",
}


def decide(same_model: bool, promote: bool) -> Decision:
    """The run's decision: ``unchanged`` when its model is the current one, else promoted or kept."""
    if same_model:
        return "unchanged"
    return "promoted" if promote else "kept"


def decision_line(decision: Decision, models_home: str | os.PathLike) -> str:
    """The decision in words with the models home: ``promoted to current in runs/models/nightly``."""
    if decision not in DECISION_WORDS:
        raise ValueError(f"decision {decision!r}: expected one of {', '.join(DECISION_WORDS)}")
    if decision == "unchanged":
        return f"unchanged: the current model in {models_home} is already this one"
    return f"{DECISION_WORDS[decision]} in {models_home}"


def current_dir(models_home: str | os.PathLike) -> Path:
    return Path(models_home) / CURRENT


def current_classes(models_home: str | os.PathLike) -> tuple[str, ...] | None:
    """The classes of the current model, or None when there is none (or its card cannot be read)."""
    card = current_dir(models_home) / CARD_FILE
    try:
        return tuple(tables.read_json(card)["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def comparable(new_classes: Sequence[str], models_home: str | os.PathLike) -> tuple[bool, str]:
    """Whether the current model can be compared with a new one on ``new_classes``, and why not (a line to show
    the user; empty when there is simply no current model yet)."""
    old = current_classes(models_home)
    if old is None:
        return False, ""  # nothing to compare with: the new model becomes current
    if tuple(old) != tuple(new_classes):
        return False, (f"the current model in {current_dir(models_home)} knows other classes ({len(old)}: "
                       f"{', '.join(old[:4])}{', ...' if len(old) > 4 else ''}); not compared, the new model "
                       "becomes current")
    return True, ""


def compare_models(new: Mapping[str, float], current: Mapping[str, float] | None,
                   metric: str = "accuracy", drift: Mapping[str, Any] | None = None,
                   max_drift: float | None = None, sanity: Mapping[str, bool] | None = None
                   ) -> tuple[pd.DataFrame, bool]:
    """A table new vs current on each metric, and whether the new model is promoted.

    The new model is promoted when there is no current one, or when it is not worse on ``metric`` and, with
    ``max_drift``, the share of probe images whose evidence moved (``drift``: ``explain.drift.drift_summary``)
    is at most ``max_drift``. The drift numbers are rows of the table (new: the value, current: none), and so
    is the randomisation test's verdict per method (``sanity``: {method: passed}; row ``sanity_<method>``,
    new 1 = passes, 0 = fails; it is shown, it does not decide).
    """
    names = [m for m in ("accuracy", "macro_f1", "n") if m in new]
    rows = []
    for name in names:
        cur = None if current is None else current.get(name)
        rows.append({"metric": name, "new": float(new[name]), "current": None if cur is None else float(cur),
                     "delta": None if cur is None else round(float(new[name]) - float(cur), 6)})
    promote = current is None or float(new[metric]) >= float(current[metric])
    if drift and drift.get("images"):
        for name in ("moved_share", "mean_rank", "predictions_changed"):
            if drift.get(name) is not None:
                rows.append({"metric": f"evidence_{name}", "new": float(drift[name]), "current": None,
                             "delta": None})
        if max_drift is not None and current is not None and float(drift["moved_share"]) > max_drift:
            promote = False
    for method, passed in (sanity or {}).items():
        rows.append({"metric": f"sanity_{method}", "new": 1.0 if passed else 0.0, "current": None, "delta": None})
    return pd.DataFrame(rows, columns=["metric", "new", "current", "delta"]), promote


def promote_model(run_dir: str | os.PathLike, models_home: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Copy the run's model.keras and model.json to ``models_home/current/`` (swapped in whole).

    ``models_home/current.json`` records which run it came from and ``info`` (metrics, digest, time).
    """
    home = Path(models_home)
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{CURRENT}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copy2(Path(run_dir) / name, staging / name)
    target = current_dir(home)
    old = home / f".{CURRENT}.{os.getpid()}.old"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    tables.write_json(home / f"{CURRENT}.json", {"run_dir": str(Path(run_dir).resolve()),
                                                 "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                 **dict(info)})
    return target


def default_models_home(run_dir: str | os.PathLike) -> Path:
    """Where the current model of a run folder lives unless configured: ``<parent>/models/<run folder name>``.

    One per run folder: ``runs/demo`` and ``runs/fruits`` keep their own current models (``runs/models/demo``,
    ``runs/models/fruits``) instead of replacing each other's; the nightly, rerun into the same folder, compares
    each night with the model of the night before. The home lives beside the run folder, not in it, so it
    outlives a run folder that is deleted to start afresh.
    """
    run = Path(run_dir).expanduser().resolve()
    return run.parent / MODELS / run.name
