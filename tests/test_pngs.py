"""fruitlens' PNG encoder: what any reader (Pillow here) decodes is the image and text that went in."""

import io

import numpy as np
import pytest
from PIL import Image

from fruitlens.pngs import encode_png


@pytest.mark.parametrize("shape, mode", [((7, 5), "L"), ((6, 9, 3), "RGB"), ((4, 3, 4), "RGBA"), ((1, 1, 3), "RGB")])
def test_pillow_reads_back_the_same_pixels(shape, mode):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)  # differences wrap modulo 256
    with Image.open(io.BytesIO(encode_png(image))) as img:
        assert img.mode == mode
        np.testing.assert_array_equal(np.asarray(img), image)


def test_text_chunks_latin1_and_unicode_are_read_back():
    text = {"Description": "Apple Red 1 (p=0.97)\nLIME", "panel": "Grad-CAM · layer conv2", "file": "ゆず.jpg"}
    with Image.open(io.BytesIO(encode_png(np.zeros((2, 2, 3), np.uint8), text))) as img:
        img.load()
        assert img.text == text


def test_a_picture_with_repeated_rows_is_about_pillows_size():
    photo = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8).repeat(3, 0).repeat(3, 1)
    ours = len(encode_png(photo))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG", compress_level=1)
    assert ours < 1.15 * len(buf.getvalue())


@pytest.mark.parametrize("bad", [np.zeros((3, 3), np.float32), np.zeros((3, 3, 2), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8)])
def test_what_is_not_an_image_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="expected"):
        encode_png(bad)
