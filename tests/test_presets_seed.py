"""The seed presets are the seeds' networks: Keras parameter counts, layer lists, which weights L2 reaches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tellapart.models import create_model
from tellapart.train import config_from_dict
from tellapart.train._builders import build_optimizer

# Parameter counts of the Keras twins in bench/bench_train.py, obtained by building each
# twin with Keras 3 (.venv-bench/bin/python) and calling ``model.count_params()``, which
# includes BatchNormalization's moving mean and variance (4 numbers per channel).
KERAS_S0_FACES_CNN = 822_329  # s0: 64×64×3, Dense(1, sigmoid)
KERAS_S1_GRID_WINNER = 42_529  # s1: 150×150×1, Dense(1, sigmoid)
KERAS_S3_CIFAR_VGG = 404_778  # s3: 32×32×3, Dense(10, softmax); 403,882 trainable


def _keras_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: trainable ones plus BatchNorm's moving statistics."""
    moving = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in model.parameters()) + moving


@pytest.mark.parametrize(
    ("name", "in_chans", "num_classes", "size", "keras"),
    [
        ("s0_faces_cnn", 3, 1, 64, KERAS_S0_FACES_CNN),
        ("s1_grid_winner", 1, 1, 150, KERAS_S1_GRID_WINNER),
        ("s3_cifar_vgg", 3, 10, 32, KERAS_S3_CIFAR_VGG),
    ],
)
def test_preset_parameter_count_equals_its_keras_twin(name: str, in_chans: int, num_classes: int, size: int, keras: int) -> None:
    model = create_model(name, in_chans=in_chans, num_classes=num_classes, input_size=size)
    assert _keras_count(model) == keras


def test_s3_has_two_32_convs_two_64_convs_and_one_128_conv() -> None:
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    kinds = [[type(m).__name__ for m in stage] for stage in model.features[:3]]
    conv_mish_bn = ["Conv2d", "Mish", "BatchNorm2d"]
    assert kinds[0] == conv_mish_bn * 2 + ["MaxPool2d", "Dropout"]
    assert kinds[1] == conv_mish_bn * 2 + ["MaxPool2d", "Dropout"]
    assert kinds[2] == conv_mish_bn + ["MaxPool2d", "Dropout"]
    assert [stage[-1].p for stage in model.features[:3]] == [0.2, 0.3, 0.4]
    assert [type(m).__name__ for m in model.head] == ["Linear", "Mish", "BatchNorm1d", "Dropout"]
    assert model.head[0].out_features == 128 and model.head[-1].p == 0.5
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_s3_weight_decay_is_twice_the_keras_l2_factor() -> None:
    # Keras L2(1e-3) adds 1e-3·Σw² to the loss (gradient 2e-3·w); torch Adam adds wd·w.
    assert create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32).default_weight_decay == 2e-3
    assert create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32, l2=0.0).default_weight_decay == 0.0


def _decayed(model: nn.Module, weight_decay: float | None = None) -> set[int]:
    cfg = config_from_dict({"model": {"name": "cnn"}, "optim": {"name": "adam", "weight_decay": weight_decay}})
    groups = build_optimizer(model, cfg).param_groups
    return {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def test_s3_decays_conv_kernels_only_as_the_seed_regularised() -> None:
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    decayed = _decayed(model)
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert decayed == {id(w) for w in convs}
    dense = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(dense) == 2 and not {id(w) for w in dense} & decayed  # hidden Dense(128) and the output layer
    groups = build_optimizer(model, config_from_dict({"model": {"name": "cnn"}})).param_groups
    assert {g["weight_decay"] for g in groups} == {2e-3, 0.0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # nothing left out


def test_other_models_still_decay_every_weight_matrix() -> None:
    model = create_model("s0_faces_cnn", in_chans=3, num_classes=1, input_size=64)
    weights = {id(p) for p in model.parameters() if p.ndim > 1}
    assert _decayed(model, weight_decay=1e-4) == weights
    assert {id(p) for p in model.decay_parameters()} == weights


def test_reset_classifier_keeps_conv_only_decay() -> None:
    model = create_model("s3_cifar_vgg", in_chans=3, num_classes=10, input_size=32)
    model.reset_classifier(4)
    assert id(model.classifier.weight) not in _decayed(model)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
