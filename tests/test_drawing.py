"""The fast paths of drawing batch pictures give what the libraries they replace give."""

import io
import zlib

import matplotlib
import numpy as np
import pytest
from PIL import Image
from skimage.morphology import dilation
from skimage.segmentation import find_boundaries

from fruitlens import plots, pngs
from fruitlens.captions import colorbar, legend_band
from fruitlens.overlays import _thicken, colorize, inner_edges


@pytest.mark.parametrize("seed", range(5))
def test_inner_edges_are_skimages_inner_boundaries(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, (rng.integers(2, 25), rng.integers(2, 25))).repeat(3, 0).repeat(2, 1)
    assert (inner_edges(labels) == find_boundaries(labels, mode="inner")).all()


@pytest.mark.parametrize("width", [2, 3, 4])
def test_thickened_edges_are_skimages_square_dilation(width):
    mask = np.random.default_rng(width).random((31, 17)) < 0.1
    assert (_thicken(mask, width) == dilation(mask, np.ones((width, width), bool))).all()


@pytest.mark.parametrize("palette", ["jet", "viridis", "magma"])
def test_colorize_is_the_colormaps_own_colours(palette):
    values = np.concatenate([np.linspace(0, 1, 1001), np.arange(257) / 256, [-0.5, 1.5]]).astype(np.float32)
    expected = matplotlib.colormaps[palette](np.clip(values, 0, 1))[..., :3].astype(np.float32)
    assert np.array_equal(colorize(values.reshape(1, -1), palette)[0], expected)


def test_every_superpixel_gets_a_boundary_on_a_uint8_photo():
    photo = np.full((6, 8, 3), 100, np.uint8)
    segments = np.zeros((6, 8), np.int64)
    segments[:, 4:] = 1  # superpixel 0 is a superpixel like any other
    drawn = plots.lime_boundaries(photo, segments)
    assert drawn.dtype == np.uint8 and (drawn[:, 3] == [255, 255, 0]).all() and (drawn[:, 4] == [255, 255, 0]).all()
    assert (drawn[:, :3] == 100).all() and (photo == 100).all()  # the rest untouched, the input too
    as_float = plots.lime_boundaries(photo / 255.0, segments)
    assert as_float.dtype == np.float32 and np.allclose(as_float * 255, drawn)
    with pytest.raises(ValueError, match="expected the image's"):
        plots.lime_boundaries(photo, segments[:, :4])


def test_legends_and_scales_are_drawn_once_and_shared_read_only():
    legend = [((0.0, 0.8, 0.0), "supports apple"), ((0.9, 0.0, 0.0), "against apple")]
    first, again = legend_band(legend, 300), legend_band(list(legend), 300)
    assert first is again and not first.flags.writeable
    bar = colorbar(300, "jet", ("low", "high"), orientation="horizontal")
    assert bar is colorbar(300, "jet", ["low", "high"], orientation="horizontal") and not bar.flags.writeable
    assert colorbar(300, "magma", ("low", "high"), orientation="horizontal") is not bar


def test_the_zlib_fallback_writes_the_same_picture(monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8).repeat(2, 0)
    fast = pngs.encode_png(image, {"Description": "x"})
    monkeypatch.setattr(pngs, "_deflate", zlib.compress)
    plain = pngs.encode_png(image, {"Description": "x"})
    for data in (fast, plain):
        with Image.open(io.BytesIO(data)) as img:
            assert np.array_equal(np.asarray(img), image) and img.text == {"Description": "x"}
    with pytest.raises(ValueError, match="level 6: expected a deflate level 0-3"):
        pngs.encode_png(image, level=6)
