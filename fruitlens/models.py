"""Architectures by name: ``seed_cnn``, ``fruit_net``, ``small_convnet``, ``lenet``, ``photo_resnet`` and
``transfer:<backbones>``.

Every model takes (N, H, W, 3) float32 RGB in [0, 1] and ends in a softmax over the classes (two classes
is the binary case: a 2-way softmax is the logistic model, and keeps the (N, C) output every explainer
expects). Models that need another input range scale inside: transfer models apply their backbone's
``preprocess_input`` as a :class:`BackbonePreprocess` layer, so a saved model is used the same way as any.

``transfer:vgg16`` (or ``transfer:vgg16,resnet50`` for concatenated features) puts Keras application
backbones (include_top=False, global average pooling) under a small dense head; ``weights`` is
``imagenet`` (Keras' cache, or a download), a local ``.weights.h5`` file saved from the same backbone
(one per backbone, comma-separated), or ``none``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)

from fruitlens.archs import TRAIN_MODES, TrainMode  # noqa: E402
from fruitlens.archs import parse_arch as parse_names  # noqa: E402
from fruitlens.errors import ModelError  # noqa: E402
from fruitlens.keras_apps import KERAS_APPS  # noqa: E402
from fruitlens.keras_cache import keras_cache_dir, network_available  # noqa: E402 - one owner of Keras' cache

# ----------------------------------------------------------------------------------- custom layers


@keras.saving.register_keras_serializable(package="fruitlens")
class BackbonePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> what a Keras application backbone expects (its ``preprocess_input`` as a layer).

    Modes: ``caffe`` (x255, RGB->BGR, minus the ImageNet means: VGG16, ResNet50), ``tf`` (to [-1, 1]:
    MobileNetV2, Xception, InceptionV3), ``raw255`` (x255; the backbone scales itself: EfficientNet).
    """

    PREPROCESSING_MODES = ("caffe", "tf", "raw255")

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.PREPROCESSING_MODES:
            raise ValueError(f"preprocessing mode {mode!r}: expected one of {', '.join(self.PREPROCESSING_MODES)}")
        self.mode = mode

    def call(self, x):
        from keras import ops

        if self.mode == "tf":
            return x * 2.0 - 1.0
        x = x * 255.0
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(np.array([103.939, 116.779, 123.68], np.float32))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# ---------------------------------------------------------------------------------- plain convnets


def _input(image_size: tuple[int, int]):
    return keras.Input((image_size[0], image_size[1], 3), name="image")


def seed_cnn(num_classes: int, image_size: tuple[int, int]) -> keras.Model:
    """The Fruits-360 tutorial's model, layer for layer: two 5x5 conv blocks (16, 32 filters) each with
    LeakyReLU(0.5), batch norm and 2x2 max-pool; dropout 0.25; dense 100 with LeakyReLU(0.5); dropout 0.5;
    softmax. Takes [0, 1] input, as the tutorial fed it (pixels / 255)."""
    L = keras.layers
    return keras.Sequential([
        _input(image_size),
        L.Conv2D(16, (5, 5), padding="same"), L.LeakyReLU(0.5), L.BatchNormalization(), L.MaxPooling2D((2, 2)),
        L.Conv2D(32, (5, 5), padding="same"), L.LeakyReLU(0.5), L.BatchNormalization(), L.MaxPooling2D((2, 2)),
        L.Dropout(0.25),
        L.Flatten(),
        L.Dense(100), L.LeakyReLU(0.5),
        L.Dropout(0.5),
        L.Dense(num_classes, activation="softmax"),
    ], name="seed_cnn")


def fruit_net(num_classes: int, image_size: tuple[int, int]) -> keras.Model:
    """The default: a compact all-conv net with batch norm (3 stages of 3x3 convs, 24/48/96 filters, max-pool
    between stages, global average pooling), trained with Adam. Small enough for CPU, strong on Fruits-360."""
    L = keras.layers
    x = inp = _input(image_size)
    x = L.Rescaling(2.0, offset=-1.0, name="scale")(x)
    for stage, filters in enumerate((24, 48, 96)):
        for j in range(2 if stage < 2 else 1):
            x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage + 1}_{j + 1}")(x)
            x = L.BatchNormalization(momentum=0.9, name=f"bn{stage + 1}_{j + 1}")(x)
            x = L.ReLU(name=f"relu{stage + 1}_{j + 1}")(x)
        if stage < 2:
            x = L.MaxPooling2D(2, name=f"pool{stage + 1}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    out = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="fruit_net")


def small_convnet(num_classes: int, image_size: tuple[int, int]) -> keras.Model:
    """The cats-vs-dogs tutorial's 3-block convnet (conv 32/32/64 3x3 ReLU + 2x2 max-pool, dense 64,
    dropout 0.5), with a softmax over the classes."""
    L = keras.layers
    return keras.Sequential([
        _input(image_size),
        L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dropout(0.5),
        L.Dense(num_classes, activation="softmax"),
    ], name="small_convnet")


def lenet(num_classes: int, image_size: tuple[int, int]) -> keras.Model:
    """LeNet as in the traffic-sign tutorial: conv 20 5x5 ReLU, max-pool, conv 50 5x5 ReLU, max-pool,
    dense 500 ReLU, softmax."""
    L = keras.layers
    return keras.Sequential([
        _input(image_size),
        L.Conv2D(20, 5, padding="same", activation="relu"), L.MaxPooling2D(2, strides=2),
        L.Conv2D(50, 5, padding="same", activation="relu"), L.MaxPooling2D(2, strides=2),
        L.Flatten(),
        L.Dense(500, activation="relu"),
        L.Dense(num_classes, activation="softmax"),
    ], name="lenet")


def photo_resnet(num_classes: int, image_size: tuple[int, int], widths: Sequence[int] = (32, 64, 128),
                 blocks: int = 2, dropout: float = 0.2) -> keras.Model:
    """The photo recipe's network: a small pre-activation-free ResNet with batch norm. A 3x3 stem (stride 2
    and a max-pool first when the side is 64 px or more), stages of ``blocks`` basic residual blocks
    (two 3x3 convs, batch norm, ReLU; the second batch norm starts at zero so each block starts as the
    identity) at ``widths`` filters, stride 2 between stages, global average pooling, dropout, softmax.
    Takes [0, 1] input and rescales to [-1, 1] inside."""
    L = keras.layers
    x = inp = _input(image_size)
    x = L.Rescaling(2.0, offset=-1.0, name="scale")(x)
    big = min(image_size) >= 64
    x = L.Conv2D(widths[0], 3, strides=2 if big else 1, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    if big:
        x = L.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, filters in enumerate(widths):
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            name = f"stage{s + 1}_block{b + 1}"
            shortcut = x
            if stride != 1 or int(x.shape[-1]) != filters:
                shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
                shortcut = L.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
            y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
            y = L.BatchNormalization(name=f"{name}_bn1")(y)
            y = L.ReLU(name=f"{name}_relu1")(y)
            y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = L.BatchNormalization(gamma_initializer="zeros", name=f"{name}_bn2")(y)
            x = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(dropout, name="dropout")(x)
    out = L.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="photo_resnet")


# ---------------------------------------------------------------------------------------- seeding


def derive_seed(seed: int, *keys: int) -> int:
    """A 31-bit seed for one random component, a stateless function of ``seed`` and ``keys``.

    Distinct keys give independent seeds (``numpy.random.SeedSequence``), so two layers never share noise.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(k) for k in keys)]).generate_state(1)
    return int(state[0]) & 0x7FFFFFFF


def _fill_seeds(config, seed: int, counter: list[int]):
    """``config`` (a Keras config tree) with every ``"seed": None`` replaced by the next derived seed."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "seed" and value is None:
                out[key] = derive_seed(seed, counter[0])
                counter[0] += 1
            else:
                out[key] = _fill_seeds(value, seed, counter)
        return out
    if isinstance(config, list | tuple):
        return type(config)(_fill_seeds(v, seed, counter) for v in config)
    return config


def unseeded_parts(model: keras.Model) -> list[str]:
    """Paths in ``model``'s config of random components (initializers, dropout, augmentation) with no seed."""
    found: list[str] = []

    def walk(config, path: str) -> None:
        if isinstance(config, dict):
            for key, value in config.items():
                if key == "seed" and value is None:
                    found.append(path)
                walk(value, f"{path}/{config.get('name', key) if key == 'config' else key}")
        elif isinstance(config, list | tuple):
            for i, value in enumerate(config):
                walk(value, f"{path}[{i}]")

    walk(model.get_config(), model.name)
    return found


def with_seeds(model: keras.Model, seed: int | None) -> keras.Model:
    """The same architecture rebuilt with every unseeded initializer and dropout given its own derived seed.

    Keras draws the seed of an unseeded initializer or dropout layer from Python's global ``random`` when
    the layer is made, so anything else drawing random numbers in the process (another thread, an earlier
    test) changes the initial weights. Rebuilding from the config with explicit seeds (derived from ``seed``
    and the component's position in the config) makes the weights a function of ``seed`` alone, whatever
    else runs. ``seed=None`` returns ``model`` unchanged. The returned model carries the seeds in its
    config, so ``keras.models.clone_model`` and a saved-and-loaded copy keep them.
    """
    if seed is None:
        return model
    config = _fill_seeds(model.get_config(), int(seed), [0])
    return type(model).from_config(config)


ARCHS: dict[str, Callable[[int, tuple[int, int]], keras.Model]] = {
    "seed_cnn": seed_cnn,
    "fruit_net": fruit_net,
    "small_convnet": small_convnet,
    "lenet": lenet,
    "photo_resnet": photo_resnet,
}


# -------------------------------------------------------------------------------------- backbones


def parse_arch(arch: str) -> tuple[str, tuple[str, ...]]:
    """``"seed_cnn"`` -> ("seed_cnn", ()); ``"transfer:vgg16,resnet50"`` -> ("transfer", ("vgg16", "resnet50")).

    The names live in ``fruitlens.archs`` (checked without importing Keras); a test keeps them equal to
    ``ARCHS``; the backbones are ``fruitlens.keras_apps.KERAS_APPS``.

    Raises:
        ModelError: unknown architecture or backbone (naming the valid ones).
    """
    try:
        return parse_names(arch)
    except ValueError as exc:
        raise ModelError(str(exc)) from exc


def check_weights(arch: str, weights: str, alpha: float = 1.0) -> None:
    """Fail fast (before any data is read) when a transfer arch's weights cannot be had.

    Raises:
        ModelError: one line naming the backbone or file.
    """
    kind, backbones = parse_arch(arch)
    if kind != "transfer":
        return
    for name, w in zip(backbones, split_weights(weights, len(backbones)), strict=True):
        if w == "imagenet":
            cached = keras_cache_dir() / KERAS_APPS[name].notop_file.format(alpha=float(alpha), rows=224)
            if not cached.is_file() and not network_available():
                raise ModelError(f"weights=imagenet for {name}: no cached weights at {cached} and no network to "
                                 "download them; pass --weights PATH (a .weights.h5 file) or none")
        elif w != "none" and not Path(w).is_file():
            raise ModelError(f"--weights {w}: no such file; expected imagenet, none or a .weights.h5 file")


def build_backbone(name: str, image_size: tuple[int, int], weights: str = "none", *, alpha: float = 1.0,
                   seed: int | None = None) -> keras.Model:
    """One Keras application without its top, on (H, W, 3) input in the backbone's own range.

    Args:
        name: a key of ``fruitlens.keras_apps.KERAS_APPS``.
        image_size: (height, width).
        weights: ``imagenet`` (Keras' cache or a download), ``none``, or a ``.weights.h5`` file saved from
            the same backbone (``backbone.save_weights(path)``).
        alpha: width multiplier (mobilenet_v2 only).
        seed: seeds the initial weights (weights ``none``) and any dropout inside (see :func:`with_seeds`);
            None: Keras' unseeded defaults.

    Raises:
        ModelError: one line when the weights are unavailable or do not fit, or the size is too small.
    """
    build = getattr(keras.applications, KERAS_APPS[name].constructor)
    kwargs = {"include_top": False, "input_shape": (image_size[0], image_size[1], 3)}
    if name == "mobilenet_v2":
        kwargs["alpha"] = alpha
    elif alpha != 1.0:
        raise ModelError(f"alpha {alpha}: only mobilenet_v2 has a width multiplier, not {name}")
    if weights == "imagenet":
        cached = KERAS_APPS[name].notop_file.format(alpha=float(alpha), rows=224)
        if not (keras_cache_dir() / cached).is_file() and not network_available():
            raise ModelError(f"weights=imagenet for {name}: no cached weights at {keras_cache_dir() / cached} "
                             "and no network to download them; pass --weights PATH (a .weights.h5 file) or none")
        try:
            return build(weights="imagenet", **kwargs)
        except ValueError as exc:
            raise ModelError(f"{name} with weights=imagenet at {image_size[0]}x{image_size[1]}: "
                             f"{str(exc).splitlines()[0]}") from exc
        except Exception as exc:  # urllib/HTTP/socket errors surface under many types from keras' get_file
            raise ModelError(f"weights=imagenet for {name}: cannot get the ImageNet weights "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             "pass --weights PATH (a .weights.h5 file) or none") from exc
    try:
        model = with_seeds(build(weights=None, **kwargs), seed)
    except ValueError as exc:
        raise ModelError(f"{name} at {image_size[0]}x{image_size[1]}: {str(exc).splitlines()[0]}") from exc
    if weights not in ("none", "", None):
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"--weights {weights}: no such file; expected imagenet, none or a .weights.h5 file")
        try:
            model.load_weights(path)
        except (ValueError, OSError, KeyError) as exc:
            raise ModelError(f"--weights {weights}: does not fit {name} "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    return model


def _freeze_before_last_block(backbone: keras.Model, name: str) -> int:
    """Make only the last block of ``backbone`` trainable; returns how many layers stay frozen."""
    marker = KERAS_APPS[name].last_block
    after = marker.startswith("after:")
    target = marker.split(":", 1)[1] if after else marker
    names = [layer.name for layer in backbone.layers]
    if target not in names:
        raise ModelError(f"{name}: layer {target!r} not found; cannot tell where its last block starts")
    start = names.index(target) + (1 if after else 0)
    backbone.trainable = True
    for layer in backbone.layers[:start]:
        layer.trainable = False
    return start


def split_weights(weights: str, n: int) -> list[str]:
    """``weights`` for ``n`` backbones: imagenet/none for all, or n comma-separated paths."""
    if weights in ("imagenet", "none", "", None):
        return [weights or "none"] * n
    parts = [w.strip() for w in str(weights).split(",")]
    if len(parts) != n:
        raise ModelError(f"--weights {weights}: expected {n} comma-separated files, one per backbone")
    return parts


def build_head(feature_dim: int, num_classes: int, units: int = 256, dropout: float = 0.5, *,
               seed: int | None = None) -> keras.Model:
    """The tutorials' dense head on pooled features: Dense(256, ReLU), Dropout(0.5), softmax."""
    L = keras.layers
    head = keras.Sequential([keras.Input((feature_dim,)), L.Dense(units, activation="relu"), L.Dropout(dropout),
                             L.Dense(num_classes, activation="softmax")], name="head")
    return with_seeds(head, seed)


def build_transfer(backbones: Sequence[str], num_classes: int, image_size: tuple[int, int], *,
                   weights: str = "imagenet", mode: TrainMode = "frozen", alpha: float = 1.0, seed: int | None = None
                   ) -> keras.Model:
    """Backbones (each with its own preprocessing, global average pooled) -> concatenated ``features`` ->
    a dense head named ``head``. ``mode``: frozen/bottleneck freeze the backbones; finetune unfreezes
    the last block of each. Backbones always run in inference mode (batch-norm statistics kept).
    ``seed`` seeds each backbone and the head with its own derived seed (None: unseeded)."""
    if mode not in TRAIN_MODES:
        raise ModelError(f"mode {mode!r}: expected one of {', '.join(TRAIN_MODES)}")
    inp = _input(image_size)
    pooled = []
    part_seed = (lambda i: None) if seed is None else (lambda i: derive_seed(seed, 1_000, i))
    for i, (name, w) in enumerate(zip(backbones, split_weights(weights, len(backbones)), strict=True)):
        bb = build_backbone(name, image_size, w, alpha=alpha, seed=part_seed(i))
        bb.name = f"backbone_{name}"
        if mode == "finetune":
            _freeze_before_last_block(bb, name)
        else:
            bb.trainable = False
        x = BackbonePreprocess(KERAS_APPS[name].backbone_preprocessing, name=f"preprocess_{name}")(inp)
        x = bb(x, training=False)
        pooled.append(keras.layers.GlobalAveragePooling2D(name=f"pool_{name}")(x))
    features = (keras.layers.Concatenate(name="features")(pooled) if len(pooled) > 1
                else keras.layers.Identity(name="features")(pooled[0]))
    head = build_head(int(features.shape[-1]), num_classes, seed=part_seed(len(backbones)))
    return keras.Model(inp, head(features), name="transfer_" + "_".join(backbones))


def features_model(model: keras.Model) -> keras.Model:
    """The part of a transfer model up to its pooled ``features`` (N, D)."""
    return keras.Model(model.inputs, model.get_layer("features").output, name="features")


def build_model(arch: str, num_classes: int, image_size: int | Sequence[int], *, weights: str = "imagenet",
                mode: TrainMode = "frozen", alpha: float = 1.0, seed: int | None = None) -> keras.Model:
    """Build an architecture by name (see module docstring).

    ``seed`` decides the initial weights and the dropout noise, and nothing else does: every initializer
    and dropout layer gets its own seed derived from it (:func:`with_seeds`), so the same seed gives the
    same model whatever else draws random numbers in the process. None: Keras' unseeded defaults.

    Raises:
        ModelError: unknown name, fewer than 2 classes, weights not available, size too small.
    """
    from fruitlens.sizes import as_size

    size = as_size(image_size)
    if num_classes < 2:
        raise ModelError(f"{num_classes} class(es): expected at least 2")
    kind, backbones = parse_arch(arch)
    if kind == "transfer":
        return build_transfer(backbones, num_classes, size, weights=weights, mode=mode, alpha=alpha, seed=seed)
    return with_seeds(ARCHS[kind](num_classes, size), seed)


def scaling_of(arch: str) -> str:
    """What a model of ``arch`` does inside to its [0, 1] input, in words (the model card's ``scaling``)."""
    kind, backbones = parse_arch(arch)
    if kind == "transfer":
        return ",".join(f"{b}:{KERAS_APPS[b].backbone_preprocessing}" for b in backbones)
    return "rescale[-1,1]" if kind in ("fruit_net", "photo_resnet") else "none ([0, 1] input)"


def default_optimizer(arch: str, mode: TrainMode = "frozen", learning_rate: float | None = None,
                      total_steps: int | None = None):
    """The optimizer each tutorial used.

    seed_cnn: RMSprop(1e-4) with the old Keras ``decay=1e-6``, which is lr / (1 + 1e-6 * step), exactly
    ``InverseTimeDecay(1e-4, decay_steps=1, decay_rate=1e-6)``. finetune: SGD(1e-4, momentum 0.9).
    small_convnet and frozen/bottleneck heads: RMSprop(1e-3) (Keras' default, as the tutorials).
    lenet: Adam(1e-3). fruit_net: Adam(2e-3) with a cosine decay to 1% over ``total_steps`` (when given).
    """
    kind, _ = parse_arch(arch)
    opt = keras.optimizers
    if kind == "seed_cnn":
        lr = opt.schedules.InverseTimeDecay(learning_rate or 1e-4, decay_steps=1, decay_rate=1e-6)
        return opt.RMSprop(learning_rate=lr)
    if kind == "transfer" and mode == "finetune":
        return opt.SGD(learning_rate=learning_rate or 1e-4, momentum=0.9)
    if kind in ("transfer", "small_convnet"):
        return opt.RMSprop(learning_rate=learning_rate or 1e-3)
    if kind == "fruit_net" and total_steps:
        lr = opt.schedules.CosineDecay(learning_rate or 2e-3, decay_steps=int(total_steps), alpha=0.01)
        return opt.Adam(learning_rate=lr)
    return opt.Adam(learning_rate=learning_rate or 1e-3)


def compile_model(model: keras.Model, arch: str, mode: TrainMode = "frozen", learning_rate: float | None = None,
                  total_steps: int | None = None) -> keras.Model:
    """Compile with the arch's optimizer, sparse categorical cross-entropy and accuracy."""
    model.compile(optimizer=default_optimizer(arch, mode, learning_rate, total_steps),
                  loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
