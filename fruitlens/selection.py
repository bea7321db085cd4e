"""Which images to explain when the budget is limited (temporary shim over the report's choice)."""

from __future__ import annotations

import pandas as pd


def images_to_explain(predictions: pd.DataFrame, *, limit: int | None = None, **kwargs) -> list[str]:
    """Image ids in priority order: those the report shows first."""
    from fruitlens.report import images_to_explain as report_choice

    ids = report_choice(predictions, **kwargs)
    return ids if limit is None else ids[:limit]
