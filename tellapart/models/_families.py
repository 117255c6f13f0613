"""The general families: ``linear``, ``mlp`` and ``cnn``.

Every layer is built from the options alone, so a YAML config, a tuner and the
seed presets (``_presets.py``) all describe networks the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from tellapart._errors import UserError
from tellapart.models._base import Classifier
from tellapart.models._layers import (
    ACTIVATIONS,
    POOLS,
    apply_init,
    check_bool,
    check_choice,
    check_int,
    check_ints,
    check_rate,
    make_activation,
)
from tellapart.models._registry import register

__all__ = ["CNN", "MLP", "ConvBlock", "LinearClassifier", "cnn", "linear", "mlp"]

Padding = Literal["same", "valid"] | int
Pool = Literal["max", "avg"]


class LinearClassifier(Classifier):
    """Flatten → dense: a logistic/softmax regression on raw pixels."""


class MLP(Classifier):
    """Flatten → hidden dense layers (the features) → dropout → dense."""


class CNN(Classifier):
    """Conv blocks → flatten or global average pool (the features) → dense layers → dense."""


@register("linear")
def linear(*, in_chans: int, num_classes: int, input_size: int) -> LinearClassifier:
    """Flatten → Dense(num_classes).

    The seed's baseline (flatten → one sigmoid unit) is this with ``num_classes=1``.
    """
    return LinearClassifier(
        features=nn.Flatten(),
        num_features=in_chans * input_size**2,
        head=nn.Identity(),
        head_features=in_chans * input_size**2,
        num_classes=num_classes,
    )


@register("mlp")
def mlp(
    *,
    in_chans: int,
    num_classes: int,
    input_size: int,
    hidden: Sequence[int] = (200, 60),
    activation: str = "relu",
    dropout: float = 0.0,
) -> MLP:
    """Flatten → [Dense(width) → activation] per hidden width → Dropout → Dense(num_classes).

    Args:
        in_chans: Image channels.
        num_classes: Output units.
        input_size: Square image side, px.
        hidden: Width of each hidden layer, input side first; empty gives ``linear``.
        activation: Name from ``ACTIVATIONS``, after every hidden layer.
        dropout: Probability of dropping a feature just before the output layer.
    """
    hidden = check_ints("hidden", hidden)
    check_choice("activation", activation, ACTIVATIONS)
    dropout = check_rate("dropout", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_chans * input_size**2
    for units in hidden:
        layers += [nn.Linear(width, units), make_activation(activation)]
        width = units
    return MLP(
        features=nn.Sequential(*layers),
        num_features=width,
        head=nn.Dropout(dropout) if dropout else nn.Identity(),
        head_features=width,
        num_classes=num_classes,
    )


@dataclass(frozen=True)
class ConvBlock:
    """One stage of a ``cnn``: ``convs`` × [Conv2d → BatchNorm → activation], pool, dropout.

    YAML gives blocks as mappings; :meth:`coerce` turns one into a ConvBlock.
    """

    filters: int  # output channels of every conv in the block
    kernel: int = 3  # square kernel side, px
    stride: int = 1  # stride of the block's first conv; the others use 1
    padding: Padding = "same"  # "same" (needs stride 1), "valid" (none), or px on each side
    convs: int = 1  # convs in the block (VGG uses 2)
    batch_norm: bool = False  # BatchNorm2d after each conv (order: the cnn's bn_after_activation)
    activation: str | None = None  # name from ACTIVATIONS; None takes the cnn's activation
    pool: Pool | None = None  # 2×2 window, stride 2, after the convs
    dropout: float = 0.0  # drop probability after the pool

    def __post_init__(self) -> None:
        check_int("filters", self.filters)
        check_int("kernel", self.kernel)
        check_int("stride", self.stride)
        check_int("convs", self.convs)
        check_rate("dropout", self.dropout)
        if self.padding not in ("same", "valid") and (
            isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0
        ):
            raise UserError(f"padding must be 'same', 'valid' or a number of px >= 0; got {self.padding!r}")
        if self.padding == "same" and self.stride != 1:
            raise UserError("padding 'same' needs stride 1; use 'valid' or a padding in px")
        check_bool("batch_norm", self.batch_norm)
        if self.activation is not None:
            check_choice("activation", self.activation, ACTIVATIONS)
        if self.pool is not None:
            check_choice("pool", self.pool, POOLS)

    @classmethod
    def coerce(cls, block: ConvBlock | Mapping[str, Any]) -> ConvBlock:
        """Returns ``block`` as a ConvBlock, checking a mapping's keys.

        Raises:
            UserError: Not a mapping, an unknown key, or a missing ``filters``.
        """
        if isinstance(block, ConvBlock):
            return block
        if not isinstance(block, Mapping):
            raise UserError(f"a conv block must be a mapping such as {{filters: 32}}; got {block!r}")
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = [key for key in block if key not in known]
        if unknown:
            raise UserError(
                f"unknown conv block key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(known)}"
            )
        if "filters" not in block:
            raise UserError(f"conv block {dict(block)!r} needs 'filters'")
        return cls(**block)

    def output_size(self, size: int) -> int:
        """Side (px) of the block's output for a square input of ``size`` px; < 1 if it does not fit."""
        for index in range(self.convs):
            if self.padding != "same":
                pad = 0 if self.padding == "valid" else self.padding
                stride = self.stride if index == 0 else 1
                size = (size + 2 * pad - self.kernel) // stride + 1
            if size < 1:
                return 0
        return size // 2 if self.pool else size


def _feature_map_size(blocks: Sequence[ConvBlock], input_size: int) -> int:
    """Side (px) of the last feature map; 0 when ``input_size`` is too small for the blocks."""
    size = input_size
    for block in blocks:
        size = block.output_size(size)
        if size < 1:
            return 0
    return size


def _min_input_size(blocks: Sequence[ConvBlock]) -> int:
    # Output size grows with input size, so the first size that fits is the minimum.
    return next(size for size in range(1, 1 << 16) if _feature_map_size(blocks, size) >= 1)


def _normed(layers: list[nn.Module], norm: nn.Module | None, *, after_activation: bool) -> list[nn.Module]:
    """[linear layer, activation] with ``norm`` inserted before or after the activation."""
    if norm is None:
        return layers
    return [*layers, norm] if after_activation else [layers[0], norm, *layers[1:]]


def _conv_stage(block: ConvBlock, in_chans: int, *, activation: str, bn_after_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(block.convs):
        conv = nn.Conv2d(
            in_chans if index == 0 else block.filters,
            block.filters,
            block.kernel,
            stride=block.stride if index == 0 else 1,
            padding=block.padding,
        )
        norm = nn.BatchNorm2d(block.filters) if block.batch_norm else None
        act = make_activation(block.activation or activation)
        layers += _normed([conv, act], norm, after_activation=bn_after_activation)
    if block.pool:
        pool = POOLS[block.pool]()
        if block.pool == "max" and isinstance(layers[-1], _MONOTONIC):
            # max-pool commutes with a non-decreasing activation: pooling first gives the same output
            # with the activation on 4x fewer values (ReLU backward was 28% of the S1 grid CNN's step)
            layers.insert(len(layers) - 1, pool)
        else:
            layers.append(pool)
    if block.dropout:
        layers.append(nn.Dropout(block.dropout))
    return nn.Sequential(*layers)


_MONOTONIC = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh)  # non-decreasing: max(f(x)) == f(max(x))


_DEFAULT_BLOCKS = (
    ConvBlock(32, batch_norm=True, pool="max"),
    ConvBlock(64, batch_norm=True, pool="max"),
    ConvBlock(128, batch_norm=True, pool="max"),
)


@register("cnn", min_input_size=_min_input_size(_DEFAULT_BLOCKS))
def cnn(
    *,
    in_chans: int,
    num_classes: int,
    input_size: int,
    blocks: Sequence[ConvBlock | Mapping[str, Any]] = _DEFAULT_BLOCKS,
    dense: Sequence[int] = (),
    dense_batch_norm: bool = False,
    dense_dropout: float = 0.0,
    head_dropout: float = 0.0,
    global_pool: bool = False,
    activation: str = "relu",
    bn_after_activation: bool = False,
    init: str = "default",
) -> CNN:
    """A general conv net: conv blocks → flatten or global pool → dense layers → Dense(num_classes).

    Convs and dense layers keep their biases even before BatchNorm, as Keras does,
    so parameter counts match Keras models built the same way.

    Args:
        in_chans: Image channels.
        num_classes: Output units.
        input_size: Square image side, px; sizes the flatten and is checked against the blocks.
        blocks: ConvBlocks or mappings of their fields, input side first.
        dense: Width of each hidden dense layer after the features.
        dense_batch_norm: BatchNorm1d after each hidden dense layer.
        dense_dropout: Drop probability after each hidden dense layer.
        head_dropout: Drop probability just before the output layer.
        global_pool: Average each feature map to one value instead of flattening.
        activation: Name from ``ACTIVATIONS`` for every layer whose block does not name one.
        bn_after_activation: Order layer → activation → BatchNorm (as some Keras
            recipes do) instead of layer → BatchNorm → activation.
        init: ``"default"`` (torch's) or ``"he_uniform"`` (Keras', zero biases) for
            every conv and hidden dense layer; the output layer keeps torch's.

    Raises:
        UserError: A bad option, or ``input_size`` too small for the blocks.
    """
    if isinstance(blocks, str | Mapping) or not isinstance(blocks, Sequence) or not blocks:
        raise UserError(f"blocks must be a non-empty list of conv blocks; got {blocks!r}")
    stages = [ConvBlock.coerce(block) for block in blocks]
    dense = check_ints("dense", dense)
    dense_dropout = check_rate("dense_dropout", dense_dropout)
    head_dropout = check_rate("head_dropout", head_dropout)
    check_choice("activation", activation, ACTIVATIONS)
    for option, flag in (
        ("dense_batch_norm", dense_batch_norm),
        ("global_pool", global_pool),
        ("bn_after_activation", bn_after_activation),
    ):
        check_bool(option, flag)
    side = _feature_map_size(stages, input_size)
    if side < 1:
        raise UserError(
            f"input_size {input_size} px is too small for these conv blocks; they need at least "
            f"{_min_input_size(stages)} px (use fewer pools/strides, 'same' padding or bigger images)"
        )

    body: list[nn.Module] = []
    channels = in_chans
    for stage in stages:
        body.append(_conv_stage(stage, channels, activation=activation, bn_after_activation=bn_after_activation))
        channels = stage.filters
    if global_pool:
        body += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        num_features = channels
    else:
        body.append(nn.Flatten())  # reshapes, so channels_last inputs work too
        num_features = channels * side**2

    head: list[nn.Module] = []
    width = num_features
    for units in dense:
        norm = nn.BatchNorm1d(units) if dense_batch_norm else None
        dense_layers = [nn.Linear(width, units), make_activation(activation)]
        head += _normed(dense_layers, norm, after_activation=bn_after_activation)
        if dense_dropout:
            head.append(nn.Dropout(dense_dropout))
        width = units
    if head_dropout:
        head.append(nn.Dropout(head_dropout))

    features, head_module = nn.Sequential(*body), nn.Sequential(*head)
    apply_init(features, init)
    apply_init(head_module, init)
    return CNN(
        features=features,
        num_features=num_features,
        head=head_module,
        head_features=width,
        num_classes=num_classes,
    )
