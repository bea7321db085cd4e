"""The superpixel methods' parameters, checked without running them (LIME's options check them here; the
methods themselves: ``fruitlens.explain.segmentation``)."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from fruitlens.errors import short

SegmenterName = Literal["quickshift", "slic", "felzenszwalb"]
SEGMENTERS: tuple[str, ...] = get_args(SegmenterName)  # the superpixel methods LIME can use

#: every parameter each method takes, with its default
DEFAULTS: dict[str, dict[str, Any]] = {
    # lime's LimeImageExplainer defaults (kernel_size 4, max_dist 200, ratio 0.2)
    "quickshift": {"kernel_size": 4.0, "max_dist": 200.0, "ratio": 0.2, "sigma": 0.0},
    # the R lime package: n_superpixels (default 50) and weight (its compactness, default 20)
    "slic": {"n_superpixels": 50, "compactness": 20.0, "sigma": 0.0, "max_num_iter": 10},
    # scale 100 / sigma 0.5 / min_size 50: skimage's gallery settings, sensible at 100x100
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}
# Upper limits (LIME's masks are samples x superpixels; the segmenters' time grows with these)
PARAM_LIMITS = {"n_superpixels": 10_000, "max_num_iter": 1_000, "kernel_size": 100.0}


def resolve_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of ``method``, the given ones checked and the others at their defaults.

    Raises:
        ValueError: an unknown method or parameter (naming the valid ones), a bad value or one over its limit
            (``PARAM_LIMITS``).
    """
    if method not in DEFAULTS:
        raise ValueError(f"unknown segmentation method {short(method)}; expected one of {', '.join(SEGMENTERS)}")
    given = dict(params)
    valid = DEFAULTS[method]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown {method} parameter(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(valid)}")
    resolved = {}
    for name, default in valid.items():
        value = given.get(name, default)
        if isinstance(default, int) and not isinstance(value, (int, np.integer)):
            if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
                raise ValueError(f"{method} parameter {name}={short(value)}: expected an integer")
        try:
            value = type(default)(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{method} parameter {name}={short(value)}: expected a "
                             f"{type(default).__name__}") from exc
        if value < 0 or (name in ("n_superpixels", "max_num_iter", "kernel_size", "scale") and value <= 0):
            raise ValueError(f"{method} parameter {name}={short(value)}: expected a positive number")
        if name in PARAM_LIMITS and value > PARAM_LIMITS[name]:
            raise ValueError(f"{method} parameter {name}={short(value)}: expected at most {PARAM_LIMITS[name]}")
        resolved[name] = value
    return resolved
