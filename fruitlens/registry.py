"""The explanation methods: one :class:`MethodSpec` per method, in one mapping that everyone reads.

``ExplainOptions`` (``fruitlens.config``), the command line's ``--method`` choices, the pipeline config, the
batch engine, the table schemas, the sanity check, the report's titles and the tests all take the methods
from :data:`METHODS`. A new method is one options class (a frozen dataclass, ``fruitlens.method_options``),
one explainer class (a subclass of ``fruitlens.explain.explainer.Explainer`` with ``from_options``) and
one line here.

This module imports no TensorFlow: the explainer is named as ``"module:Class"`` and imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from fruitlens.lime_options import LimeOptions
from fruitlens.method_options import (
    AmortisedOptions,
    CamOptions,
    CamVariant,
    IntegratedGradientsOptions,
    LayerCamOptions,
    OcclusionOptions,
    RiseOptions,
    SaliencyOptions,
    ScoreCamOptions,
    SmoothGradOptions,
)


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method.

    Attributes:
        name: the method's name (``--method``, config keys, table names: ``<name>.parquet``).
        options: its options dataclass (every field has a default).
        title: what captions, pictures and the report call it.
        table: the schema of its rows, a name in ``fruitlens.tables.SCHEMAS`` (``lime`` or ``gradcam``).
        explainer: ``"module:Class"`` of its explainer (``Class.from_options(model, options)``).
        variants: other names it answers to, each with the options change it means and its title
            (Grad-CAM's ``gradcam++`` is ``gradcam`` with ``variant: gradcam++``).
    """

    name: str
    options: type
    title: str
    table: str
    explainer: str
    variants: Mapping[str, tuple[dict, str]] = field(default_factory=dict)

    def explainer_class(self) -> type:
        """The explainer class (imported here: the first call may load TensorFlow)."""
        module, _, name = self.explainer.partition(":")
        return getattr(importlib.import_module(module), name)

    def build(self, model, options=None):
        """The explainer of ``model`` with ``options`` (default: the options class's defaults)."""
        return self.explainer_class().from_options(model, self.options() if options is None else options)


def _cam_variants() -> dict[str, tuple[dict, str]]:
    from typing import get_args

    titles = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "cam": "CAM"}
    return {v: ({"variant": v}, titles[v]) for v in get_args(CamVariant) if v != "gradcam"}


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("lime", LimeOptions, "LIME", "lime", "fruitlens.explain.lime:LimeExplainer"),
    MethodSpec("gradcam", CamOptions, "Grad-CAM", "gradcam", "fruitlens.explain.gradcam:GradCAM",
               _cam_variants()),
    MethodSpec("layercam", LayerCamOptions, "Layer-CAM", "gradcam", "fruitlens.explain.gradcam:LayerCAM"),
    MethodSpec("scorecam", ScoreCamOptions, "Score-CAM", "gradcam", "fruitlens.explain.gradcam:ScoreCAM"),
    MethodSpec("saliency", SaliencyOptions, "Gradients", "gradcam", "fruitlens.explain.gradients:Saliency"),
    MethodSpec("smoothgrad", SmoothGradOptions, "SmoothGrad", "gradcam", "fruitlens.explain.gradients:SmoothGrad"),
    MethodSpec("integrated_gradients", IntegratedGradientsOptions, "Integrated Gradients", "gradcam",
               "fruitlens.explain.gradients:IntegratedGradients"),
    MethodSpec("occlusion", OcclusionOptions, "Occlusion", "gradcam", "fruitlens.explain.perturbation:Occlusion"),
    MethodSpec("rise", RiseOptions, "RISE", "gradcam", "fruitlens.explain.perturbation:RISE"),
    MethodSpec("amortised", AmortisedOptions, "Amortised SHAP", "gradcam",
               "fruitlens.explain.amortised:AmortisedExplainer"),
)}



def heatmap_methods() -> tuple[str, ...]:
    """The methods that write heatmap rows (the ``gradcam`` schema): every one but LIME."""
    return tuple(n for n, s in METHODS.items() if s.table == "gradcam")


def method_names() -> tuple[str, ...]:
    """Every name a method answers to: the methods, then their variants (gradcam++, cam)."""
    return (*METHODS, *(v for s in METHODS.values() for v in s.variants))


def resolve(name: str, options=None) -> tuple[MethodSpec, object]:
    """A method or variant name -> (its spec, its options): ``options`` (the method's own, or an
    ``ExplainOptions`` holding them; default the defaults) with the variant's change applied.

    Raises:
        ValueError: an unknown name, naming the valid ones.
    """
    for spec in METHODS.values():
        if name == spec.name or name in spec.variants:
            if options is None:
                opts = spec.options()
            elif isinstance(options, spec.options):
                opts = options
            else:
                opts = getattr(options, spec.name)
            if name in spec.variants:
                opts = replace(opts, **spec.variants[name][0])
            return spec, opts
    raise ValueError(f"method {name!r}: expected one of {', '.join(method_names())}")


def title(name: str, options=None) -> str:
    """What captions and the report call a method, a variant or a ``variant`` column value (``scorecam@2``:
    Faster Score-CAM); an unknown name is itself."""
    if name.startswith("scorecam@"):
        return f"Faster Score-CAM ({name.split('@', 1)[1]} channels)"
    for spec in METHODS.values():
        if name == spec.name:
            return spec.title
        if name in spec.variants:
            return spec.variants[name][1]
    return name


def variant_of(method: str, options) -> str:
    """The ``variant`` column of a heatmap method's rows: Grad-CAM's variant, ``scorecam@<channels>`` for
    Faster Score-CAM, or the method's own name."""
    if method == "gradcam":
        return options.variant
    if method == "scorecam" and options.channels is not None:
        return f"scorecam@{options.channels}"
    return method
