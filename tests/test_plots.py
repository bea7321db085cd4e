"""Pictures: explanations drawn on the photo at its own resolution and aspect, captioned, with readable metadata."""

import os
import stat

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from fruitlens import plots, tables


@pytest.fixture(params=["landscape", "portrait"])
def photo(request) -> np.ndarray:
    """chelsea (300 x 451, 4:3-ish) or the same photo turned into a portrait (451 x 300); uint8."""
    cat = data.chelsea()
    return cat if request.param == "landscape" else np.ascontiguousarray(cat.transpose(1, 0, 2))


def block_segments(size: int = 32, block: int = 8) -> np.ndarray:
    """(size, size) superpixels that are ``block`` x ``block`` squares, numbered row by row."""
    yy, xx = np.mgrid[:size, :size]
    return (yy // block) * (size // block) + xx // block


def caption(method: str = "LIME", true_label: str | None = "tabby") -> plots.Caption:
    return plots.Caption("chelsea.png", true_label, "tabby", 0.873, method, "slic 16 superpixels",
                         legend="green supports tabby, red against tabby" if method == "LIME" else None)


def test_caption_lines_name_prediction_method_and_truth():
    lines = caption().lines()
    assert 2 <= len(lines) <= 3
    assert "tabby" in lines[0] and "0.87" in lines[0] and "true tabby" in lines[0]
    assert "LIME" in lines[1] and "slic 16 superpixels" in lines[1] and "chelsea.png" in lines[1]
    unknown = caption("Grad-CAM", true_label=None).lines()
    assert len(unknown) == 2 and "true" not in unknown[0]
    wrong = plots.Caption("a.jpg", "egyptian", "tabby", 0.5, "LIME").lines()[0]
    assert "WRONG" in wrong
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="prob"):
            plots.Caption("a.jpg", None, "tabby", bad, "LIME")


def test_lime_on_photo_keeps_the_photos_resolution_and_aspect(photo, tmp_path):
    seg = block_segments()
    weights = np.zeros(16)
    weights[5], weights[10], weights[0] = 0.8, -0.6, 0.01  # 0: below the threshold
    pic = plots.lime_on_photo(photo, seg, weights, threshold=0.05)
    h0, w0 = photo.shape[:2]
    assert pic.shape == photo.shape and pic.dtype == np.uint8
    rows, cols = h0 // 4, w0 // 4  # superpixel 5 is block (1, 1), 10 is block (2, 2) of the 4 x 4 grid
    inside = (slice(rows + rows // 2 - 5, rows + rows // 2 + 5), slice(cols + cols // 2 - 5, cols + cols // 2 + 5))
    assert (pic[inside][..., 1].astype(int) > photo[inside][..., 1]).all()  # greener
    inside_red = tuple(slice(s.start + n, s.stop + n) for s, n in zip(inside, (rows, cols), strict=True))
    assert (pic[inside_red][..., 0].astype(int) >= photo[inside_red][..., 0]).all()
    assert (pic[inside_red][..., 1] < photo[inside_red][..., 1]).all()  # redder
    changed = (pic != photo).any(axis=-1)
    assert not changed[: rows - 2].any() and not changed[:, : cols - 2].any()  # the rest is untouched
    colours = [plots.to_uint8(np.asarray(rgb) * 0.8) for rgb in (plots.SUPPORT_RGB, plots.OPPOSE_RGB)]
    outline = np.any([(pic == c).all(axis=-1) & ~(photo == c).all(axis=-1) for c in colours], axis=0)
    assert 0 < outline.mean() < 0.05  # crisp outlines drawn at photo resolution, not blown-up 20 px blocks

    cap = caption()
    final = plots.add_caption(pic, cap, legend=plots.lime_legend("tabby"))
    assert final.shape[1] == w0 and final.shape[0] > h0
    np.testing.assert_array_equal(final[:h0], pic)  # the picture part is exactly the photo's H0 x W0
    assert (final[h0:] == 255).mean() > 0.7  # a white band with text under it
    path = plots.save_png(final, tmp_path / "lime.png", cap)
    text = plots.read_caption(path)
    assert "tabby" in text and "LIME" in text and "0.87" in text
    assert Image.open(path).size == (w0, final.shape[0])


def test_heat_on_photo_follows_the_heat(photo, tmp_path):
    heat = np.zeros((7, 7), np.float32)
    heat[1, 1] = 1.0  # hot near the top-left, zero elsewhere
    pic = plots.heat_on_photo(photo, heat, palette="jet")
    h0, w0 = photo.shape[:2]
    assert pic.shape == photo.shape and pic.dtype == np.uint8
    np.testing.assert_array_equal(pic[h0 // 2:, w0 // 2:], photo[h0 // 2:, w0 // 2:])  # cold: the photo itself
    hot = (round(1.5 * h0 / 7), round(1.5 * w0 / 7))
    assert np.abs(pic[hot].astype(int) - photo[hot]).sum() > 100  # the hot spot is strongly coloured

    cap = caption("Grad-CAM")
    final = plots.add_caption(pic, cap, scale="jet")
    np.testing.assert_array_equal(final[:h0], pic)
    path = plots.save_png(final, tmp_path / "cam.png", cap)
    assert "Grad-CAM" in plots.read_caption(path) and "tabby" in plots.read_caption(path)


def test_box_limits_the_drawing_and_small_photos_are_enlarged():
    photo = np.full((120, 160, 3), 0.5, np.float32)
    pic = plots.heat_on_photo(photo, np.ones((4, 4)), box=(20, 40, 100, 120), min_side=0)
    changed = (pic != 128).any(axis=-1)
    assert changed[20:100, 40:120].all() and changed.sum() == 80 * 80
    small = plots.lime_on_photo(np.zeros((100, 100, 3)), block_segments(20, 5), np.arange(16) - 8.0)
    assert small.shape == (300, 300, 3)  # enlarged to at least 224 px before drawing: crisp 1 px outlines
    with pytest.raises(ValueError, match="box"):
        plots.heat_on_photo(photo, np.ones((4, 4)), box=(0, 0, 200, 10))
    with pytest.raises(ValueError, match="weights"):
        plots.lime_on_photo(photo, block_segments(), np.ones(3))
    with pytest.raises(ValueError, match="heatmap"):
        plots.heat_on_photo(photo, np.ones((4, 4, 1)))


def test_caption_band_grows_with_the_text_instead_of_cutting_it():
    pic = np.zeros((224, 224, 3), np.uint8)
    short = plots.add_caption(pic, ["one line"])
    long = plots.add_caption(pic, ["a much longer caption line that cannot fit on one line " * 3])
    assert long.shape[0] > short.shape[0] > 224
    assert plots.add_caption(np.zeros((20, 30, 3)), ["x"]).shape[1] == 30 * 12  # small pictures enlarged first
    with pytest.raises(ValueError, match="caption"):
        plots.add_caption(pic, "a bare string")


def test_side_by_side_panels_share_one_height_and_keep_their_aspect():
    panels = [("photo", np.zeros((300, 451, 3), np.uint8)), ("Grad-CAM", np.zeros((451, 300, 3))),
              ("LIME", np.zeros((100, 100, 3)))]
    pad = 6
    out = plots.side_by_side(panels, height=240)
    widths = [round(451 * 240 / 300), round(300 * 240 / 451), 240]
    assert out.shape[1] == sum(widths) + pad * 4
    band = out.shape[0] - 240 - 2 * pad
    assert band > 10  # titles above the panels
    x = pad
    for w in widths:  # each panel: black, exactly 240 rows, under a white title band
        column = out[pad + band:pad + band + 240, x:x + w]
        assert column.shape == (240, w, 3) and (column == 0).all()
        assert (out[pad:pad + 4, x:x + w] == 255).all()
        x += w + pad
    assert plots.side_by_side([np.ones((10, 20, 3))]).shape[0] == 224 + 2 * pad  # no title, no band


def test_grids_name_their_layer_and_show_the_input():
    maps = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    image = np.zeros((24, 20, 3), np.float32)
    image[..., 0] = 1.0  # red input
    bare = plots.activation_grid(maps, channels=6, min_side=48)
    grid = plots.activation_grid(maps, channels=6, min_side=48, title="activations of layer conv2d_1",
                                 input_image=image)
    assert grid.dtype == np.uint8 and grid.shape[0] > bare.shape[0]
    red = (grid[..., 0] > 240) & (grid[..., 1] < 20) & (grid[..., 2] < 20)
    assert red.sum() >= 48 * 40  # the input is a whole tile
    filters = plots.filter_grid(np.random.default_rng(1).random((3, 8, 8, 3)), title="filters of conv2d_1")
    assert filters.dtype == np.uint8
    with pytest.raises(ValueError, match="labels"):
        plots.labelled_grid([image], ["a", "b"])


def test_gallery_titles_wrap_under_their_tiles(tmp_path):
    images = [np.full((20, 20, 3), i / 10, np.float32) for i in range(6)]
    short = plots.plot_gallery(images, ["a -> b"] * 6, tmp_path / "short.png", ncols=3, suptitle="mistakes")
    long = plots.plot_gallery(images, ["Apple Red Yellow -> Pomegranate Extra Long Name\np=0.97"] * 6,
                              tmp_path / "long.png", ncols=3, suptitle="mistakes")
    assert Image.open(long).size[1] > Image.open(short).size[1]  # rows grow with their titles
    assert Image.open(long).size[0] == Image.open(short).size[0]
    assert plots.read_caption(plots.plot_gallery([], [], tmp_path / "none.png", empty_text="no mistakes")) \
        == "no mistakes"


def test_colorbar_strips():
    vertical = plots.colorbar(200, "inferno")
    horizontal = plots.colorbar(300, "jet", orientation="horizontal")
    assert vertical.shape[0] == 200 and horizontal.shape[1] == 300
    narrow = plots.colorbar(150, "jet", ("no evidence", "strong evidence for tabby"), orientation="horizontal")
    assert narrow.shape[1] == 150 and narrow.shape[0] > horizontal.shape[0]  # labels go under the strip
    assert plots.with_colorbar(np.zeros((50, 60, 3)), "jet").shape[:2] == (50, 60 + vertical.shape[1])
    with pytest.raises(ValueError, match="palette"):
        plots.colorbar(100, "no-such-map")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        png = plots.save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png", "text")
        raw = tables.write_bytes(tmp_path / "b.bin", b"x")
        assert tables.current_umask() == umask
    finally:
        os.umask(old)
    for path in (png, raw):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_training_curves_tick_whole_epochs():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "loss": [0.7, 0.1, 0.06, 0.03, 0.02],
                            "val_loss": [0.1, 0.03, 0.01, 0.003, 0.002], "accuracy": [0.8, 0.97, 0.99, 1.0, 1.0]})
    fig = plots.history_figure(history)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = ax.get_xticks()
        assert len(ticks) > 1 and np.all(ticks == np.round(ticks)), ticks
    plots.plt.close(fig)


# ---------------------------------------------------------------- one style, readable labels, bounded figures


def _texts(fig):
    import matplotlib.text

    fig.canvas.draw()
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]


def _deep_cascade(steps: int = 53, n: int = 2):
    from fruitlens.explain.sanity import SanityResult

    rng = np.random.default_rng(0)
    layers = ("", *(f"mobilenetv2_1.00_96_from_01/block_{i}_project" for i in range(1, steps)))
    return SanityResult(layers=layers, kinds=("none", *("conv",) * (steps - 1)), targets=np.zeros(n, np.int64),
                        heatmaps={"gradcam": rng.random((steps, n, 12, 12)).astype(np.float32)},
                        rank={"gradcam": rng.uniform(-1, 1, (steps, n))},
                        ssim={"gradcam": rng.uniform(0, 1, (steps, n))})


def test_every_figure_uses_the_one_font_at_8_pt_or_more_as_the_captions_do():
    import pandas as pd
    from PIL import ImageFont

    from fruitlens.captions import FONT_FILE, font
    from fruitlens.explain.evidence import evidence_figure
    from fruitlens.explain.sanity import cascade_figure

    assert isinstance(font(12), ImageFont.FreeTypeFont) and font(12).path == str(FONT_FILE)  # the captions' font
    classes = ["apple", "kiwi"]
    table = pd.DataFrame({"label": ["apple", "apple", "kiwi"], "group": ["correct", "mistake", "correct"],
                          "images": [3, 1, 2], "evidence_share": [0.5, np.nan, 0.2]})
    rng = np.random.default_rng(1)
    means = {(c, g): rng.random((8, 8)) for c, g in zip(table["label"], table["group"], strict=True)}
    history = plots.history_figure(pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5], "accuracy": [0.5, 0.8],
                                                 "val_loss": [1.1, 0.7], "val_accuracy": [0.4, 0.7]}))
    images = np.random.default_rng(2).random((2, 12, 12, 3)).astype(np.float32)
    for fig in (evidence_figure(table, means, classes), cascade_figure(_deep_cascade(), images), history):
        texts = _texts(fig)
        assert texts and {t.get_fontname() for t in texts} == {"DejaVu Sans"}
        smallest = sorted((t.get_size(), t.get_text()) for t in texts)[:3]
        assert smallest[0][0] >= plots.MIN_FONT_PT, smallest
        plots.plt.close(fig)


def test_the_cascade_figure_of_a_deep_model_is_bounded_with_no_blank_band_under_its_title(tmp_path):
    from PIL import Image

    from fruitlens.explain.sanity import cascade_figure

    images = np.random.default_rng(2).random((2, 12, 12, 3)).astype(np.float32)
    fig = cascade_figure(_deep_cascade(53), images)
    titles = [t.get_text() for t in _texts(fig)]
    assert not any("mobilenetv2_1.00" in t for t in titles)  # the layer's own name, not the generated path
    assert any("block_52_project" in t for t in titles) and any("10 of the 53 steps" in t for t in titles)
    path = plots.save_figure(fig, tmp_path / "sanity.png")
    arr = np.asarray(Image.open(path).convert("L"))
    assert arr.shape[1] <= 1700 and arr.shape[0] <= 1200, arr.shape  # 16 in at 100 dpi, plus the tight box
    ink = np.flatnonzero((arr < 200).any(axis=1))
    gaps = np.diff(ink)
    title_end = ink[np.argmax(gaps > 1)]  # the first blank run after the title's lines
    assert title_end < 80 and gaps.max() < 60, (title_end, gaps.max())  # no band of ~80 px anywhere
