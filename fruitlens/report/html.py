"""HTML building blocks of the report: escaping, number formatting, tables, figures, the inline assets.

Numbers are formatted for people: integers (and whole floats above 1) without decimals and with thousands
separators, other floats with 3 decimals (probabilities, F1, AUCs), shares as percentages with 1 decimal.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

DIGITS = 3  # decimals of probabilities and scores
PCT_DIGITS = 1  # decimals of percentages


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _is_whole(v: float) -> bool:
    return math.isfinite(v) and v == int(v)


def fmt(value: Any, digits: int = DIGITS, *, whole: bool | None = None) -> str:
    """A short human form of a value: ``300`` not ``300.0000``, ``0.953``, ``yes``; NaN and None as "".

    Args:
        whole: format floats as integers (True), with ``digits`` decimals (False), or decide per value
            (None: whole floats above 1 lose their decimals, so 1.0 stays ``1.000`` next to ``0.500``).
    """
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return ""
        if whole or (whole is None and _is_whole(v) and abs(v) > 1):
            return f"{round(v):,}"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(fmt(v, digits) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def pct(value: float, digits: int = PCT_DIGITS) -> str:
    """A share in [0, 1] as a percentage: ``0.9533`` -> ``95.3%``."""
    return f"{100 * float(value):.{digits}f}%"


def prob(value: Any) -> str:
    """A probability with 3 decimals (``0.953``); "" when missing."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    return f"{float(value):.{DIGITS}f}"


def _sort_value(value: Any) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)) and not (
            isinstance(value, float) and math.isnan(value)):
        return repr(float(value))
    return None


def cell(value: Any, digits: int = DIGITS, tag: str = "td", align: bool = True, whole: bool | None = None) -> str:
    """One table cell; numbers carry their value in ``data-v`` for sorting and are right-aligned."""
    text = fmt(value, digits, whole=whole)
    sv = _sort_value(value)
    attr = f' data-v="{sv}"' if sv is not None else ""
    cls = ' class="num"' if sv is not None and align else ""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return f"<{tag}{attr}><a href=\"{esc(value)}\">{esc(value)}</a></{tag}>"
    return f"<{tag}{attr}{cls}>{esc(text)}</{tag}>"


def _whole_columns(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, bool]:
    """Per float column: True when every value is a whole number and some exceed 1 (counts, epochs, n)."""
    out = {}
    for c in columns:
        if pd.api.types.is_float_dtype(df[c]):
            v = df[c].dropna().to_numpy(dtype=float)
            out[c] = bool(len(v)) and bool(np.all(np.isfinite(v) & (v == np.round(v)))) and bool(np.abs(v).max() > 1)
        else:
            out[c] = False
    return out


FIT_ABOVE = 6  # columns; wider tables get the class "fit"


def table(df: pd.DataFrame, *, columns: Sequence[str] | None = None, headers: dict[str, str] | None = None,
          digits: int = DIGITS, sortable: bool = True, foot: pd.DataFrame | None = None, limit: int | None = None,
          cls: str = "") -> str:
    """An HTML table of ``df`` (sortable by clicking a header); ``foot`` rows stay at the bottom.

    A float column of whole numbers (counts) is shown without decimals; others with ``digits``. A table of more
    than ``FIT_ABOVE`` columns is laid out to the page's width (class ``fit``: headers wrap, long cells break),
    so it is never cut at the right edge of its box.
    """
    columns = [c for c in (columns or list(df.columns)) if c in df.columns]
    if len(columns) > FIT_ABOVE and "fit" not in cls.split():
        cls = f"{cls} fit".strip()
    headers = headers or {}
    shown = df if limit is None else df.head(limit)
    whole = _whole_columns(df, columns)
    head = "".join(f"<th scope=\"col\">{esc(headers.get(c, c))}</th>" for c in columns)

    def row_html(row: tuple) -> str:
        return "<tr>" + "".join(cell(v, digits, whole=whole[c] or None) for c, v in zip(columns, row, strict=True)) \
            + "</tr>"

    rows = "\n".join(row_html(r) for r in shown[columns].itertuples(index=False, name=None))
    tfoot = ""
    if foot is not None and len(foot):
        tfoot = "<tfoot>" + "".join(row_html(r) for r in foot[columns].itertuples(index=False, name=None)) \
            + "</tfoot>"
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    more = ""
    if limit is not None and len(df) > limit:
        more = f"<p class=\"note\">Showing {limit} of {len(df):,} rows.</p>"
    return (f"<div class=\"table-wrap\"><table class=\"{classes}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{rows}\n</tbody>{tfoot}</table></div>{more}")


def kv(items: Iterable[tuple[str, Any]], digits: int = DIGITS) -> str:
    """A two-column key/value table ("" when there is nothing to show)."""
    rows = "".join(f"<tr><th scope=\"row\">{esc(k)}</th>{cell('—' if v is None else v, digits, align=False)}</tr>"
                   for k, v in items)
    return f"<div class=\"table-wrap\"><table class=\"kv\"><tbody>{rows}</tbody></table></div>" if rows else ""


def problems_box(problems) -> str:
    """The box that lists the files a report could not read ("" when there are none)."""
    if not problems:
        return ""
    return ("<div class=\"missing\"><b>Some files could not be read:</b><ul>"
            + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></div>")


def missing(what: str, *files: str) -> str:
    """The "not produced in this run" line, naming the absent files."""
    named = " and ".join(f"<code>{esc(f)}</code>" for f in files)
    absent = f" ({named} {'is' if len(files) == 1 else 'are'} absent)" if files else ""
    return f"<p class=\"missing\">{esc(what)}: not produced in this run{absent}.</p>"


def figure(src: str | None, caption: str = "", *, alt: str = "", cls: str = "") -> str:
    """A picture with its caption (HTML); a dashed "no image" box when ``src`` is None.

    Every picture opens full size in the page's lightbox when clicked (see ``assets/report.js``).
    """
    if not src:
        return f"<figure class=\"{cls} absent\"><div class=\"noimg\">no image</div>" \
               f"<figcaption>{caption}</figcaption></figure>"
    return (f"<figure class=\"{cls}\"><img src=\"{src}\" alt=\"{esc(alt or caption)}\" loading=\"eager\" "
            f"title=\"click to enlarge\">"
            f"<figcaption>{caption}</figcaption></figure>")


def details(summary: str, body: str, *, open_: bool = False) -> str:
    """A collapsible block; ``summary`` is HTML."""
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{body}</details>"


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> dotted keys, for config tables."""
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, obj)]


def natural_key(text: str) -> list:
    """Sort key that orders ``conv2d_2`` before ``conv2d_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped, to match it literally in ``Path.glob``."""
    return re.sub(r"([*?\[])", r"[\1]", text)


@cache
def asset(name: str) -> str:
    """The text of ``assets/<name>`` (the page's CSS and JavaScript, inlined at build time)."""
    return (resources.files("fruitlens.report") / "assets" / name).read_text(encoding="utf-8")
