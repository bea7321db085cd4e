"""The randomisation test's default methods and its titles, without TensorFlow.

The nightly picks the methods to check and says their verdicts in words (run summary, trend, alerts) on every run,
cached or not; ``fruitlens.explain.sanity``, which runs the test, imports Keras. The names live here, below both;
the methods' own titles are the registry's (``fruitlens.registry.title``).
"""

from __future__ import annotations

DEFAULT_METHODS = ("gradcam", "gradcam++", "lime")  # any of fruitlens.registry.method_names() can be checked
EXTRA_TITLES = {"edges": "edge detector"}  # the built-in baseline; the methods' titles: fruitlens.registry.title


def method_title(name: str) -> str:
    """What the figure, the command and the report call a checked method."""
    from fruitlens.registry import title

    return EXTRA_TITLES.get(name) or title(name)
