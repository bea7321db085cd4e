"""Small things several test modules need: a tiny saved run folder."""

from __future__ import annotations

from pathlib import Path

from fruitlens.runs import ModelCard, write_card


def tiny_run(run_dir: Path, classes=("a", "b", "c"), image_size=(12, 10), seed=0) -> Path:
    """Save an untrained 2-conv model and its card in ``run_dir`` (fast; for plumbing tests)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((*image_size, 3)),
        keras.layers.Rescaling(2.0, offset=-1.0),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(classes), activation="softmax"),
    ])
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    write_card(run_dir, ModelCard(classes=classes, image_size=image_size, arch="tiny"))
    return run_dir
