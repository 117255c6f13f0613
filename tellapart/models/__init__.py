"""Models: a strict registry of builders and the one ``Classifier`` contract they share.

>>> model = create_model("cnn", in_chans=3, num_classes=10, input_size=32, dense=(128,))
>>> list_models("s*")
['s0_faces_cnn', 's1_grid_winner', 's3_cifar_vgg']
"""

from tellapart.models._base import Classifier
from tellapart.models._families import CNN, MLP, ConvBlock, LinearClassifier
from tellapart.models._layers import ACTIVATIONS, INITS, POOLS, Mish
from tellapart.models._pretrained import BACKBONES, Backbone, BackboneFeatures, register_backbone
from tellapart.models._presets import grid_cnn, s0_faces_cnn, s1_grid_winner, s3_cifar_vgg  # noqa: F401  (registers)
from tellapart.models._registry import create_model, list_models, min_input_size, model_kwargs, register

__all__ = [
    "ACTIVATIONS",
    "BACKBONES",
    "CNN",
    "INITS",
    "MLP",
    "POOLS",
    "Mish",
    "Backbone",
    "BackboneFeatures",
    "Classifier",
    "ConvBlock",
    "LinearClassifier",
    "create_model",
    "list_models",
    "min_input_size",
    "model_kwargs",
    "register",
    "register_backbone",
]
