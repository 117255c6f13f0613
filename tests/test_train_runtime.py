"""Device and precision choices: ``precision: auto`` on the CPU by kind of network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _fixtures_train import TINY_CNN, easy_cache, easy_images, fast_config  # noqa: F401 - fixtures

from tellapart.data import Cache
from tellapart.models import create_model
from tellapart.train import _builders, _device, resolve_runtime, train
from tellapart.train._device import mostly_grouped_convs


class _TinyDepthwise(torch.nn.Module):
    """A stem, then two depthwise-separable blocks: 2 of 5 convolutions grouped."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 8, 3, padding=1)]
        for _ in range(2):
            layers += [torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Conv2d(8, 8, 1)]
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


@pytest.fixture
def fast_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU has AVX-512 BF16, whatever it really has."""
    monkeypatch.setattr(_device, "cpu_has_fast_bf16", lambda: True)


def _auto_precision(model: torch.nn.Module) -> str:
    is_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    runtime = resolve_runtime("cpu", "auto", "auto", 0, is_conv=is_conv, grouped_convs=mostly_grouped_convs(model))
    return runtime.precision


@pytest.mark.usefixtures("fast_bf16_cpu")
def test_auto_precision_is_fp32_for_depthwise_nets_and_bf16_for_plain_cnns() -> None:
    timm = pytest.importorskip("timm")
    assert _auto_precision(_TinyDepthwise()) == "fp32"
    assert _auto_precision(timm.create_model("mobilenetv2_050", pretrained=False)) == "fp32"
    assert _auto_precision(create_model("cnn", in_chans=3, num_classes=2, input_size=32)) == "bf16"
    assert _auto_precision(create_model("mlp", in_chans=3, num_classes=2, input_size=32)) == "fp32"  # not a conv net


def test_grouped_convs_count_only_when_over_a_quarter() -> None:
    assert mostly_grouped_convs(_TinyDepthwise())  # 2 of 5
    one_of_four = torch.nn.Sequential(*(torch.nn.Conv2d(4, 4, 1, groups=4 if k == 0 else 1) for k in range(4)))
    assert not mostly_grouped_convs(one_of_four)
    assert not mostly_grouped_convs(torch.nn.Linear(3, 2))  # no convolutions at all


@pytest.mark.usefixtures("fast_bf16_cpu")
def test_train_passes_the_conv_kind_to_the_precision_choice(
    easy_cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = fast_config(*TINY_CNN, "precision=auto", epochs=1)
    assert train(easy_cache, cfg, tmp_path / "plain", progress=False).summary["precision"] == "bf16"
    monkeypatch.setattr(_builders, "mostly_grouped_convs", lambda model: True)
    assert train(easy_cache, cfg, tmp_path / "depthwise", progress=False).summary["precision"] == "fp32"
