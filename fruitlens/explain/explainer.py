"""The one shape of every explainer: ``from_options(model, options)`` and ``explain(images, targets=None)``.

``from_options`` is the only place an options dataclass (``fruitlens.method_options``,
``fruitlens.lime_options``) becomes an explainer: batch runs, the sanity check, the stability check and the
tests all build explainers through it (``fruitlens.registry.MethodSpec.build``), so that what a report says
about a method is what wrote its table.
"""

from __future__ import annotations

import abc
from typing import Any


class Explainer(abc.ABC):
    """An explanation method bound to a model.

    ``explain`` takes (N, H, W, 3) float images in [0, 1] (never modified) and ``targets`` ((N,) class ids,
    one int for all, or None for each image's predicted class) and returns a frozen result with at least
    ``heatmaps`` (N, H, W) float32 in [0, 1] and ``targets`` (N,) int class ids.
    """

    method: str = "base"

    @classmethod
    @abc.abstractmethod
    def from_options(cls, model, options) -> Explainer:
        """The explainer of ``model`` configured by ``options`` (the method's options dataclass)."""

    @abc.abstractmethod
    def explain(self, images, targets=None) -> Any:
        """Explain ``images`` for ``targets``; a result with ``heatmaps`` and ``targets``."""
