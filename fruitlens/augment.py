"""The training augmentation's options (a value object; the Keras layers that apply it: ``fruitlens.inputs``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """The tutorial's ImageDataGenerator options, as Keras preprocessing layers.

    ``rotation`` in degrees (ImageDataGenerator's rotation_range), ``shift`` as a fraction of width and
    height, ``shear`` as in ImageDataGenerator (shear_range=0.2 there is an angle in degrees; Keras'
    RandomShear takes a fraction of the side, and we pass the same number, as most ports do), ``zoom``
    +/- fraction, ``flip`` horizontal, ``fill_mode`` for pixels coming from outside.
    """

    rotation: float = 40.0
    shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.2
    flip: bool = True
    fill_mode: str = "nearest"

    def __post_init__(self) -> None:
        modes = ("nearest", "reflect", "wrap", "constant")
        if self.fill_mode not in modes:
            raise ValueError(f"fill_mode {self.fill_mode!r}: expected one of {', '.join(modes)}")
        for name in ("rotation", "shift", "shear", "zoom"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment {name} {getattr(self, name)}: expected >= 0")
