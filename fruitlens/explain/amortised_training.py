"""Training of the amortised explainer (FastSHAP, Jethani et al., ICLR 2022) against a frozen classifier.

The explainer is a small convolutional network ``phi(x)`` that outputs, for every class, one Shapley value per
patch of a fixed ``grid`` x ``grid`` grid (``patch_index``). It is trained with FastSHAP's objective:

    v_x(S) = the classifier's probabilities on x with the patches outside S showing the fill
    loss   = E_x E_{S ~ p_Shapley} || v_x(S) - v_x(empty) - 1_S^T phi(x) ||^2

where ``p_Shapley`` draws a subset size k in 1..d-1 with probability proportional to (d - 1) / (k (d - k)) and
then k of the d patches uniformly; each draw is paired with its complement (``shapley_subsets``), and
``phi`` is normalised additively so that its values sum to v_x(all) - v_x(empty) (``efficient``) before the
loss: the minimiser is then the Shapley values of v_x (the paper's Theorem 1 with the efficiency constraint).
The classifier is never changed.

Cost: the classifier is frozen, so each image's ``masks`` coalitions are drawn once (``default_rng([seed, 5])``)
and their values computed once before the first epoch: images x masks classifier passes in all, not x epochs
(FastSHAP redraws them every epoch; a fixed draw is the same objective on a finite sample, at a fraction of the
passes). Every epoch is then the explainer's own forward and backward passes only.

Early stopping (``patience`` > 0, at least ``HOLDOUT`` images): a seeded tenth of the images is held out; after
each epoch the loss on them (their fixed coalitions) is measured, and training stops once it has not improved on
its best for ``patience`` epochs (Keras' rule, the last weights kept; ``card.history`` has the epochs trained).

Training is seeded and deterministic: the network is initialised from seeded initialisers, epoch e draws its
image order from ``default_rng([seed, e])``; so a run resumed after epoch e ends equal to one
that was never interrupted. Each epoch writes ``checkpoint/last.npz`` (network and optimizer variables) and
then ``checkpoint/state.json`` (epoch, both loss histories, seconds, the sha256 of ``last.npz``, and the key:
classifier digest, data fingerprint, training options); a rerun with the same key resumes there. The finished
explainer is ``explainer.npz`` with ``card.json`` beside it (:class:`ExplainerCard`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from fruitlens.digests import file_digest
from fruitlens.explain.patches import fill_of, patch_masks, shapley_subsets
from fruitlens.method_options import AmortisedOptions

log = logging.getLogger(__name__)

WEIGHTS = "explainer.npz"
CARD = "card.json"
CHECKPOINT = "checkpoint"
STATE = "state.json"
LAST = "last.npz"
#: the options that change what training computes (the key of a checkpoint and a cached explainer)
TRAINING_FIELDS = ("grid", "epochs", "masks", "learning_rate", "images_per_step", "fill", "width", "seed", "patience",
                   "features")
HOLDOUT = 10  #: one training image in HOLDOUT is held out for early stopping (none below HOLDOUT images)


@dataclass(frozen=True)
class ExplainerCard:
    """What a trained explainer explains and how it was trained (``card.json`` beside ``explainer.npz``).

    Attributes:
        classifier_digest: sha256 of the classifier's weights (:func:`classifier_digest`).
        data_fingerprint: sha256 of the training images (:func:`data_fingerprint`).
        image_size: (height, width) of its inputs, the classifier's input size.
        classes: number of classes.
        grid, fill, width, masks, learning_rate, images_per_step, seed: the training options.
        epochs: the most epochs (``len(history)`` were trained: fewer when stopped early). images: training
            images. seconds: training time (all sessions together).
        history: mean training loss of each epoch. patience: the early-stopping patience (0: none).
        holdout_history: mean loss of each epoch on the held-out images (empty: none held out).
        features: the classifier's layer whose output is the network's input (None: the image).
        input_shape: (height, width, channels) of the network's input before the two coordinate channels.
    """

    classifier_digest: str
    data_fingerprint: str
    image_size: tuple[int, int]
    classes: int
    grid: int
    fill: str
    width: int
    masks: int
    learning_rate: float
    images_per_step: int
    seed: int
    epochs: int
    images: int
    seconds: float
    history: tuple[float, ...]
    patience: int
    holdout_history: tuple[float, ...]
    features: str | None
    input_shape: tuple[int, int, int]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExplainerCard:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"explainer card with keys {sorted(data) if isinstance(data, dict) else type(data)}: "
                             f"expected {sorted(names)}")
        data["image_size"] = tuple(data["image_size"])
        data["history"] = tuple(data["history"])
        data["holdout_history"] = tuple(data["holdout_history"])
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)


# ------------------------------------------------------------------------------------ digests


def classifier_digest(model) -> str:
    """sha256 of the classifier's weights (names, shapes and values, in order)."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{w.path}:{value.shape}:{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def data_fingerprint(images: np.ndarray) -> str:
    """sha256 of the training images (float32 bytes and shape)."""
    arr = np.ascontiguousarray(images, np.float32)
    return hashlib.sha256(f"{arr.shape}".encode() + arr.tobytes()).hexdigest()


# ------------------------------------------------------------------------------------ the network


def build_network(image_size: tuple[int, int], grid: int, classes: int, width: int, seed: int, channels: int = 3):
    """The explainer network: (N, H, W, channels + 2) (the image, or the classifier's features, and two coordinate
    channels) -> (N, grid^2, classes) raw attributions; every initialiser seeded, no randomness at call time."""
    import keras

    h, w = image_size
    downs = int(max(0, min(3, np.floor(np.log2(min(h, w) / max(grid, 1))))))
    init = iter(range(100))

    def conv(filters, kernel, strides=1, activation="relu"):
        s = seed * 1000 + next(init)
        return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", activation=activation,
                                   kernel_initializer=keras.initializers.GlorotUniform(seed=s),
                                   bias_initializer="zeros")

    inp = keras.Input((h, w, channels + 2))
    x = conv(width, 3)(inp)
    for i in range(downs):
        x = conv(width * min(2 ** (i + 1), 4), 3, strides=2)(x)
    x = keras.layers.Resizing(grid, grid, interpolation="bilinear", antialias=True)(x)
    x = conv(width * 2, 1)(x)
    x = conv(width * 2, 1)(x)
    x = conv(classes, 1, activation=None)(x)
    out = keras.layers.Reshape((grid * grid, classes))(x)
    return keras.Model(inp, out, name="amortised_explainer")


def features_fn(model, layer: str | None):
    """(N, H, W, 3) images -> the explainer's input before the coordinates: the images themselves (``layer``
    None) or the output of the classifier's layer ``layer`` (frozen, a 4-d feature map).

    Raises:
        ValueError: no such layer, or one whose output is not (N, h, w, c).
    """
    import keras

    if layer is None:
        return lambda x: x
    names = [lay.name for lay in model.layers]
    if layer not in names:
        raise ValueError(f"amortised features {layer!r}: expected a layer of the classifier ({', '.join(names)})")
    out = model.get_layer(layer).output
    if len(out.shape) != 4:
        raise ValueError(f"amortised features {layer!r}: output of shape {tuple(out.shape)}; expected (N, h, w, c)")
    extractor = keras.Model(model.inputs, out)
    return lambda x: extractor(x, training=False)


def coordinates(images):
    """(N, H, W, 3) tensor -> (N, H, W, 5): the image and its row / column coordinates in [-1, 1]."""
    import tensorflow as tf

    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    ys = tf.linspace(-1.0, 1.0, h)
    xs = tf.linspace(-1.0, 1.0, w)
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
    coords = tf.tile(tf.stack([grid_y, grid_x], -1)[None], [n, 1, 1, 1])
    return tf.concat([images, tf.cast(coords, images.dtype)], axis=-1)


def efficient(raw, gap):
    """Additive efficiency normalisation: (N, d, C) raw, (N, C) v(all) - v(empty) -> phi with
    ``phi.sum(axis=1) == gap`` (each patch shifted by the same share of the shortfall)."""
    import tensorflow as tf

    d = tf.cast(tf.shape(raw)[1], raw.dtype)
    return raw + ((gap - tf.reduce_sum(raw, axis=1)) / d)[:, None, :]


def probs_fn(model):
    """(M, H, W, 3) -> (M, C) softmax probabilities of the classifier (of its pre-softmax scores)."""
    import tensorflow as tf

    from fruitlens.explain.base import logits_fn

    scores = logits_fn(model)
    return lambda x: tf.nn.softmax(scores(x), axis=-1)


def _probs(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    import tensorflow as tf

    probs = probs_fn(model)
    return np.concatenate([probs(tf.constant(images[i:i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)]) if len(images) else np.zeros((0, 0))


# ------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class Trained:
    """A trained explainer: its network (``build_network``) and its card."""

    network: object
    card: ExplainerCard


def _key(digest: str, fingerprint: str, image_size, classes: int, options) -> dict:
    """What a checkpoint or a finished explainer must agree on to be reused (``options``: the options or a card)."""
    return {"classifier_digest": digest, "data_fingerprint": fingerprint, "image_size": list(image_size),
            "classes": classes, **{f: getattr(options, f) for f in TRAINING_FIELDS}}


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    write(tmp)
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: list[np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, *arrays)
    _write_atomic(path, write)


def _load_npz(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def load_explainer(path: str | os.PathLike) -> Trained:
    """The explainer in folder ``path`` (``explainer.npz`` and ``card.json``).

    Raises:
        FileNotFoundError / ValueError: a folder without them, or weights that do not fit the card.
    """
    folder = Path(path)
    if not (folder / WEIGHTS).is_file() or not (folder / CARD).is_file():
        raise FileNotFoundError(f"explainer {folder}: expected a folder with {WEIGHTS} and {CARD} "
                                "(written by fruitlens' amortised training)")
    card = ExplainerCard.from_json((folder / CARD).read_text(encoding="utf-8"))
    network = build_network(card.input_shape[:2], card.grid, card.classes, card.width, card.seed,
                            card.input_shape[2])
    weights = _load_npz(folder / WEIGHTS)
    if [w.shape for w in weights] != [tuple(v.shape) for v in network.weights]:
        raise ValueError(f"explainer {folder}: {WEIGHTS} does not fit the network its card describes")
    network.set_weights(weights)
    return Trained(network, card)


def train_explainer(model, images: np.ndarray, options: AmortisedOptions, out_dir: str | os.PathLike | None, *,
                    on_epoch: Callable[[int, float], None] | None = None, report: Callable[[str], None] | None = None
                    ) -> Trained:
    """Train an explainer of the frozen ``model`` on ``images`` with FastSHAP's objective.

    Args:
        model: the classifier, (N, H, W, 3) float32 in [0, 1] -> (N, C) scores (softmax applied here when the
            model has none); never changed.
        images: (N, H, W, 3) float32 in [0, 1] at the classifier's input size; never modified.
        options: grid, epochs, masks, learning_rate, images_per_step, fill, width, seed, batch_size.
        out_dir: folder of ``explainer.npz``, ``card.json`` and ``checkpoint/`` (None: nothing written, no
            resume). A finished explainer there with the same key is returned as it is; a checkpoint with the
            same key is resumed from its last epoch; anything else starts fresh.
        on_epoch: called with (epoch, mean loss) after each epoch's checkpoint is written.
        report: called with one progress line per epoch.

    Returns:
        The trained network and its card.
    """
    import keras
    import tensorflow as tf

    images = np.ascontiguousarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"training images of shape {images.shape}: expected (N, H, W, 3) with N >= 1")
    n, h, w, _ = images.shape
    classes = int(model.output_shape[-1])
    grid = options.grid
    players = grid * grid
    masks_px = tf.constant(patch_masks((h, w), grid))  # (d, H, W)
    digest, fingerprint = classifier_digest(model), data_fingerprint(images)
    key = _key(digest, fingerprint, (h, w), classes, options)
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None and (folder / CARD).is_file() and (folder / WEIGHTS).is_file():
        try:
            trained = load_explainer(folder)
            card = trained.card
            if _key(card.classifier_digest, card.data_fingerprint, card.image_size, card.classes, card) == key:
                log.info("amortised explainer in %s already trained for this classifier and data", folder)
                return trained
        except (OSError, ValueError) as exc:
            log.warning("amortised explainer in %s cannot be read (%s); training again", folder, exc)

    extract = features_fn(model, options.features)
    # the explainer's inputs: the images, or the classifier's frozen features of them (computed once)
    inputs = images if options.features is None else np.concatenate(
        [extract(tf.constant(images[i:i + options.batch_size])).numpy() for i in range(0, n, options.batch_size)])
    network = build_network(inputs.shape[1:3], grid, classes, options.width, options.seed, inputs.shape[3])
    optimizer = keras.optimizers.Adam(learning_rate=options.learning_rate)
    optimizer.build(network.trainable_variables)
    fills = fill_of(images, options.fill)
    v_all = _probs(model, images, options.batch_size)
    v_empty = _probs(model, fills, options.batch_size)
    probs = probs_fn(model)

    @tf.function(reduce_retracing=True)
    def value(x, fill, subsets):
        """(b, m, C) probabilities of b images under their m subsets."""
        b, m = tf.shape(subsets)[0], tf.shape(subsets)[1]
        keep = tf.einsum("bmd,dhw->bmhw", subsets, masks_px)[..., None]
        mixed = keep * x[:, None] + (1.0 - keep) * fill[:, None]
        return tf.reshape(probs(tf.reshape(mixed, (b * m, h, w, 3))), (b, m, classes))

    def loss_of(x, subsets, values, empty, full, training):
        phi = efficient(network(coordinates(x), training=training), full - empty)  # (b, d, C)
        pred = tf.einsum("bmd,bdc->bmc", subsets, phi)
        return tf.reduce_mean(tf.reduce_sum(tf.square(values - empty[:, None] - pred), axis=-1))

    @tf.function(reduce_retracing=True)
    def step(x, subsets, values, empty, full):
        with tf.GradientTape() as tape:
            loss = loss_of(x, subsets, values, empty, full, True)
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables, strict=True))
        return loss

    held_loss = tf.function(lambda *a: loss_of(*a, False), reduce_retracing=True)
    # the coalitions of each image are drawn once and their values computed once (images x masks classifier
    # passes in all, not x epochs: the classifier is frozen, so every epoch reuses them); a seeded tenth of the
    # images is held out for early stopping when ``patience`` > 0
    subsets = shapley_subsets(np.random.default_rng([options.seed, 5]), n, options.masks, players)
    per_call = max(1, options.batch_size // options.masks)
    values = np.concatenate([value(tf.constant(images[i:i + per_call]), tf.constant(fills[i:i + per_call]),
                                   tf.constant(subsets[i:i + per_call])).numpy() for i in range(0, n, per_call)])
    held = np.sort(np.random.default_rng([options.seed, 6]).permutation(n)[:n // HOLDOUT]) \
        if options.patience > 0 and n >= HOLDOUT else np.zeros(0, np.int64)
    train_ids = np.setdiff1d(np.arange(n), held)

    def held_out_loss() -> float:
        return float(sum(float(held_loss(*(tf.constant(a[held[i:i + options.images_per_step]]) for a in
                                           (inputs, subsets, values, v_empty, v_all))))
                         * len(held[i:i + options.images_per_step])
                         for i in range(0, len(held), options.images_per_step)) / len(held))

    start_epoch, history, holdout_history, seconds = 0, [], [], 0.0
    ckpt = folder / CHECKPOINT if folder is not None else None
    if ckpt is not None:
        state = _resumable(ckpt, key)
        if state is not None:
            arrays = _load_npz(ckpt / LAST)
            nw = len(network.weights)
            network.set_weights(arrays[:nw])
            for var, value_ in zip(optimizer.variables, arrays[nw:], strict=True):
                var.assign(value_)
            start_epoch, history, seconds = state["epoch"], list(state["history"]), float(state["seconds"])
            holdout_history = list(state["holdout_history"])
            log.info("amortised explainer: resuming %s after epoch %d", ckpt, start_epoch)
        ckpt.mkdir(parents=True, exist_ok=True)

    per_step = options.images_per_step
    for epoch in range(start_epoch, options.epochs):
        if stopped(holdout_history, options.patience):
            break
        began = time.perf_counter()
        order = train_ids[np.random.default_rng([options.seed, epoch]).permutation(len(train_ids))]
        losses = []
        for s in range(0, len(order), per_step):
            idx = np.sort(order[s:s + per_step])
            loss = step(*(tf.constant(a[idx]) for a in (inputs, subsets, values, v_empty, v_all)))
            losses.append(float(loss) * len(idx))
        mean_loss = float(np.sum(losses) / len(order))
        history.append(mean_loss)
        if len(held):
            holdout_history.append(held_out_loss())
        seconds += time.perf_counter() - began
        if ckpt is not None:
            _save_npz(ckpt / LAST, [*network.get_weights(), *[v.numpy() for v in optimizer.variables]])
            state = {"epoch": epoch + 1, "history": history, "holdout_history": holdout_history,
                     "seconds": seconds, "key": key, "checksum": file_digest(ckpt / LAST)}
            _write_atomic(ckpt / STATE, lambda p, s=state: p.write_text(json.dumps(s), encoding="utf-8"))
        line = (f"amortised explainer: epoch {epoch + 1}/{options.epochs} loss {mean_loss:.5f}"
                + (f" held-out {holdout_history[-1]:.5f}" if len(held) else "") + f" ({seconds:.1f} s)")
        log.info(line)
        if report is not None:
            report(line)
        if on_epoch is not None:
            on_epoch(epoch + 1, mean_loss)

    card = ExplainerCard(classifier_digest=digest, data_fingerprint=fingerprint, image_size=(h, w),
                         classes=classes, grid=grid, fill=options.fill, width=options.width, masks=options.masks,
                         learning_rate=options.learning_rate, images_per_step=options.images_per_step,
                         seed=options.seed, epochs=options.epochs, images=n, seconds=round(seconds, 3),
                         history=tuple(history), patience=options.patience, holdout_history=tuple(holdout_history),
                         features=options.features, input_shape=tuple(int(v) for v in inputs.shape[1:]))
    if folder is not None:
        _save_npz(folder / WEIGHTS, network.get_weights())
        _write_atomic(folder / CARD, lambda p: p.write_text(card.to_json(), encoding="utf-8"))
    return Trained(network, card)


def stopped(holdout_history: list[float], patience: int) -> bool:
    """Early stopping (Keras' rule, no restoring): the held-out loss has not improved on its best for
    ``patience`` epochs (never with patience 0 or no held-out images)."""
    return patience > 0 and len(holdout_history) > patience and \
        int(np.argmin(holdout_history)) < len(holdout_history) - patience


def sample_rows(n: int, options: AmortisedOptions) -> np.ndarray:
    """Sorted indices of the (at most ``options.train_images``) images a run trains its explainer on, seeded."""
    if n <= options.train_images:
        return np.arange(n)
    return np.sort(np.random.default_rng([options.seed, 7]).choice(n, options.train_images, replace=False))


def explainer_for(model, images: np.ndarray, options: AmortisedOptions, root: str | os.PathLike, *,
                  report: Callable[[str], None] | None = None) -> AmortisedOptions:
    """``options`` with ``explainer`` set to an explainer of ``model`` trained on ``images`` (reused or resumed
    when one for the same classifier, data and options is under ``root``): its folder is
    ``root/<classifier digest>-<data fingerprint>`` (12 hex digits each), so that other data never reuses it."""
    from dataclasses import replace

    folder = Path(root) / f"{classifier_digest(model)[:12]}-{data_fingerprint(images)[:12]}"
    train_explainer(model, images, options, folder, report=report)
    return replace(options, explainer=str(folder))


def _resumable(ckpt: Path, key: dict) -> dict | None:
    """The checkpoint state in ``ckpt`` if it was written for ``key`` and its weights are whole; else None."""
    try:
        state = json.loads((ckpt / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        if isinstance(state, dict):
            log.warning("amortised explainer: the checkpoint in %s is for another classifier, data or options; "
                        "starting fresh", ckpt)
        return None
    if not (ckpt / LAST).is_file() or file_digest(ckpt / LAST) != state.get("checksum"):
        log.warning("amortised explainer: %s is missing or does not match its checksum; starting fresh", ckpt / LAST)
        return None
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or not isinstance(state.get("history"), list) or len(state["history"]) != epoch \
            or not isinstance(state.get("holdout_history"), list):
        return None
    return state
