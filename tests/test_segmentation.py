"""Superpixel segmenters: shapes, contiguous ids, seeding, strict configuration, the superpixels command."""

import dataclasses

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from fruitlens.cli import main
from fruitlens.explain.segmentation import DEFAULTS, METHODS, Segmenter, make_segmenter, relabel, segment_images


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two real photos, non-square (36 x 52), float32 in [0, 1]."""
    return np.stack([resize(data.astronaut(), (36, 52)), resize(data.coffee(), (36, 52))]).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2])
def test_shapes_and_contiguous_ids(photos, method, n):
    images = photos[:n].copy()
    seg = segment_images(images, method, seed=3)
    assert seg.shape == (n, 36, 52) and seg.dtype == np.int32
    for s in seg:
        assert np.array_equal(np.unique(s), np.arange(s.max() + 1))  # ids 0..S-1, none missing
    assert np.array_equal(images, photos[:n])  # input untouched
    one = make_segmenter(method).segment(photos[0], seed=3)
    assert one.shape == (36, 52) and np.array_equal(one, seg[0])


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_output(photos, method):
    a = segment_images(photos, method, seed=[1, 2])
    b = segment_images(photos, method, seed=[1, 2])
    assert np.array_equal(a, b)


def test_slic_parameters_change_the_result(photos):
    few = segment_images(photos[:1], "slic", n_superpixels=8)[0]
    many = segment_images(photos[:1], "slic", n_superpixels=60)[0]
    assert few.max() + 1 < many.max() + 1
    assert make_segmenter("slic", compactness=1).segment(photos[0]).tolist() != many.tolist()


def test_config_is_frozen_resolved_and_named():
    cfg = make_segmenter("slic", n_superpixels=35, compactness=10)
    assert cfg.options == {**DEFAULTS["slic"], "n_superpixels": 35, "compactness": 10.0}
    assert cfg == Segmenter("slic", (("compactness", 10), ("n_superpixels", 35)))
    assert hash(cfg) == hash(make_segmenter("slic", compactness=10.0, n_superpixels=35))
    assert cfg.name.startswith("slic(") and "n_superpixels=35" in cfg.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method = "quickshift"
    assert make_segmenter("quickshift").options == {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, "sigma": 0}
    assert make_segmenter(cfg, compactness=5).options["n_superpixels"] == 35


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("slick", {}, "unknown segmentation method 'slick'; expected one of quickshift, slic, felzenszwalb"),
        ("slic", {"n_segments": 5}, "unknown slic parameter(s) n_segments; expected some of n_superpixels"),
        ("quickshift", {"n_superpixels": 5}, "unknown quickshift parameter(s) n_superpixels"),
        ("slic", {"n_superpixels": 2.5}, "n_superpixels=2.5: expected an integer"),
        ("felzenszwalb", {"scale": -1}, "scale=-1.0: expected a positive number"),
        ("slic", {"compactness": "big"}, "compactness='big': expected a float"),
    ],
)
def test_bad_configuration_is_named(method, params, message):
    with pytest.raises(ValueError) as exc:
        make_segmenter(method, **params)
    assert message in str(exc.value)


def test_bad_input_shapes(photos):
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 3\)"):
        segment_images(photos[..., 0])
    with pytest.raises(ValueError, match="3 seeds for 2 images"):
        segment_images(photos, seed=[1, 2, 3])


def test_relabel_makes_ids_contiguous():
    seg = np.array([[5, 5, 9], [2, 9, 9]])
    assert relabel(seg).tolist() == [[1, 1, 2], [0, 2, 2]]


def test_superpixels_command(demo_dir, tmp_path, capsys):
    image = demo_dir / "Test" / "red_dot" / "0000.jpg"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "sp"
    assert main(["superpixels", str(image), str(bad), "--out", str(out), "--segmenter", "slic",
                 "--n-superpixels", "20", "--compactness", "10", "--image-size", "40x30"]) == 0
    captured = capsys.readouterr()
    assert "superpixels at 100x100 ->" in captured.out and "1 unreadable" in captured.out and "bad.jpg" in captured.err
    from PIL import Image

    with Image.open(out / "0000_superpixels.png") as png:  # the photo at its working size (what LIME segments),
        assert png.size == (100 * 2, 100 * 2)  # upscaled to at least 200 px on the short side
    assert main(["superpixels", str(image), "--out", str(out), "--segmenter", "quickshift",
                 "--n-superpixels", "5"]) == 2
    assert "unknown quickshift parameter(s) n_superpixels" in capsys.readouterr().err
    assert main(["superpixels", str(bad), "--out", str(out)]) == 2
