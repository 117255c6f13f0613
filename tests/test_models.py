"""Every registered model trains at tiny size; the registry is strict; presets match Keras."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tellapart._errors import UserError
from tellapart.models import (
    Classifier,
    ConvBlock,
    Mish,
    create_model,
    list_models,
    min_input_size,
    model_kwargs,
    register,
)


def _tiny_size(name: str) -> int:
    return max(32, min_input_size(name))


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_every_model_follows_the_contract(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    size = _tiny_size(name)
    model = create_model(name, in_chans=in_chans, num_classes=3, input_size=size)
    assert isinstance(model, Classifier)
    x = torch.randn(2, in_chans, size, size)

    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()
    features = model.forward_features(x)
    assert features.shape == (2, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (2, model.classifier.in_features)
    # The CPU trains convs faster in channels_last; the model must give the same answer.
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-5)

    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    # A checkpoint rebuilds the fine-tuned network from model_name and model_args.
    rebuilt = create_model(model.model_name, **model.model_args)
    assert rebuilt.num_classes == 5
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_min_input_size_is_exact(name: str) -> None:
    smallest = min_input_size(name)
    create_model(name, in_chans=1, num_classes=2, input_size=smallest)
    with pytest.raises(UserError, match="input_size"):
        create_model(name, in_chans=1, num_classes=2, input_size=smallest - 1)


def test_too_small_input_names_the_minimum() -> None:
    with pytest.raises(UserError, match="at least 13 px"):
        create_model("s0_faces_cnn", in_chans=3, num_classes=1, input_size=12)


def test_single_logit_for_bce() -> None:
    model = create_model("linear", in_chans=1, num_classes=1, input_size=4)
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 1)


def test_registry_refuses_duplicates() -> None:
    def builder(*, in_chans: int, num_classes: int, input_size: int) -> Classifier:
        raise AssertionError("never built")

    before = list_models()
    with pytest.raises(ValueError, match="'linear' is already registered"):
        register("linear")(builder)
    assert list_models() == before


def test_registry_refuses_positional_builders() -> None:
    def builder(in_chans: int, *, num_classes: int, input_size: int) -> Classifier:
        raise AssertionError("never built")

    with pytest.raises(TypeError, match="keyword-only"):
        register("test_positional")(builder)
    assert "test_positional" not in list_models()


def test_list_models_filters_and_sorts() -> None:
    assert list_models("s*") == ["s0_faces_cnn", "s1_grid_winner", "s3_cifar_vgg"]
    assert list_models() == sorted(list_models())
    assert {"linear", "mlp", "cnn", "grid_cnn"} <= set(list_models())


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UserError, match=r"did you mean 'cnn'.*list_models\(\)"):
        create_model("cnnn", in_chans=3, num_classes=2, input_size=32)


def test_unknown_option_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(UserError) as error:
        create_model("mlp", in_chans=1, num_classes=2, input_size=8, hiden=(8,))
    message = str(error.value)
    assert "'hiden' (did you mean 'hidden'?)" in message
    assert "hidden, activation, dropout" in message


def test_model_kwargs_lists_defaults() -> None:
    assert model_kwargs("mlp") == {"hidden": (200, 60), "activation": "relu", "dropout": 0.0}
    assert model_kwargs("linear") == {}
    assert model_kwargs("s3_cifar_vgg") == {"l2": 1e-3}


def test_cnn_accepts_yaml_shaped_options() -> None:
    model = create_model(
        "cnn",
        in_chans=3,
        num_classes=4,
        input_size=16,
        blocks=[
            {"filters": 4, "convs": 2, "pool": "avg", "batch_norm": True},
            {"filters": 8, "padding": 1, "stride": 2},
        ],
        dense=[6],
        global_pool=True,
        activation="gelu",
    )
    assert model.num_features == 8
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"blocks": [{"filters": 4, "kernal": 3}]}, r"'kernal'.*kernel"),
        ({"blocks": [{"kernel": 3}]}, "needs 'filters'"),
        ({"blocks": [{"filters": 4, "padding": "full"}]}, "padding must be"),
        ({"blocks": [{"filters": 4, "stride": 2}]}, "padding 'same' needs stride 1"),
        ({"blocks": [{"filters": 4, "pool": "min"}]}, "pool must be one of max, avg"),
        ({"activation": "swish"}, "activation must be one of .*mish"),
        ({"init": "glorot"}, "init must be one of default, he_uniform"),
        ({"dense": "128"}, "dense must be a list"),
        ({"head_dropout": 1.0}, r"head_dropout must be a probability in \[0, 1\)"),
        ({"global_pool": "false"}, "global_pool must be true or false"),
    ],
)
def test_cnn_rejects_bad_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        create_model("cnn", in_chans=3, num_classes=2, input_size=16, **options)


def test_he_uniform_init_matches_keras() -> None:
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    # Keras he_uniform: U(±sqrt(6 / fan_in)), fan_in = 3 × 3 × 3 = 27; biases zero.
    assert first_conv.weight.abs().max() <= math.sqrt(6 / 27)
    assert first_conv.weight.abs().max() > 0.9 * math.sqrt(6 / 27)
    assert not first_conv.bias.any()
    assert model.default_weight_decay == 2e-3  # Keras L2(1e-3): gradient 2e-3·w


# Parameter counts of the Keras seeds. Keras counts a Conv2D as k·k·c_in·f + f and a
# Dense as d_in·d_out + d_out; a "valid" k×k conv with stride s maps n px to
# floor((n - k) / s) + 1 and a 2×2 pool maps n px to floor(n / 2).


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_s0_faces_cnn_matches_keras() -> None:
    # 64 px → conv 3×3/2: 31 px → conv 6×6/2: 13 px, so Flatten gives 13·13·24 = 4056.
    keras = (
        (3 * 3 * 3 * 12 + 12)  # Conv2D(12, 3)    336
        + (6 * 6 * 12 * 24 + 24)  # Conv2D(24, 6)    10,392
        + (4056 * 200 + 200)  # Dense(200)       811,400
        + (200 * 1 + 1)  # Dense(1)         201
    )
    assert keras == 822_329
    assert _n_params(create_model("s0_faces_cnn", in_chans=3, num_classes=1, input_size=64)) == keras


def test_grid_cnn_defaults_match_keras() -> None:
    # 150 → 148 → 74 → 72 → 36 → 34 → 17 px; Flatten gives 17·17·64 = 18,496.
    keras = (
        (3 * 3 * 1 * 64 + 64)  # Conv2D(64, 3)    640
        + 2 * (3 * 3 * 64 * 64 + 64)  # 2 × Conv2D(64, 3)  2 × 36,928
        + (18_496 * 2 + 2)  # Dense(2)         36,994
    )
    assert keras == 111_490
    assert _n_params(create_model("grid_cnn", in_chans=1, num_classes=2, input_size=150)) == keras


def test_grid_cnn_with_dense_and_dropout_matches_keras() -> None:
    # 64 → 62 → 31 → 29 → 14 px; Flatten gives 14·14·32 = 6272. Dropout has no parameters.
    keras = (
        (3 * 3 * 3 * 32 + 32)  # Conv2D(32, 3)    896
        + (3 * 3 * 32 * 32 + 32)  # Conv2D(32, 3)    9,248
        + (6272 * 32 + 32)  # Dense(32)        200,736
        + (32 * 1 + 1)  # Dense(1)         33
    )
    assert keras == 210_913
    model = create_model(
        "grid_cnn", in_chans=3, num_classes=1, input_size=64, conv_layers=2, width=32, dense_layers=1, dropout=0.5
    )
    assert _n_params(model) == keras
    assert isinstance(model.head[-1], nn.Dropout) and model.head[-1].p == 0.5


def test_s1_grid_winner_matches_keras() -> None:
    # 150 → 148 → 74 → 72 → 36 → 34 → 17 → 15 → 7 → 5 → 2 px; Flatten gives 2·2·32 = 128.
    keras = (
        (3 * 3 * 1 * 32 + 32)  # Conv2D(32, 3)    320
        + 4 * (3 * 3 * 32 * 32 + 32)  # 4 × Conv2D(32, 3)  4 × 9,248
        + (128 * 32 + 32)  # Dense(32)        4,128
        + (32 * 32 + 32)  # Dense(32)        1,056
        + (32 * 1 + 1)  # Dense(1)         33
    )
    assert keras == 42_529
    assert _n_params(create_model("s1_grid_winner", in_chans=1, num_classes=1, input_size=150)) == keras


def test_s3_cifar_vgg_matches_keras() -> None:
    # Keras counts 4 numbers per BatchNormalization channel (gamma, beta, moving mean,
    # moving variance); torch keeps gamma and beta as parameters and the moving
    # statistics as running_mean/running_var buffers, so those are added back.
    # 32 → 16 → 8 → 4 px after three pools; Flatten gives 4·4·128 = 2048.
    keras = (
        (3 * 3 * 3 * 32 + 32) + 4 * 32 + (3 * 3 * 32 * 32 + 32) + 4 * 32  # block 1  10,400
        + (3 * 3 * 32 * 64 + 64) + 4 * 64 + (3 * 3 * 64 * 64 + 64) + 4 * 64  # block 2  55,936
        + (3 * 3 * 64 * 128 + 128) + 4 * 128  # block 3: one conv  74,368
        + (2048 * 128 + 128) + 4 * 128  # Dense(128) + BN  262,784
        + (128 * 10 + 10)  # Dense(10)  1,290
    )
    assert keras == 404_778
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    moving_stats = sum(
        buffer.numel() for name, buffer in model.named_buffers() if name.endswith(("running_mean", "running_var"))
    )
    assert moving_stats == 2 * (32 + 32 + 64 + 64 + 128 + 128)  # Keras' non-trainable 896
    assert _n_params(model) + moving_stats == keras


def test_s3_cifar_vgg_layer_order_is_conv_mish_bn() -> None:
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    first_block = [type(m) for m in model.features[0]]
    assert first_block == [
        nn.Conv2d, Mish, nn.BatchNorm2d, nn.Conv2d, Mish, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout
    ]  # Mish: torch's values, a cheaper kernel (tests/test_mish.py)
    assert [type(m) for m in model.head] == [nn.Linear, Mish, nn.BatchNorm1d, nn.Dropout]


def test_conv_block_coerce_keeps_instances() -> None:
    block = ConvBlock(8, pool="max")
    assert ConvBlock.coerce(block) is block
    assert ConvBlock.coerce({"filters": 8, "pool": "max"}) == block


def test_max_pool_before_a_monotonic_activation_gives_the_same_output() -> None:
    """The cnn family pools before ReLU (4x fewer activations); Keras's order gives the same numbers."""
    model = create_model("grid_cnn", in_chans=1, num_classes=2, input_size=48, conv_layers=2, width=8).eval()
    stage = model.features[0]
    kinds = [type(m).__name__ for m in stage]
    assert kinds.index("MaxPool2d") < kinds.index("ReLU")  # the faster order is in use
    keras_order = torch.nn.Sequential(stage[0], stage[2], stage[1])  # conv -> relu -> pool
    x = torch.randn(3, 1, 48, 48)
    assert torch.allclose(stage(x), keras_order(x))
