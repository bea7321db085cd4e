"""The photo recipe's parts: warm-up + cosine learning rate, the optimizers by name, label smoothing, photo
augmentation (random resized crop, flips, colour jitter), mixup/cutmix, and flip test-time augmentation.

Every random draw is stateless, a function of (seed, global batch number) only, so a run is repeatable and a
resumed run draws what the uninterrupted one drew. Nothing here imports Prefect; Keras and TensorFlow are
imported where used.

Which parts a run uses is decided by :class:`fruitlens.config.TrainConfig` (``optimizer``, ``schedule``,
``warmup_epochs``, ``weight_decay``, ``label_smoothing``, ``augment_policy``, ``crop_scale``, ``jitter``,
``mixup``, ``cutmix``); ``None``/``"default"`` there means the architecture's own choice
(:func:`resolved`): the photo recipe for ``photo_resnet``, each tutorial's for the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Recipe:
    """The resolved training recipe of one run (what the card records under ``config.recipe``)."""

    optimizer: str  # adam | adamw | rmsprop | sgd | tutorial (the arch's own, models.default_optimizer)
    schedule: str  # constant | cosine | warmup_cosine | tutorial
    learning_rate: float | None
    warmup_epochs: float
    weight_decay: float
    label_smoothing: float
    augment_policy: str  # classic (the tutorials' ImageDataGenerator options) | photo
    mixup: float
    cutmix: float

    @property
    def one_hot(self) -> bool:
        """Labels as one-hot vectors (label smoothing, mixup and cutmix need them)."""
        return self.label_smoothing > 0 or self.mixup > 0 or self.cutmix > 0

    @property
    def is_tutorial(self) -> bool:
        return self.optimizer == "tutorial" and self.schedule == "tutorial" and not self.one_hot


PHOTO_ARCHS = ("photo_resnet",)
#: from-scratch architectures trained by default with Adam and warm-up + cosine (lr 1e-3) instead of their
#: tutorial's optimizer (seed_cnn's RMSprop 1e-4): measured better on Fruits-360 in the same run as the
#: tutorial's own code (benchmarks/README.md, "Fruits-360: fruitlens against the tutorial's own code");
#: ``--optimizer tutorial --schedule tutorial`` trains as the tutorial did
MODERN_ARCHS = ("seed_cnn",)


def resolved(config) -> Recipe:
    """The recipe ``config`` (a TrainConfig) asks for, its defaults filled from the architecture."""
    photo, modern = config.arch in PHOTO_ARCHS, config.arch in MODERN_ARCHS
    optimizer = config.optimizer if config.optimizer != "default" else (
        "tutorial" if config.schedule == "tutorial" else "adamw" if photo else "adam" if modern else "tutorial")
    schedule = config.schedule if config.schedule != "default" else (
        "tutorial" if optimizer == "tutorial" else "warmup_cosine" if photo or modern else "constant")
    if optimizer == "tutorial" and schedule != "tutorial":
        optimizer = "adam"  # a schedule asked for: Adam unless an optimizer was named
    if schedule == "tutorial" and optimizer != "tutorial":
        schedule = "constant"
    lr = config.learning_rate if config.learning_rate is not None else (
        (2e-3 if photo else 1e-3) if optimizer != "tutorial" else None)
    smoothing = config.label_smoothing if config.label_smoothing is not None else (0.1 if photo else 0.0)
    policy = config.augment_policy or ("photo" if photo else "classic")
    return Recipe(optimizer=optimizer, schedule=schedule, learning_rate=lr, warmup_epochs=config.warmup_epochs,
                  weight_decay=config.weight_decay, label_smoothing=smoothing, augment_policy=policy,
                  mixup=config.mixup, cutmix=config.cutmix)


# ----------------------------------------------------------------------------------- learning rate


def _register():
    import keras

    @keras.saving.register_keras_serializable(package="fruitlens")
    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warm-up from ``peak / warmup_steps`` to ``peak`` over ``warmup_steps``, then a cosine decay
        to ``peak * alpha`` at ``total_steps`` (flat after)."""

        def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.01):
            self.peak, self.total_steps = float(peak), int(total_steps)
            self.warmup_steps, self.alpha = int(warmup_steps), float(alpha)

        def __call__(self, step):
            from keras import ops

            step = ops.cast(step, "float32")
            warm = max(self.warmup_steps, 1)
            warmup = self.peak * ops.minimum(step + 1.0, float(warm)) / float(warm)
            span = float(max(self.total_steps - self.warmup_steps, 1))
            t = ops.clip((step - float(self.warmup_steps)) / span, 0.0, 1.0)
            cosine = self.peak * (self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + ops.cos(math.pi * t)))
            return ops.where(step < float(self.warmup_steps), warmup, cosine)

        def get_config(self):
            return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                    "alpha": self.alpha}

    return WarmupCosine


_WARMUP_COSINE = None


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int = 0, alpha: float = 0.01):
    """A Keras learning-rate schedule (registered, so a saved optimizer loads again)."""
    global _WARMUP_COSINE
    if _WARMUP_COSINE is None:
        _WARMUP_COSINE = _register()
    return _WARMUP_COSINE(peak, total_steps, warmup_steps, alpha)


def make_optimizer(recipe: Recipe, steps_per_epoch: int, epochs: int):
    """The Keras optimizer of ``recipe`` (not for ``tutorial``: that is ``models.default_optimizer``)."""
    import keras

    total = max(1, steps_per_epoch * epochs)
    lr: Any = recipe.learning_rate
    if recipe.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.01)
    elif recipe.schedule == "warmup_cosine":
        lr = warmup_cosine(lr, total, min(int(round(recipe.warmup_epochs * steps_per_epoch)), total // 2))
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    return keras.optimizers.Adam(learning_rate=lr)


def compile_with(model, config, recipe: Recipe, steps_per_epoch: int):
    """Compile ``model`` for ``recipe``; the tutorial recipe is exactly ``models.compile_model``."""
    import keras

    from fruitlens import models

    if recipe.is_tutorial:
        return models.compile_model(model, config.arch, config.mode, config.learning_rate,
                                    steps_per_epoch * config.epochs)
    optimizer = (models.default_optimizer(config.arch, config.mode, config.learning_rate,
                                          steps_per_epoch * config.epochs)
                 if recipe.optimizer == "tutorial" else make_optimizer(recipe, steps_per_epoch, config.epochs))
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing) if recipe.one_hot
            else keras.losses.SparseCategoricalCrossentropy())
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


# ------------------------------------------------------------------------------------ augmentation


def _seed(seed: int, step, salt: int):
    import tensorflow as tf

    return tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(salt, tf.int64), tf.cast(step, tf.int64)])


def photo_augment(x, seed: int, step, crop_scale: float = 0.35, jitter: float = 0.2):
    """Random resized crop (area ``crop_scale``..1, aspect 3/4..4/3), horizontal flip and colour jitter
    (brightness, contrast, saturation by ``jitter``; hue by ``jitter / 4``) on a [0, 1] batch (B, H, W, 3).

    Stateless: the same (seed, step) gives the same batch."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    h, w = x.shape[1], x.shape[2]
    u = tf.random.stateless_uniform((b, 4), _seed(seed, step, 1))
    area = crop_scale + (1.0 - crop_scale) * u[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
    ratio = tf.exp(log_ratio)
    ch = tf.minimum(tf.sqrt(area / ratio), 1.0)  # crop side as a share of the height
    cw = tf.minimum(tf.sqrt(area * ratio), 1.0)
    y0 = (1.0 - ch) * u[:, 2]
    x0 = (1.0 - cw) * u[:, 3]
    boxes = tf.stack([y0, x0, y0 + ch, x0 + cw], axis=1)
    x = tf.image.crop_and_resize(x, boxes, tf.range(b), (h, w))
    flip = tf.random.stateless_uniform((b, 1, 1, 1), _seed(seed, step, 2)) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if jitter > 0:
        j = tf.random.stateless_uniform((b, 4), _seed(seed, step, 3), -1.0, 1.0)
        x = x + (jitter * j[:, 0])[:, None, None, None]  # brightness
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * (1.0 + jitter * j[:, 1])[:, None, None, None] + mean  # contrast
        grey = tf.reduce_mean(x, axis=3, keepdims=True)
        x = (x - grey) * (1.0 + jitter * j[:, 2])[:, None, None, None] + grey  # saturation
        x = tf.clip_by_value(x, 0.0, 1.0)
        hsv = tf.image.rgb_to_hsv(x)
        hue = tf.math.floormod(hsv[..., 0] + (jitter / 4 * j[:, 3])[:, None, None], 1.0)
        x = tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))
    return tf.clip_by_value(x, 0.0, 1.0)


def _beta(alpha: float, shape, seed):
    import tensorflow as tf

    a = tf.random.stateless_gamma(shape, seed, alpha)
    b = tf.random.stateless_gamma(shape, seed + tf.constant([0, 7919], tf.int64), alpha)
    return a / (a + b)


def mix(x, y, seed: int, step, mixup: float = 0.0, cutmix: float = 0.0):
    """Mixup (alpha ``mixup``) or cutmix (alpha ``cutmix``) with the batch reversed as partner; with both on,
    each batch takes one of the two (even odds). ``y`` one-hot. Stateless in (seed, step)."""
    import tensorflow as tf

    if not mixup and not cutmix:
        return x, y
    x2, y2 = tf.reverse(x, axis=[0]), tf.reverse(y, axis=[0])
    use_cut = tf.constant(bool(cutmix) and not mixup)
    if mixup and cutmix:
        use_cut = tf.random.stateless_uniform((), _seed(seed, step, 4)) < 0.5

    def do_mixup():
        lam = _beta(mixup or 1.0, (), _seed(seed, step, 5))
        return lam * x + (1 - lam) * x2, lam * y + (1 - lam) * y2

    def do_cutmix():
        h, w = x.shape[1], x.shape[2]
        lam = _beta(cutmix or 1.0, (), _seed(seed, step, 6))
        u = tf.random.stateless_uniform((2,), _seed(seed, step, 7))
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.cast(cut * h, tf.int32), tf.cast(cut * w, tf.int32)
        cy, cx = tf.cast(u[0] * h, tf.int32), tf.cast(u[1] * w, tf.int32)
        y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
        x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
        rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
        cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
        box = tf.logical_and(rows[:, None], cols[None, :])[None, :, :, None]
        share = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / float(h * w)  # the partner's share of pixels
        return tf.where(box, x2, x), (1 - share) * y + share * y2

    return tf.cond(use_cut, do_cutmix, do_mixup)


def finish_train(ds, config, recipe: Recipe, num_classes: int, first_step: int):
    """The training batches of ``make_dataset`` (no augmenter) with the recipe's photo augmentation,
    one-hot labels and mixup/cutmix; ``first_step`` the global batch number of the first batch (resume)."""
    import tensorflow as tf

    photo = config.augment and recipe.augment_policy == "photo"
    if not (photo or recipe.one_hot):
        return ds
    seed = int(config.seed)

    def step_fn(step, batch):
        x, y = batch
        step = step + first_step
        if photo:
            x = photo_augment(x, seed, step, config.crop_scale, config.jitter)
        if recipe.one_hot:
            y = tf.one_hot(y, num_classes)
            x, y = mix(x, y, seed, step, recipe.mixup, recipe.cutmix)
        return x, y

    return ds.enumerate().map(step_fn).prefetch(tf.data.AUTOTUNE)


def finish_eval(ds, recipe: Recipe, num_classes: int):
    """Validation batches: one-hot labels when the loss takes them."""
    import tensorflow as tf

    if ds is None or not recipe.one_hot:
        return ds
    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)))


# -------------------------------------------------------------------------------- test-time augmentation

TTA_MODES = ("none", "flip")


def check_tta(tta: str) -> str:
    if tta not in TTA_MODES:
        raise ValueError(f"tta {tta!r}: expected one of {', '.join(TTA_MODES)}")
    return tta


def tta_probs(predict, images: np.ndarray, tta: str = "none") -> np.ndarray:
    """``predict(images)`` averaged with ``predict`` of the mirrored images when ``tta`` is ``flip``."""
    probs = predict(images)
    if check_tta(tta) == "flip":
        probs = (probs + predict(np.ascontiguousarray(images[:, :, ::-1]))) / 2.0
    return probs
