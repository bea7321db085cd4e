"""Trends across nights: one row per night in ``<models_home>/nights.parquet``, and the figure of them.

Every nightly run adds its row (``NIGHTS_SCHEMA`` in ``fruitlens.tables``): when, which run folder and model,
accuracy and macro F1, the share of probe images whose evidence moved, the randomisation test's verdicts, the
share of Grad-CAM heat on the evidence masks, the classes flagged by the shortcut alert, and the seconds.

**One row per (run folder, model).** A served nightly writes the same run folder every night; a night that
trains a new model (new data, new config) adds a row. A rerun that ends with the same model (nothing changed,
every step Cached) is not a new night: it rewrites that row with its latest values and date and counts itself
in ``reruns``, so an unchanged rerun never draws a second, identical point on the trend.

The run folder gets a copy of the history up to its own night (``RUN/trend/nights.parquet``) and the figure
(``RUN/trend/trend.png``), so its report is built from the run folder alone, like every other section. The copy
is rewritten only when more than a rerun's date, seconds and count changed (:data:`PER_RUN_COLUMNS`): an
unchanged rerun draws nothing and leaves the report Cached.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.layout import NIGHTS_FILE, RunLayout

KEY = ("run_dir", "model_digest")
PER_RUN_COLUMNS = ("date", "seconds", "reruns")  # what an unchanged rerun changes on its night's row


@dataclass(frozen=True)
class Night:
    """What one nightly run says about itself, as one row of the ``nights`` table."""

    run_dir: str
    model_digest: str
    accuracy: float | None
    macro_f1: float | None
    seconds: float
    promoted: bool = False
    drift_share: float | None = None
    sanity: Mapping[str, bool] = field(default_factory=dict)  # {method: passed}
    evidence_share: float | None = None
    shortcut_classes: tuple[str, ...] = ()
    date: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    def to_row(self) -> dict:
        return {"date": pd.Timestamp(self.date), "run": Path(self.run_dir).name, "run_dir": self.run_dir,
                "model_digest": self.model_digest, "promoted": bool(self.promoted), "accuracy": self.accuracy,
                "macro_f1": self.macro_f1, "drift_share": self.drift_share,
                "sanity": ",".join(f"{m}:{'pass' if ok else 'fail'}" for m, ok in self.sanity.items()),
                "sanity_failed": sum(not ok for ok in self.sanity.values()) if self.sanity else None,
                "evidence_share": self.evidence_share, "shortcut_classes": ",".join(self.shortcut_classes),
                "shortcut_flags": len(self.shortcut_classes), "seconds": round(float(self.seconds), 3), "reruns": 0}


def night_of_run(run_dir: str | os.PathLike, *, model_digest: str, metrics: Mapping[str, float], seconds: float,
                 promoted: bool = False, drift: Mapping | None = None) -> Night:
    """The :class:`Night` of a run folder: the figures given, plus its sanity verdicts, evidence share and
    shortcut flags read from the files the run wrote (absent files: empty or null)."""
    from fruitlens.batch.sanity import read_verdicts
    from fruitlens.explain.shortcut import flagged_classes

    run = RunLayout(Path(run_dir).resolve())
    evidence, shortcut = (tables.read_table(p) if p.is_file() else None for p in (run.class_evidence, run.shortcut))
    share = None
    if evidence is not None and "with_mask" in evidence and evidence["with_mask"].sum() > 0:
        masked = evidence[evidence["with_mask"] > 0]
        share = float(np.average(masked["evidence_share"], weights=masked["with_mask"]))
    moved = None if not drift or not drift.get("images") else float(drift["moved_share"])
    return Night(run_dir=str(run.root), model_digest=str(model_digest), accuracy=_float(metrics.get("accuracy")),
                 macro_f1=_float(metrics.get("macro_f1")), seconds=float(seconds), promoted=bool(promoted),
                 drift_share=moved, sanity=read_verdicts(run.sanity.root), evidence_share=share,
                 shortcut_classes=tuple(flagged_classes(shortcut)))


def _float(value) -> float | None:
    return None if value is None else float(value)


@contextmanager
def _locked(home: Path):
    """One writer of a models home's nights table at a time (two nightlies may share a models home)."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / f".{NIGHTS_FILE}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_nights(path: str | os.PathLike) -> pd.DataFrame:
    """A ``nights`` table, oldest first; an empty one when the file does not exist."""
    p = Path(path)
    if not p.is_file():
        return pd.DataFrame(columns=tables.NIGHTS_SCHEMA.names)
    return tables.read_table(p).sort_values("date", kind="stable", ignore_index=True)


def record_night(models_home: str | os.PathLike, night: Night) -> pd.DataFrame:
    """Add ``night`` to ``<models_home>/nights.parquet`` (written atomically), replacing the row of the same run
    folder and model (its ``reruns`` + 1); returns the whole table, oldest first."""
    home = Path(models_home)
    path = home / NIGHTS_FILE
    with _locked(home):
        old = read_nights(path)
        row = night.to_row()
        same = (old["run_dir"] == row["run_dir"]) & (old["model_digest"] == row["model_digest"]) if len(old) else []
        if len(old) and same.any():
            before = old[same].iloc[-1]
            row["reruns"] = int(old.loc[same, "reruns"].max()) + 1
            # the same model: what the night that trained it found stands (it was promoted then; a rerun has no
            # drift to measure, as the model is the current one)
            row["promoted"] = bool(row["promoted"]) or bool(before["promoted"])
            row.update({k: before[k] for k, v in row.items()
                        if k not in PER_RUN_COLUMNS and (v is None or (isinstance(v, float) and v != v))})
            old = old[~same]
        new = pd.DataFrame([row], columns=tables.NIGHTS_SCHEMA.names)
        table = new if not len(old) else pd.concat([old, new], ignore_index=True)
        table = table.sort_values("date", kind="stable", ignore_index=True)
        tables.write_table(table, path, "nights")
    return read_nights(path)


def trend_figure(table: pd.DataFrame):
    """Three panels over the nights (x: date of each row): accuracy and macro F1; the shares of evidence that
    moved and that sit on the masks; the methods failing the sanity check and the classes flagged as shortcuts."""
    from fruitlens.plots import plt

    t = table.sort_values("date", kind="stable", ignore_index=True)
    x = np.arange(len(t))
    labels = [f"{d:%m-%d %H:%M}\n{r[:14]}" for d, r in zip(pd.to_datetime(t["date"]), t["run"], strict=True)]
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 7.4), sharex=True)
    panels = (
        (axes[0], (("accuracy", "accuracy", "o"), ("macro_f1", "macro F1", "s")), "score on the test split", (0, 1.02)),
        (axes[1], (("drift_share", "evidence moved (share of probe images)", "o"),
                   ("evidence_share", "heat on the evidence masks (share)", "s")), "share", (0, 1.02)),
        (axes[2], (("sanity_failed", "methods failing the randomisation test", "o"),
                   ("shortcut_flags", "classes flagged as shortcuts", "s")), "count", None),
    )
    for ax, series, ylabel, ylim in panels:
        for k, (column, name, marker) in enumerate(series):
            y = pd.to_numeric(t[column], errors="coerce").to_numpy(np.float64)
            label = name if np.isfinite(y).any() else f"{name}: not measured"
            if ylim:
                ax.plot(x, y, marker=marker, label=label)
            else:  # counts: side-by-side bars, so equal counts do not hide each other
                bars = ax.bar(x + (k - 0.5) * 0.3, np.nan_to_num(y), width=0.3, label=label)
                ax.bar_label(bars, labels=["–" if not np.isfinite(v) else f"{v:.0f}" for v in y], fontsize=8)
        ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        else:
            top = np.nanmax(pd.to_numeric(t[[c for c, _, _ in series]].stack(), errors="coerce").to_numpy(
                np.float64), initial=0.0)
            ax.set_ylim(0, max(top, 1.0) + 0.5)
            ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    promoted = t["promoted"].fillna(False).to_numpy(bool)
    for xi in x[promoted]:
        axes[0].axvline(xi, color="green", alpha=0.15, linewidth=6)
    axes[2].set_xticks(x, labels, fontsize=8)
    axes[2].set_xlabel("night (date UTC and run folder); green band: the model was promoted")
    fig.suptitle(f"Trend across {len(t)} night{'s' if len(t) != 1 else ''} of this models home", fontsize=10)
    fig.tight_layout()
    return fig


def write_trend(run_dir: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write ``RUN/trend/nights.parquet`` (``table`` up to this run) and ``RUN/trend/trend.png``; the table path."""
    from fruitlens.plots import save_figure

    run = RunLayout(run_dir)
    if run.trend_png.is_file() and run.trend_table.is_file() and _same_nights(tables.read_table(run.trend_table),
                                                                               table):
        return run.trend_table  # only a rerun's date, seconds and count changed: nothing to draw again
    save_figure(trend_figure(table), run.trend_png, dpi=110)
    return tables.write_table(table, run.trend_table, "nights")


def _same_nights(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two nights tables hold the same rows, leaving out :data:`PER_RUN_COLUMNS`."""
    def stable(t: pd.DataFrame) -> pd.DataFrame:
        t = t.drop(columns=[c for c in PER_RUN_COLUMNS if c in t.columns])
        return t.sort_values(list(KEY), kind="stable", ignore_index=True)
    try:
        return stable(a).equals(stable(b))
    except (KeyError, ValueError, TypeError):
        return False


def trend_rows(table: pd.DataFrame, columns: Sequence[str] = ("date", "run", "model_digest", "promoted", "accuracy",
                                                                "macro_f1", "drift_share", "sanity", "evidence_share",
                                                                "shortcut_classes", "seconds", "reruns")) -> list[dict]:
    """The table as JSON-able records (newest first), for a Prefect table artifact."""
    t = table.sort_values("date", ascending=False, kind="stable")[list(columns)].copy()
    t["date"] = pd.to_datetime(t["date"]).dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    t["model_digest"] = t["model_digest"].astype(str).str[:12]
    return t.astype(object).where(t.notna(), None).to_dict("records")
