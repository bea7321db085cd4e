"""Activation grids in one forward pass, and `fruitlens visualize` / visualize_run."""

import keras
import numpy as np
from PIL import Image

from fruitlens.explain.activations import layer_activations, save_activation_grids, visualize_run
from fruitlens.plots import activation_grid
from tests.helpers import tiny_run


def nested_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 10, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="b1")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(3, 3, padding="same", name="b2")(x)
    backbone = keras.Model(inp, x, name="bb")
    return keras.Sequential([keras.Input((12, 10, 3)), backbone, keras.layers.Conv2D(2, 1, name="top"),
                             keras.layers.Flatten(), keras.layers.Dense(2)]), backbone


def test_every_conv_layer_in_one_pass_matches_the_layers():
    model, backbone = nested_model()
    images = np.random.default_rng(0).random((2, 12, 10, 3)).astype(np.float32)
    acts = layer_activations(model, images)
    assert list(acts) == ["bb/b1", "bb/b2", "top"]
    assert acts["bb/b1"].shape == (2, 12, 10, 5) and acts["top"].shape == (2, 6, 5, 2)
    np.testing.assert_allclose(acts["bb/b2"], np.asarray(backbone(images)), atol=1e-6)
    np.testing.assert_allclose(acts["top"], np.asarray(model.layers[1](backbone(images))), atol=1e-6)
    assert list(layer_activations(model, images, ["b2"])) == ["bb/b2"]


def test_grid_layout_eight_per_row():
    maps = np.random.default_rng(1).random((6, 5, 40)).astype(np.float32)
    grid = activation_grid(maps, channels=40, ncols=8, min_side=1)
    assert grid.shape == (5 * (6 + 2) + 2, 8 * (5 + 2) + 2, 3)  # 5 rows of 8 tiles, 2 px padding
    assert activation_grid(maps, channels=12, ncols=8, min_side=1).shape[0] == 2 * (6 + 2) + 2
    flat = activation_grid(np.zeros((6, 5, 3)), min_side=1)  # constant channels: no NaN
    assert np.isfinite(flat).all()


def test_save_activation_grids_one_png_per_layer(tmp_path):
    model, _ = nested_model()
    paths = save_activation_grids(model, np.full((12, 10, 3), 0.5, np.float32), tmp_path, channels=4)
    assert [p.name for p in paths] == ["bb__b1.png", "bb__b2.png", "top.png"]
    assert all(Image.open(p).size[0] > 0 for p in paths)


def test_visualize_run_and_cli(tmp_path, demo_dir, capsys):
    from fruitlens.cli import main

    run = tiny_run(tmp_path / "run", image_size=(20, 20))
    image = demo_dir / "Test" / "red_dot" / "0000.jpg"
    paths = visualize_run(run, image, tmp_path / "vis", channels=4, filters=3, steps=3)
    from fruitlens.runs import load_run

    convs = [lay.name for lay in load_run(run)[0].layers if isinstance(lay, keras.layers.Conv2D)]
    names = [str(p.relative_to(tmp_path / "vis")) for p in paths]
    assert names == [f"activations/{c}.png" for c in convs] + [f"filters/{c}.png" for c in convs]
    assert main(["visualize", "--model", str(run), "--image", str(image), "--out", str(tmp_path / "cli"),
                 "--filters", "2", "--steps", "2"]) == 0
    assert "2 conv layers" in capsys.readouterr().out
    assert (tmp_path / "cli" / "filters" / f"{convs[-1]}.png").is_file()
    assert main(["visualize", "--model", str(run), "--image", str(tmp_path / "none.jpg"), "--out", "x"]) == 2
    assert "--image" in capsys.readouterr().err


def test_a_big_model_gets_eight_layers_spread_first_to_last_unless_all(tmp_path, caplog):
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = inp
    for i in range(11):  # 11 conv layers: more than visualize draws by default
        x = keras.layers.Conv2D(2, 3, padding="same", name=f"c{i}")(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    model.save(tmp_path / "deep.keras")
    image = tmp_path / "im.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(image)
    with caplog.at_level("INFO"):
        paths = visualize_run(tmp_path / "deep.keras", image, tmp_path / "v", channels=2, filters=1, steps=0)
    drawn = [p.stem for p in paths if p.parent.name == "activations"]
    assert len(drawn) == 8 and drawn[0] == "c0" and drawn[-1] == "c10"
    assert "11 conv layers; drawing 8" in caplog.text
    every = visualize_run(tmp_path / "deep.keras", image, tmp_path / "all", channels=2, filters=1, steps=0,
                          layers="all")
    assert [p.stem for p in every if p.parent.name == "activations"] == [f"c{i}" for i in range(11)]
