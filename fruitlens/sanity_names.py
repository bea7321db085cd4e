"""The randomisation test's method names and titles, without TensorFlow.

The nightly picks the methods to check and says their verdicts in words (run summary, trend, alerts) on every run,
cached or not; ``fruitlens.explain.sanity``, which runs the test, imports Keras. The names live here, below both.
"""

from __future__ import annotations

CAM_METHODS = ("gradcam", "gradcam++")
METHODS = (*CAM_METHODS, "lime")
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "lime": "LIME", "edges": "edge detector"}
