import numpy as np
from PIL import Image

from fruitlens.synthetic import CLASSES, make_sample, read_mask, write_demo_dataset


def test_same_seed_same_bytes(tmp_path):
    a = write_demo_dataset(tmp_path / "a", n_train=2, n_test=1, seed=3)
    b = write_demo_dataset(tmp_path / "b", n_train=2, n_test=1, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == len(CLASSES) * 3 * 2  # image + mask
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_layout_and_masks(demo_dir):
    for split, n in (("Training", 12), ("Test", 4)):
        for label in CLASSES:
            jpgs = sorted((demo_dir / split / label).glob("*.jpg"))
            assert len(jpgs) == n
            img = Image.open(jpgs[0])
            assert img.size == (100, 100) and img.format == "JPEG"
            mask = read_mask(jpgs[0].with_name(jpgs[0].stem + ".mask.png"))
            assert mask.shape == (100, 100) and 20 < mask.sum() < 600


def test_sticker_is_the_only_class_evidence():
    """The sticker colour sits inside the mask; outside the mask no pixel is close to it."""
    for label in CLASSES:
        for i in range(5):
            s = make_sample(label, np.random.default_rng(i))
            corners = s.image[[0, 0, -1, -1], [0, -1, 0, -1]]
            assert (corners > 240).all(), "white background"
            inside = s.image[s.mask].astype(float).mean(0)
            # classes differ in the sticker: its mean colour is far from the fruit around it
            ring = s.image[~s.mask & (s.image.min(-1) < 240)].astype(float).mean(0)
            assert np.abs(inside - ring).max() > 40


def test_backgrounds_vary_between_images():
    a = make_sample("red_dot", np.random.default_rng(0)).image
    b = make_sample("red_dot", np.random.default_rng(1)).image
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
