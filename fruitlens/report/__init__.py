"""The run report: one self-contained HTML page per run folder, built from its tables and files alone.

``build_report(run_dir)`` reads what a run wrote (see ``fruitlens.layout``) and writes ``run_dir/report.html``:
a header with the headline numbers, a table of contents, then one section per part of the run. Every
section reads only what exists; a missing file gives a plain "not produced in this run" line, never an
error. Images are embedded as data URIs (or, with ``embed=False``, referenced relatively beside the
report); the CSS and the JavaScript (sortable tables, a click-to-enlarge lightbox) are inlined from
``assets/``: the page needs no network and works from ``file://`` and when served.

The package: ``loader`` reads the run, ``html`` holds the building blocks, ``evaluation``, ``explanations``
and ``record`` the sections, ``cards`` one explained image. Metrics come from ``fruitlens.metrics`` and the
images shown from ``fruitlens.selection``, the same code the pipeline uses.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable
from pathlib import Path

from fruitlens import tables
from fruitlens.errors import RunError
from fruitlens.layout import RunLayout
from fruitlens.report.evaluation import headline, section_confusion, section_metrics, section_mistakes
from fruitlens.report.explanations import (
    section_evidence,
    section_explanations,
    section_ranking,
    section_sanity,
    section_visualize,
    section_why,
)
from fruitlens.report.html import asset, esc, problems_box
from fruitlens.report.loader import ReportData, ReportOptions, load
from fruitlens.report.record import (
    section_comparison,
    section_dataset,
    section_drift,
    section_run,
    section_training,
    section_trend,
)

__all__ = ["SECTIONS", "ReportOptions", "build_report"]

# The sections, in page order: (anchor id, title). Tests check that each is present.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("dataset", "Dataset"),
    ("training", "Training"),
    ("metrics", "Accuracy and per-class metrics"),
    ("confusion", "Confusion matrix"),
    ("mistakes", "Most confident mistakes"),
    ("why", "Why the model confuses them"),
    ("explanations", "Explanations per class"),
    ("ranking", "Explanation methods ranked by faithfulness"),
    ("evidence", "Evidence per class"),
    ("visualize", "Activations and filters"),
    ("sanity", "Do the explanations depend on the model?"),
    ("comparison", "Comparison with the previous model"),
    ("drift", "What changed in what the model looks at"),
    ("trend", "Trend across nights"),
    ("run", "Configuration, versions and timings"),
)

_BUILDERS: dict[str, Callable[[ReportData, ReportOptions], str]] = {
    "dataset": section_dataset, "training": section_training, "metrics": section_metrics,
    "confusion": section_confusion, "mistakes": section_mistakes, "why": section_why,
    "explanations": section_explanations, "ranking": section_ranking, "visualize": section_visualize,
    "sanity": section_sanity, "evidence": section_evidence,
    "comparison": section_comparison, "drift": section_drift, "trend": section_trend,
    "run": section_run,
}


def _check_run_dir(root: Path) -> None:
    if not root.is_dir():
        raise RunError(f"{root}: no such run folder; expected a folder written by `fruitlens run` or `train`")
    lay = RunLayout(root)
    known = (lay.card, lay.run_record, lay.index_json, lay.images_table, lay.history, lay.predictions,
             lay.explain.table("lime"), lay.explain.table("gradcam"), lay.comparison)
    if not any(k.exists() for k in known):
        names = ", ".join(k.relative_to(root).as_posix() for k in known)
        raise RunError(f"{root}: not a run folder; expected at least one of {names}")


def _page(root: Path, data: ReportData, opts: ReportOptions) -> str:
    bodies = {sid: _BUILDERS[sid](data, opts) for sid, _ in SECTIONS}
    tiles, short = headline(data)
    toc = "".join(f"<li><a href=\"#{sid}\">{esc(title)}</a></li>" for sid, title in SECTIONS)
    sections = "\n".join(f"<section id=\"{sid}\"><h2>{esc(title)}</h2>\n{bodies[sid]}\n</section>"
                         for sid, title in SECTIONS)
    problems = problems_box(data.run.problems)
    name = root.resolve().name
    built = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fruitlens report · {esc(name)}</title>
<style>{asset("report.css")}</style>
</head>
<body>
<header><div class="inner">
<h1>fruitlens run report · {esc(name)}</h1>
<div class="sub">{esc(root.resolve())} · built {built}</div>
<p class="short">{short}</p>
<div class="tiles">{tiles}</div>
</div></header>
<main>
<nav class="toc" id="contents"><h2>Contents</h2><ol>{toc}</ol></nav>
{problems}
{sections}
<footer>Built by <code>fruitlens report {esc(root)}</code> from the run's tables and files alone; rebuild it
any time with the same command. No network is needed to view this page.</footer>
</main>
<script>{asset("report.js")}</script>
</body>
</html>
"""


def build_report(run_dir: str | os.PathLike, *, samples_per_class: int = 2, top_mistakes: int = 12,
                 top_pairs: int = 5, per_pair: int = 2, embed: bool = True) -> Path:
    """Write ``run_dir/report.html`` from the run's tables and files; returns its path.

    Args:
        run_dir: a run folder (see ``fruitlens.layout``). Any part may be missing: its section then says so.
        samples_per_class: explained images shown per class in "Explanations per class".
        top_mistakes: confident mistakes shown as photos.
        top_pairs: confused class pairs listed and explained.
        per_pair: explained mistakes shown per confused pair.
        embed: embed the run's PNGs as data URIs (one portable file); with False they are referenced
            relatively (the report then needs the run folder beside it). Dataset photos, which live
            outside the run, are always embedded as small thumbnails.

    Returns:
        The path of ``report.html``.

    Raises:
        RunError: ``run_dir`` is not a folder, or holds none of the files of a run.
        ValueError: a count below 1.
    """
    root = Path(run_dir)
    _check_run_dir(root)
    opts = ReportOptions(samples_per_class=samples_per_class, top_mistakes=top_mistakes, top_pairs=top_pairs,
                         per_pair=per_pair, embed=embed)
    data = load(root, embed=embed)
    path = RunLayout(root).report
    tables.write_bytes(path, _page(root, data, opts).encode("utf-8"))
    return path
