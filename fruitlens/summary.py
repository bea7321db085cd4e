"""What a pipeline run says about itself: run.json (config, versions, timings) and the summary shown in the UI.

Every string the flows publish is built here, so the flows stay a plain sequence of calls.
"""

from __future__ import annotations

import base64
import importlib.metadata as md
import io
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fruitlens import tables
from fruitlens.layout import RunLayout
from fruitlens.promotion import DECISION_WORDS


def thumbnail_uri(path: str | os.PathLike, max_size: int = 240) -> str:
    """A PNG thumbnail of an image file as a ``data:`` URI (for markdown artifacts)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_size, max_size))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def explanation_pngs(explain_dir: str | os.PathLike, methods: Sequence[str], per_method: int = 2) -> list[Path]:
    """The first few explanation PNGs of each method (sorted by name, so stable)."""
    out: list[Path] = []
    for method in methods:
        folder = Path(explain_dir) / method
        if folder.is_dir():
            out.extend(sorted(folder.glob("*.png"))[:per_method])
    return out


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:@])")  # ':', '@', '.' stop autolinks


def markdown_text(value: Any) -> str:
    """``value`` as markdown that shows exactly that text, with no markup from it interpreted.

    For every user string (class names, paths, notes) that goes into a Prefect markdown artifact or a string
    cell of a table artifact: the Prefect 3.8.8 UI renders both through its markdown renderer, which turns
    ``<b>``/``<img src=x>`` into elements (attributes such as ``onerror`` sanitised away), ``x*y*`` into
    emphasis and ``[a](url)`` into a link, and decodes ``&lt;``/``&gt;``/``&amp;`` but not numeric entities
    (``&#x27;`` shows literally). So ``<``, ``>``, ``&`` become those three entities, the punctuation of
    markdown syntax and of autolinks (``http://x``, ``www.x``, ``a@b.c``) is backslash-escaped, and whitespace
    runs become one space (as HTML shows them anyway; a newline or leading spaces would start a new block).
    ``tests/test_ui_artifacts.py`` checks what the UI shows in a browser.
    """
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(str(value).split()))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary_markdown(title: str, metrics: Mapping[str, Any], lines: Sequence[str],
                     images: Sequence[tuple[str, str | os.PathLike]], max_size: int = 240) -> str:
    """Markdown with the headline numbers, a few lines and thumbnails embedded as data URIs."""
    md_lines = [f"# {markdown_text(title)}", "", "| metric | value |", "|---|---|"]
    md_lines += [f"| {markdown_text(k)} | {v:.4f} |" if isinstance(v, float)
                 else f"| {markdown_text(k)} | {markdown_text(v)} |" for k, v in metrics.items()]
    md_lines += ["", *lines, ""]
    for caption, path in images:
        if Path(path).is_file():
            text = markdown_text(caption)
            md_lines += [f"**{text}**", "", f"![{text}]({thumbnail_uri(path, max_size)})", ""]
    return "\n".join(md_lines)


def run_summary(run_dir: str | os.PathLike, data_dir: str, config, index: Mapping[str, Any],
                train: Mapping[str, Any], explained: Mapping[str, Any], comparison: Mapping[str, Any],
                new: Mapping[str, float], old: Mapping[str, float] | None) -> tuple[str, list[list[str]]]:
    """The lines and pictures of the run-summary artifact."""
    run = RunLayout(run_dir)
    metric = config.promote_metric
    lines = [f"- data: {markdown_text(data_dir)}, {index['num_ok']} usable images ({index['num_bad']} unusable), "
             f"{len(index['classes'])} classes",
             (f"- model: {markdown_text(config.train.arch)} at {config.train.size[0]}x{config.train.size[1]} px, "
              f"{train['epochs']} epochs" if config.model is None
              else f"- model: {markdown_text(config.model['spec'])}")
             + f", digest `{train['model_digest'][:12]}`",
             "- explained: " + ", ".join(f"{m} {n} rows" for m, n in explained.get("rows", {}).items()),
             f"- current model: {DECISION_WORDS[comparison['decision']]} "
             f"({metric} new {new[metric]:.4f}" + ("" if old is None else f", current {old[metric]:.4f}") + ")"]
    if config.model is not None:
        lines.pop()
    if comparison.get("note"):
        lines.append(f"- {markdown_text(comparison['note'])}")
    lines += [f"- {markdown_text(line)}" for line in check_lines(run_dir)]
    images = [["training curves", str(run.curves)], ["confusion matrix", str(run.eval_dir / "confusion.png")]]
    images += [[f"{p.parent.name} {p.stem}", str(p)]
               for p in explanation_pngs(run.explain_dir, ["side_by_side", *config.methods], per_method=1)]
    return "\n".join(lines), images


def check_lines(run_dir: str | os.PathLike) -> list[str]:
    """The run's checks in words: the randomisation test's verdict per method and the shortcut alert."""
    from fruitlens.batch.sanity import read_verdicts, verdict_words
    from fruitlens.explain.shortcut import shortcut_line

    run = RunLayout(run_dir)
    lines = []
    if verdicts := read_verdicts(run.sanity.root):
        lines.append(f"sanity check (randomisation test): {verdict_words(verdicts)}")
    if run.shortcut.is_file() and (line := shortcut_line(tables.read_table(run.shortcut))):
        lines.append(line)
    return lines


def library_versions(extra: Sequence[str] = ("prefect", "prefect-dask", "scikit-image", "lime")) -> dict[str, str]:
    from fruitlens.card import library_versions as model_versions

    versions = model_versions()
    for name in extra:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def write_run_json(run_dir: str | os.PathLike, *, config: Mapping[str, Any], timings: Mapping[str, float],
                   extra: Mapping[str, Any] | None = None) -> Path:
    """``run_dir/run.json``: the resolved config, library versions, seconds per step and ``extra``."""
    return tables.write_json(RunLayout(run_dir).run_record, {
        "config": dict(config), "versions": library_versions(),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "total_seconds": round(float(sum(timings.values())), 3), **dict(extra or {})})
