"""Seed architectures: the Keras networks tellapart started from, rebuilt with ``cnn``.

Each preset reproduces its Keras model layer for layer, with Keras' defaults
(``padding="valid"``, biases on every Conv2D/Dense), so parameter counts match
the Keras summaries (tests/test_models.py shows the arithmetic). Output layers
emit logits: Keras' final sigmoid/softmax lives in the trainer's loss.
Not reproduced: BatchNorm's momentum/epsilon (torch's defaults are kept) and the
flatten order (channels-first here; Keras weights are never loaded).
"""

from __future__ import annotations

from torch import nn

from tellapart._errors import UserError
from tellapart.models._families import CNN, ConvBlock, cnn
from tellapart.models._layers import check_int, check_rate
from tellapart.models._registry import register

__all__ = ["ConvL2CNN", "grid_cnn", "s0_faces_cnn", "s1_grid_winner", "s3_cifar_vgg"]

# Smallest inputs the presets' conv stacks fit, px; tests/test_models.py checks each.
_S0_MIN = 13  # 13 → 6 (3×3 /2) → 1 (6×6 /2)
_GRID_MIN_3 = 22  # 22 → 20 → 10 → 8 → 4 → 2 → 1 (conv 3×3 valid, pool 2 per block)
_GRID_MIN_5 = 94  # 94 → 46 → 22 → 10 → 4 → 1
_VGG_MIN = 8  # three 2×2 pools: 8 → 4 → 2 → 1


@register("s0_faces_cnn", min_input_size=_S0_MIN)
def s0_faces_cnn(*, in_chans: int, num_classes: int, input_size: int) -> CNN:
    """The S0 faces CNN, designed for 64×64×3 input.

    Keras layers reproduced::

        Conv2D(12, 3, strides=2, activation="relu")   # padding "valid"
        Conv2D(24, 6, strides=2, activation="relu")
        Flatten()
        Dense(200, activation="relu")
        Dense(num_classes)                            # seed: Dense(1, sigmoid)

    Args:
        in_chans: Image channels.
        num_classes: Output units (1 for the seed's single sigmoid unit).
        input_size: Square image side, px (at least 13).
    """
    return cnn(
        in_chans=in_chans,
        num_classes=num_classes,
        input_size=input_size,
        blocks=(
            ConvBlock(12, kernel=3, stride=2, padding="valid"),
            ConvBlock(24, kernel=6, stride=2, padding="valid"),
        ),
        dense=(200,),
        activation="relu",
    )


@register("grid_cnn", min_input_size=_GRID_MIN_3)
def grid_cnn(
    *,
    in_chans: int,
    num_classes: int,
    input_size: int,
    conv_layers: int = 3,
    width: int = 64,
    dense_layers: int = 0,
    dropout: float = 0.0,
) -> CNN:
    """The S1/S2 grid-searched CNN (sentdex style), designed for 150×150×1 input.

    Keras layers reproduced::

        conv_layers × [Conv2D(width, 3), Activation("relu"), MaxPooling2D(2)]
        Flatten()
        dense_layers × [Dense(width), Activation("relu")]
        Dropout(dropout)                              # only when dropout > 0
        Dense(num_classes)                            # seed: Dense(1, sigmoid)

    Args:
        in_chans: Image channels.
        num_classes: Output units.
        input_size: Square image side, px; 3 conv layers need 22, 5 need 94.
        conv_layers: Conv blocks (the grid searched 1-5).
        width: Filters of every conv and units of every hidden dense layer.
        dense_layers: Hidden dense layers.
        dropout: Drop probability just before the output layer.
    """
    check_int("conv_layers", conv_layers)
    check_int("width", width)
    check_int("dense_layers", dense_layers, minimum=0)
    check_rate("dropout", dropout)
    return cnn(
        in_chans=in_chans,
        num_classes=num_classes,
        input_size=input_size,
        blocks=(ConvBlock(width, kernel=3, padding="valid", pool="max"),) * conv_layers,
        dense=(width,) * dense_layers,
        head_dropout=dropout,
        activation="relu",
    )


@register("s1_grid_winner", min_input_size=_GRID_MIN_5)
def s1_grid_winner(*, in_chans: int, num_classes: int, input_size: int) -> CNN:
    """S1's grid-search winner: ``grid_cnn(conv_layers=5, width=32, dense_layers=2)``.

    Designed for 150×150×1 input, where the feature maps go
    150 → 148 → 74 → 72 → 36 → 34 → 17 → 15 → 7 → 5 → 2 (conv 3×3 valid, pool 2).

    Args:
        in_chans: Image channels.
        num_classes: Output units.
        input_size: Square image side, px (at least 94).
    """
    return grid_cnn(
        in_chans=in_chans,
        num_classes=num_classes,
        input_size=input_size,
        conv_layers=5,
        width=32,
        dense_layers=2,
    )


class ConvL2CNN(CNN):
    """A ``cnn`` whose seed put ``kernel_regularizer`` on its convolutions only.

    Keras regularises exactly the layers given a regularizer; the seed gave none to its
    Dense layers, so the trainer's weight decay must skip them too.
    """

    @classmethod
    def from_cnn(cls, model: CNN) -> ConvL2CNN:
        """The same layers (shared, not copied) with conv-only weight decay."""
        out = cls(
            features=model.features,
            num_features=model.num_features,
            head=model.head,
            head_features=model.classifier.in_features,
            num_classes=model.num_classes,
        )
        out.classifier = model.classifier  # keep the built (seeded) output layer, not a fresh one
        return out

    def decay_parameters(self) -> list[nn.Parameter]:
        """Conv kernels only: no Dense or output weights, biases or BatchNorm scales."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


@register("s3_cifar_vgg", min_input_size=_VGG_MIN)
def s3_cifar_vgg(*, in_chans: int, num_classes: int, input_size: int, l2: float = 1e-3) -> CNN:
    """The S3 VGG-style CIFAR-10 CNN with Mish, BatchNorm and dropout, designed for 32×32×3 input.

    Keras layers reproduced, for (f, n, d) in (32, 2, 0.2), (64, 2, 0.3), (128, 1, 0.4)::

        n × [Conv2D(f, 3, padding="same", kernel_initializer="he_uniform", kernel_regularizer=L2(l2)),
             Activation("mish"), BatchNormalization()]
        MaxPooling2D(2), Dropout(d)

    (two 32 convs, two 64 convs, one 128 conv), then::

        Flatten()
        Dense(128, kernel_initializer="he_uniform"), Activation("mish"), BatchNormalization()
        Dropout(0.5)
        Dense(num_classes)                            # seed: Dense(10, softmax)

    404,778 parameters counted as Keras does (with BatchNorm's moving statistics).

    The L2 penalty is not a layer here: the trainer applies it as weight decay to
    the conv kernels only (:meth:`ConvL2CNN.decay_parameters`), the layers the seed
    regularised. Keras adds ``l2 * sum(w**2)`` to the loss, whose gradient is
    ``2 * l2 * w``; torch's Adam/SGD ``weight_decay`` adds ``weight_decay * w`` to the
    gradient, so ``model.default_weight_decay = 2 * l2`` matches the seed exactly
    (for Adam and SGD; AdamW's decoupled decay is a different rule).

    Args:
        in_chans: Image channels.
        num_classes: Output units.
        input_size: Square image side, px (at least 8).
        l2: The seed's L2 regularisation factor.
    """
    if isinstance(l2, bool) or not isinstance(l2, int | float) or l2 < 0:
        raise UserError(f"l2 must be a number >= 0; got {l2!r}")
    model = cnn(
        in_chans=in_chans,
        num_classes=num_classes,
        input_size=input_size,
        blocks=tuple(
            ConvBlock(filters, convs=convs, padding="same", batch_norm=True, pool="max", dropout=drop)
            for filters, convs, drop in ((32, 2, 0.2), (64, 2, 0.3), (128, 1, 0.4))
        ),
        dense=(128,),
        dense_batch_norm=True,
        dense_dropout=0.5,
        activation="mish",
        bn_after_activation=True,
        init="he_uniform",
    )
    model = ConvL2CNN.from_cnn(model)
    # Keras' L2(l2) penalty l2·Σw² has gradient 2·l2·w; torch's weight_decay adds wd·w: wd = 2·l2.
    model.default_weight_decay = 2.0 * float(l2)
    return model
