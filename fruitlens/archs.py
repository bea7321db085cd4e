"""The names of the architectures and backbones fruitlens builds, checked without Keras (a value module; the
builders: ``fruitlens.models``, where a test keeps ``ARCHS`` equal to ``ARCH_NAMES``; the backbones are the
Keras applications of ``fruitlens.keras_apps``)."""

from __future__ import annotations

from typing import Literal, get_args

from fruitlens.errors import short
from fruitlens.keras_apps import APP_NAMES

TrainMode = Literal["bottleneck", "frozen", "finetune"]
TRAIN_MODES: tuple[str, ...] = get_args(TrainMode)  # how a transfer model's backbones train
# Architecture names (the builders live in fruitlens.models, which needs Keras; a test keeps these equal)
ARCH_NAMES = ("seed_cnn", "fruit_net", "small_convnet", "lenet", "photo_resnet")
OPTIMIZERS = ("default", "tutorial", "adam", "adamw", "rmsprop", "sgd")  # tutorial: the architecture's tutorial's
SCHEDULES = ("default", "tutorial", "constant", "cosine", "warmup_cosine")
AUGMENT_POLICIES = ("classic", "photo")
BACKBONE_NAMES = APP_NAMES  # every Keras application of the one table is a backbone


def parse_arch(arch: str) -> tuple[str, tuple[str, ...]]:
    """``"seed_cnn"`` -> ("seed_cnn", ()); ``"transfer:vgg16,resnet50"`` -> ("transfer", ("vgg16", "resnet50")).

    Raises:
        ValueError: unknown architecture or backbone (naming the valid ones).
    """
    if arch.startswith("transfer:"):
        names = tuple(n.strip() for n in arch.split(":", 1)[1].replace("+", ",").split(",") if n.strip())
        bad = [n for n in names if n not in BACKBONE_NAMES]
        if bad or not names:
            raise ValueError(f"backbone {', '.join(bad) or '(none)'} in {short(arch)}: expected one or more of "
                             f"{', '.join(BACKBONE_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{short(arch)}: a backbone is named twice")
        return "transfer", names
    if arch not in ARCH_NAMES:
        raise ValueError(f"architecture {short(arch)}: expected one of {', '.join(ARCH_NAMES)} or "
                         f"transfer:<{'|'.join(BACKBONE_NAMES)}>[,<backbone>...]")
    return arch, ()
