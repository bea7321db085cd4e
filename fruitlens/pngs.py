"""PNG encoding for the pictures of batch runs: faster than Pillow's (benchmarks/README.md), the same files.

Pillow picks a filter per row (all five tried on every row) before zlib sees the data, which takes half of
its encoding time on fruitlens' pictures. Here every row gets the ``Up`` filter (one vectorised subtraction),
the filter that suits them: photos enlarged by an integer factor repeat each row, caption bands are rows of
white. The deflate stream comes from ISA-L (``isal``) where it is installed, else from zlib: faster at the
same level and no larger on our pictures (the figures: benchmarks/README.md, "Figures once kept in the code").
Text chunks are ``tEXt`` when Latin-1 can hold them, else ``iTXt`` (UTF-8), as Pillow writes them, so
``PIL.Image.open(path).text`` reads them back.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

import numpy as np

try:  # ISA-L: the same deflate streams, faster than zlib (benchmarks/README.md, "Figures once kept in the code")
    from isal.isal_zlib import compress as _deflate
except ImportError:  # no wheel for this platform
    from zlib import compress as _deflate

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA
UP = 2  # PNG filter type: each byte minus the byte above it


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _text_chunk(key: str, value: str) -> bytes:
    try:
        return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # keyword, compression flag and method, language tag, translated keyword, text
        return _chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))


def encode_png(image: np.ndarray, text: Mapping[str, str] | None = None, level: int = 1) -> bytes:
    """An (H, W) or (H, W, C) uint8 image (C: 1, 3 or 4) as PNG bytes with ``text`` chunks.

    ``level``: deflate effort, 0 (stored) to 3 (ISA-L's range; zlib reads it on its own 0-9 scale).
    """
    if level not in (0, 1, 2, 3):
        raise ValueError(f"level {level!r}: expected a deflate level 0-3")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in COLOUR_TYPE):
        raise ValueError(f"image of dtype {arr.dtype} and shape {arr.shape}: expected uint8 (H, W) or (H, W, 1|3|4)")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {arr.shape}: expected at least one pixel")
    rows = arr.reshape(h, w * c)
    raw = np.empty((h, 1 + w * c), np.uint8)
    raw[:, 0] = UP
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])  # wraps modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", w, h, 8, COLOUR_TYPE[c], 0, 0, 0)
    texts = b"".join(_text_chunk(k, v) for k, v in (text or {}).items())
    return (SIGNATURE + _chunk(b"IHDR", header) + texts + _chunk(b"IDAT", _deflate(raw.tobytes(), level))
            + _chunk(b"IEND", b""))
