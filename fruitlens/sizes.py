"""Sizes: an image size as (height, width), and the limits fruitlens keeps to (value helpers, no Keras)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fruitlens.errors import OptionError

# Side of the largest input fruitlens builds a model for: a 1024 x 1024 float32 batch of 32 is already 400 MB,
# and a typo (100000) would otherwise ask for terabytes before anything could say so.
MAX_IMAGE_SIDE = 1024
DEFAULT_MEMORY_LIMIT = 2 << 30  # bytes of decoded uint8 pixels kept in memory before spilling to disk


def as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``20`` or ``(20, 24)`` -> ``(height, width)``; ValueError on anything else."""
    if isinstance(image_size, int | np.integer):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise OptionError("image_size", image_size, "a positive int or (height, width)")
    return size
