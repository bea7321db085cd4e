"""Artifacts for the Prefect UI: tables, a markdown summary with thumbnails, links to the files written.

Plain functions the flows call, so each artifact belongs to the flow run that made it (and costs no task
run of its own). Keys are stable (lowercase, dashes), so the UI shows each one's history run after run.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact


def _cell(value):
    """A table cell as the UI may show it: text holding markup (a class named ``<img onerror=...>``) escaped, so
    it shows as text wherever it is rendered; plain names (``red_dot``) unchanged."""
    if isinstance(value, str) and any(c in value for c in "<>&"):
        return html.escape(value)
    return value


def _escaped(rows: list[dict]) -> list[dict]:
    return [{_cell(k): _cell(v) for k, v in row.items()} for row in rows]


def _records(df) -> list[dict]:
    return _escaped(df.astype(object).where(df.notna(), None).to_dict("records"))


def publish_eval_tables(eval_dir: str, prefix: str = "") -> dict:
    """Table artifacts of per-class metrics and confusion counts from eval_dir/predictions.parquet."""
    from fruitlens import tables
    from fruitlens.layout import PREDICTIONS_FILE
    from fruitlens.metrics import confusion_counts, per_class_metrics

    predictions = tables.read_table(Path(eval_dir) / PREDICTIONS_FILE)
    per_class, confusion = per_class_metrics(predictions), confusion_counts(predictions)
    create_table_artifact(_records(per_class), key=f"{prefix}per-class-metrics",
                          description="Precision, recall, F1 and support per class")
    create_table_artifact(_records(confusion), key=f"{prefix}confusion-counts",
                          description="How often each true class was predicted as each class")
    return {"classes": int(len(per_class)), "confusion_cells": int(len(confusion))}


def publish_comparison(rows: list[dict], decision: str, prefix: str = "", note: str = "") -> None:
    """Table artifact: the new model against the current one on the same test set, and the decision."""
    from fruitlens.promotion import DECISION_WORDS

    verdict = DECISION_WORDS[decision] + (f"; {note}" if note else "")
    create_table_artifact(_escaped(rows), key=f"{prefix}model-comparison",
                          description=f"New vs current model: {verdict}")


def publish_summary(title: str, metrics: dict, lines: str, images: list[list[str]], prefix: str = "") -> None:
    """Markdown artifact: headline numbers and small thumbnails embedded as data URIs."""
    from fruitlens.summary import summary_markdown

    create_markdown_artifact(summary_markdown(title, metrics, [lines], [tuple(i) for i in images]),
                             key=f"{prefix}run-summary", description=title)


def publish_links(links: dict[str, str], prefix: str = "") -> int:
    """One link artifact per file written (file:// URLs), keyed by what it is (e.g. report-link)."""
    n = 0
    for name, path in links.items():
        p = Path(path)
        if p.exists():
            key = re.sub(r"[^a-z0-9]+", "-", f"{prefix}{name}-link".lower())
            create_link_artifact(p.resolve().as_uri(), link_text=f"{name}: {p.name}", key=key)
            n += 1
    return n


def publish_trend(rows: list[dict], prefix: str = "") -> None:
    """Table artifact: one row per night of the models home (``fruitlens.nights``), newest first."""
    create_table_artifact(_escaped(rows), key=f"{prefix}nightly-trend",  # run folder names are user strings
                          description="Trend across nights: accuracy, macro F1, drift, sanity, evidence, shortcuts")
