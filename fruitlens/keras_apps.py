"""The Keras applications fruitlens uses, in one table: as ``imagenet:<app>`` models (with their top, see
``fruitlens.modelio``) and as ``transfer:<backbone>`` backbones (without it, see ``fruitlens.models``).

A value module: no Keras import; a constructor is named as a string (an attribute of ``keras.applications``)
that the Keras-facing modules look up when they build a network. The file names and URLs are the ones
``keras.applications`` asks ``get_file`` for (a test in tests/test_modelio.py fences them against Keras'
private modules; tests/test_layers.py fails when a second table of applications appears).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KerasApp:
    """One ``keras.applications`` network.

    Attributes:
        constructor: attribute of ``keras.applications`` (``"VGG16"``).
        side: the square input size it was trained at (its ImageNet top needs it).
        expects: what its raw input is, in ``fruitlens.modelspec`` preprocessing names: ``caffe`` (BGR, 0-255
            minus the ImageNet means), ``tf`` ([-1, 1]) or ``none`` ([0, 255]; the network scales itself).
        weights_file: the ImageNet weights with the top, file name in Keras' cache.
        weights_origin: where Keras downloads ``weights_file`` from.
        weights_hash: the md5 ``keras.applications`` checks after a download (None: it checks none).
        notop_file: the ImageNet weights without the top, file name in Keras' cache (``{alpha}`` and ``{rows}``
            are filled in for MobileNetV2).
        last_block: the first layer of the last block (``after:<name>``: the layer after it), what fine-tuning
            unfreezes.
    """

    constructor: str
    side: int
    expects: str
    weights_file: str
    weights_origin: str
    weights_hash: str | None
    notop_file: str
    last_block: str

    @property
    def backbone_preprocessing(self) -> str:
        """The ``fruitlens.models.BackbonePreprocess`` mode for this network: ``caffe``, ``tf`` or ``raw255``."""
        return "raw255" if self.expects == "none" else self.expects

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_APPS: dict[str, KerasApp] = {
    "vgg16": KerasApp("VGG16", 224, "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                      _GCS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                      "64373286793e3c8b2b4e3219cbf3544b",
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "block5_conv1"),
    "vgg19": KerasApp("VGG19", 224, "caffe", "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
                      _GCS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
                      "cbe5617147190e668d6c5d5026f83318",
                      "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "block5_conv1"),
    "resnet50": KerasApp("ResNet50", 224, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                         _GCS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                         "2cb95161c43110f7111970584f804107",
                         "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "conv5_block3_1_conv"),
    "mobilenet_v2": KerasApp("MobileNetV2", 224, "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
                             _GCS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
                             None,
                             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5",
                             "block_16_expand"),
    "xception": KerasApp("Xception", 299, "tf", "xception_weights_tf_dim_ordering_tf_kernels.h5",
                         _GCS + "xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
                         "0a58e3b7378bc2990ea3b43d5981f1f6",
                         "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", "block14_sepconv1"),
    "inception_v3": KerasApp("InceptionV3", 299, "tf", "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                             _GCS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                             "9a0d58056eeedaa3f26cb7ebd46da564",
                             "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "after:mixed9"),
    "efficientnet_b0": KerasApp("EfficientNetB0", 224, "none", "efficientnetb0.h5",
                                "https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
                                "902e53a9f72be733fc0bcb005b3ebbac",
                                "efficientnetb0_notop.h5", "block7a_expand_conv"),
}
APP_NAMES: tuple[str, ...] = tuple(KERAS_APPS)  # imagenet:<app> and transfer:<backbone> take the same names
