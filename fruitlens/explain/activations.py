"""Activation grids: what every conv layer outputs for one image, from one forward pass.

``visualize_run`` is the library side of ``fruitlens visualize``: for one image it writes one activation
grid per conv layer (the first K channels, 8 per row) and one filter-pattern grid per conv layer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fruitlens.explain.base import LayerRef, check_images, conv_layers, find_layer, trace_model
from fruitlens.explain.keras_graph import cached

log = logging.getLogger(__name__)



def model_title(card) -> str:
    """How titles name a model: the file it came from (``pets.h5``, ``imagenet:mobilenet_v2``), else its
    architecture (a run's model), never the wrapper's internal name (``mobilenetv2_1.00_96_from_01``)."""
    source = str(getattr(card, "source", "") or "")
    if source:
        return source if source.startswith("imagenet:") else Path(source).name
    return str(card.arch)


def layer_file_name(path: str) -> str:
    """A layer path as a file name: ``backbone/block5_conv3`` -> ``backbone__block5_conv3``."""
    return path.replace("/", "__")


def resolve_layers(model, layers=None) -> list[LayerRef]:
    """None -> every conv layer (nested backbones included), else each name/path resolved."""
    refs = conv_layers(model) if layers is None else [find_layer(model, lay) for lay in layers]
    if not refs:
        raise ValueError(f"model {model.name!r} has no convolutional layer to show")
    return refs


#: the conv layers ``visualize`` draws when none are named: a MobileNetV2 has 52, and each layer's filter
#: patterns are many gradient-ascent runs, so a big model gets this many, spread from the first to the last
DEFAULT_MAX_LAYERS = 8


def spread_layers(refs: list[LayerRef], most: int = DEFAULT_MAX_LAYERS) -> list[LayerRef]:
    """At most ``most`` of ``refs``, evenly spread, the first and the last included (all when there are fewer)."""
    if len(refs) <= most:
        return list(refs)
    picks = np.linspace(0, len(refs) - 1, most).round().astype(int)
    return [refs[i] for i in sorted(set(picks.tolist()))]


def layer_activations(model, images, layers=None) -> dict[str, np.ndarray]:
    """Outputs of several layers for N images, from a single forward pass.

    Args:
        model: Keras model taking (N, H, W, 3) float32 in [0, 1].
        images: (N, H, W, 3) float in [0, 1].
        layers: names or paths; None = every conv layer.

    Returns:
        {layer path: (N, h, w, K) float32} in execution order.
    """
    images = check_images(images)
    refs = resolve_layers(model, layers)
    key = ("activations", tuple(r.path for r in refs))
    outs = cached(model, key, lambda: trace_model(model, refs, outputs=False))(images, training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return {r.path: np.asarray(o, dtype=np.float32) for r, o in zip(refs, outs, strict=True)}


def save_activation_grids(model, image, out_dir: str | os.PathLike, *, channels: int = 40, ncols: int = 8,
                          palette: str = "viridis", layers=None, image_name: str | None = None,
                          model_name: str | None = None) -> list[Path]:
    """One PNG per conv layer, ``out_dir/<layer>.png``: the first ``channels`` maps of ``image`` (H, W, 3).

    Each grid is titled with the model, the layer (``captions.layer_title``; the file name keeps the path)
    and ``image_name`` (the input file), and starts with the input image as a tile labelled "input".
    """
    from fruitlens import plots
    from fruitlens.captions import layer_title

    if channels < 1:
        raise ValueError(f"channels {channels}: expected at least 1")
    acts = layer_activations(model, np.asarray(image)[None], layers)
    out = Path(out_dir)
    paths = []
    for path, maps in acts.items():
        shown = min(channels, maps.shape[-1])
        title = [f"activations of layer {layer_title(path)}",
                 f"model {model_name or model.name} | input {image_name or 'image'} | {shown} of {maps.shape[-1]} "
                 "channels"]
        grid = plots.activation_grid(maps[0], channels, ncols, palette, title=title, input_image=image)
        paths.append(plots.save_png(grid, out / f"{layer_file_name(path)}.png", "\n".join(title)))
    return paths


def save_filter_grids(model, out_dir: str | os.PathLike, *, filters: int = 40, ncols: int = 8, steps: int = 30,
                      lr: float = 10.0, seed: int = 0, size=None, layers=None, progress=None,
                      model_name: str | None = None) -> list[Path]:
    """One PNG per conv layer, ``out_dir/<layer>.png``: patterns of its first ``filters`` filters, titled
    with the model and the layer path; ``progress(layers done)`` after each."""
    from fruitlens import plots
    from fruitlens.captions import layer_title
    from fruitlens.explain.filters import filter_patterns

    out = Path(out_dir)
    paths = []
    for ref in resolve_layers(model, layers):
        total = _channels(model, ref)
        count = min(filters, total)
        patterns = filter_patterns(model, ref.path, np.arange(count), steps=steps, lr=lr, seed=seed, size=size)
        title = [f"filter patterns of layer {layer_title(ref.path)}",
                 f"model {model_name or model.name} | {count} of {total} filters",
                 "the input pattern that excites each filter most"]
        grid = plots.filter_grid(patterns, ncols, title=title)
        paths.append(plots.save_png(grid, out / f"{layer_file_name(ref.path)}.png", "\n".join(title)))
        if progress is not None:
            progress(len(paths))  # layers done
    return paths


def _channels(model, ref: LayerRef) -> int:
    from fruitlens.explain.filters import _compiled

    return _compiled(model, ref.path)[1]


def visualize_run(run_dir, image_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                  channels: int = 40, filters: int = 40, steps: int = 30, seed: int = 0,
                  palette: str = "viridis", layers=None, progress=None) -> list[Path]:
    """Activation grids of one image and filter patterns, for the conv layers of a model (or ``layers``).

    ``run_dir``: a run folder, a model file, or a ``fruitlens.modelio.ModelSource``. ``layers``: names or
    paths (``backbone/block_16_project``), ``"all"`` for every conv layer; None = every conv layer of a small
    model, :data:`DEFAULT_MAX_LAYERS` of them spread from first to last on a bigger one (logged, with the
    names). ``progress(done, total)`` is called
    after the activations and after each layer's filter patterns (the slow part); total = layers + 1.

    Writes ``out_dir/activations/<layer>.png`` and ``out_dir/filters/<layer>.png`` (nested layers as
    ``backbone__name``).

    Returns:
        The written paths, activations first.

    Raises:
        RunError: the run folder has no model; ValueError: the image cannot be read.
    """
    from fruitlens.images import read_rgb
    from fruitlens.modelio import as_model_source, check_layer_access

    model, card = as_model_source(run_dir).load()
    check_layer_access(model, "activations")
    image = read_rgb(image_path, card.image_size)
    refs = resolve_layers(model, None if layers in (None, "all") else layers)
    if layers is None and len(refs) > DEFAULT_MAX_LAYERS:
        every = len(refs)
        refs = spread_layers(refs)
        log.warning("model has %d conv layers; drawing %d spread from first to last (%s); --layers all for every "
                 "one, --layers A,B for your own", every, len(refs), ", ".join(r.path for r in refs))
    paths_of = [r.path for r in refs]
    out = Path(out_dir)
    name = model_title(card)
    paths = save_activation_grids(model, image, out / "activations", channels=channels, palette=palette,
                                  image_name=Path(image_path).name, layers=paths_of, model_name=name)
    total = len(refs) + 1
    if progress is not None:
        progress(1, total)
    step = None if progress is None else (lambda i: progress(1 + i, total))
    paths += save_filter_grids(model, out / "filters", filters=filters, steps=steps, seed=seed,
                               size=card.image_size, layers=paths_of, progress=step, model_name=name)
    log.info("wrote %d grids to %s", len(paths), out)
    return paths
