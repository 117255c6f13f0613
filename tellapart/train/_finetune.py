"""Transfer learning inside ``train``: freeze the backbone, train the head, then unfreeze its top.

The schedule Keras' transfer-learning guide follows, per epoch:

* **Frozen** (epochs before ``fine_tune.freeze_epochs``): the backbone (``model.features``) is
  frozen and in inference mode; only the head trains, at the configured lr. With augmentation
  off the backbone's features are computed once into the cache (``_features.py``) and the head
  trains on them, which gives the same result far faster.
* **Unfrozen** (the epochs after): the ``unfreeze`` part of the backbone trains too, everything
  at lr × ``lr_factor``; with ``discriminative`` each unfrozen block below the top gets that
  factor once more (ULMFiT's discriminative fine-tuning).

Backbone BatchNorm layers stay in inference mode (running statistics untouched, as Keras'
``base(x, training=False)``) unless ``train_bn``.

The optimizer holds every parameter from the start, grouped per backbone block (``lr_scale``
sets each group's share of the scheduled lr; 0 while frozen), so its layout never changes and a
resumed run loads its saved state as it is. Frozen parameters get no gradient, so no update.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tellapart._errors import UserError
from tellapart.data import Cache
from tellapart.models import Classifier

from ._config import FineTuneConfig, TrainConfig
from ._features import FeatureFeeder, HeadOnly, cached_features
from ._loop import Feeder, TrainState

__all__ = ["FineTune", "Unit", "backbone_units", "unfrozen_names"]


@dataclass(frozen=True)
class Unit:
    """One block of the backbone, the grain of ``unfreeze: K`` and of discriminative lrs."""

    name: str  # module path inside the model, e.g. features.body.blocks.6
    params: tuple[str, ...]  # parameter names inside the model, input side first


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".")[:-1] for n in names]
    prefix: list[str] = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        prefix.append(level[0])
    return ".".join(prefix)


def _unit_name(names: list[str]) -> str:
    """The module path the parameters share, or several joined by '+' (timm puts conv_head, bn2 with the last block)."""
    common = _common_prefix(names)
    if common:
        return common
    tops: dict[str, list[str]] = {}
    for name in names:
        tops.setdefault(name.split(".")[0], []).append(name)
    return "+".join(_common_prefix(members) or top for top, members in tops.items())


def backbone_units(model: Classifier) -> list[Unit]:
    """The backbone's blocks, input side first.

    timm backbones use timm's own fine-grained grouping (stem, each block, the final conv);
    other classifiers use the children of ``features`` that hold parameters.
    """
    features = model.features
    body = getattr(features, "body", None)
    groups: list[list[str]]
    if body is not None and hasattr(body, "group_matcher"):
        from timm.models import group_parameters

        prefix = "features.body."
        groups = [list(names) for names in group_parameters(body, body.group_matcher(coarse=False)).values()]
    else:
        prefix = "features."
        groups = [
            [f"{child}.{name}" for name, _ in module.named_parameters()]
            for child, module in features.named_children()
            if any(True for _ in module.parameters())
        ]
    units = [Unit(prefix + _unit_name(names), tuple(prefix + n for n in names)) for names in groups if names]
    covered = {n for u in units for n in u.params}
    rest = tuple(f"features.{n}" for n, _ in features.named_parameters() if f"features.{n}" not in covered)
    if rest:  # parameters no group claimed: one more unit on top
        units.append(Unit("features", rest))
    return units


def unfrozen_names(units: list[Unit], unfreeze: int | str) -> set[str]:
    """Backbone parameter names ``unfreeze`` selects: "all", "none", the top K units, or name prefixes.

    Prefixes are comma-separated and match whole name parts, inside the model
    (``features.body.blocks.6``) or inside the backbone (``blocks.6``, ``conv_head``).

    Raises:
        UserError: K larger than the number of units, or a prefix that matches nothing.
    """
    everything = [n for u in units for n in u.params]
    if unfreeze == "all":
        return set(everything)
    if unfreeze == "none":
        return set()
    if isinstance(unfreeze, int) and not isinstance(unfreeze, bool):
        if not 0 <= unfreeze <= len(units):
            raise UserError(
                f"fine_tune.unfreeze={unfreeze}, but the backbone has {len(units)} blocks "
                f"({units[0].name} … {units[-1].name}); use 0-{len(units)} or 'all'"
            )
        return {n for u in units[len(units) - unfreeze :] for n in u.params}
    chosen: set[str] = set()
    for prefix in (p.strip() for p in str(unfreeze).split(",")):
        hits = {n for n in everything if any(_has_prefix(name, prefix) for name in _spellings(n))}
        if not prefix or not hits:
            raise UserError(
                f"fine_tune.unfreeze prefix {prefix!r} matches no backbone parameter; blocks are: "
                f"{', '.join(u.name for u in units)} (or give 'all', 'none' or a number of top blocks)"
            )
        chosen |= hits
    return chosen


def _spellings(name: str) -> list[str]:
    """A parameter's name inside the model and inside the backbone (features.body.blocks.6.x → blocks.6.x)."""
    return [name, *(name.removeprefix(root) for root in ("features.body.", "features.") if name.startswith(root))]


def _has_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


class _FrozenBase(nn.Module):
    """``model`` whose ``train()`` leaves frozen backbone parts in inference mode.

    Wholly frozen backbone: all of it in eval mode (Keras ``training=False``), so training through
    it equals training on its cached features. Partly unfrozen: its BatchNorm layers stay in eval
    mode, except, with ``train_bn``, those whose parameters train.
    """

    def __init__(self, model: Classifier, train_bn: bool) -> None:
        super().__init__()
        self.model = model
        self.train_bn = train_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def train(self, mode: bool = True) -> _FrozenBase:
        super().train(mode)
        if mode:
            features = self.model.features
            if not any(p.requires_grad for p in features.parameters()):
                features.eval()
            else:
                for layer in features.modules():
                    trains = any(p.requires_grad for p in layer.parameters(recurse=False))
                    if isinstance(layer, _BatchNorm) and not (self.train_bn and trains):
                        layer.eval()
        return self


class FineTune:
    """The ``fine_tune`` schedule of one run: call :meth:`regroup` once, :meth:`begin_epoch` every epoch.

    Inactive (``freeze_epochs`` 0 and ``unfreeze`` "all"), it changes nothing.
    """

    def __init__(self, model: Classifier, cfg: TrainConfig, cache: Cache, *, progress: bool = True) -> None:
        self.model = model
        self.cfg: FineTuneConfig = cfg.fine_tune
        self.augment = cfg.augment.enabled
        self.eval_batch_size = cfg.eval_batch_size
        self.cache = cache
        self.progress = progress
        self.active = self.cfg.freeze_epochs > 0 or self.cfg.unfreeze != "all"
        self.units = backbone_units(model) if self.active else []
        if self.active:
            unfrozen_names(self.units, self.cfg.unfreeze)  # a bad spec fails now, not after the frozen epochs
        self._phase: str | None = None
        self._features: np.ndarray | None = None
        self._head_only = HeadOnly(model)
        self._through = _FrozenBase(model, self.cfg.train_bn)
        self._optimizer: torch.optim.Optimizer | None = None

    def regroup(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Regroups a fresh ``optimizer`` by backbone unit (decay kept off biases and norms); same object back.

        Every parameter is in it from the start, so the layout is the same in every phase.
        """
        if not self.active:
            return optimizer
        if optimizer.state:
            raise RuntimeError("regroup a fresh optimizer, before any step")
        decay = max((g.get("weight_decay", 0.0) for g in optimizer.param_groups), default=0.0)
        params = dict(self.model.named_parameters())
        in_units = {n for u in self.units for n in u.params}
        head = tuple(n for n in params if n not in in_units)
        # One group pair per unit only when their lrs differ: every group costs a little on every step.
        if self.cfg.discriminative:
            blocks = [(u.name, u.params) for u in self.units]
        else:
            blocks = [("backbone", tuple(n for u in self.units for n in u.params))]
        optimizer.param_groups.clear()
        for name, names in [*blocks, ("head", head)]:
            for suffix, group_decay, keep in (("", decay, lambda p: p.ndim > 1), (":no_decay", 0.0, lambda p: p.ndim <= 1)):
                chosen = [params[n] for n in names if keep(params[n])]
                if chosen:
                    optimizer.add_param_group(
                        {"params": chosen, "weight_decay": group_decay, "lr_scale": 1.0, "name": name + suffix}
                    )
        self._optimizer = optimizer
        return optimizer

    def phase(self, epoch: int) -> str:
        """"frozen" (head only) or "unfrozen" (``unfreeze`` trains too) for 0-based ``epoch``."""
        return "frozen" if epoch < self.cfg.freeze_epochs else "unfrozen"

    def begin_epoch(self, state: TrainState, feeder: Feeder, rows: np.ndarray) -> Feeder:
        """Sets up epoch ``state.epoch``: trainable parameters, lr scales, ``state.model`` and its inputs.

        Args:
            state: The run's state; its ``model`` becomes the network this epoch trains.
            feeder: The pixel feeder.
            rows: Cache rows the run reads (train and val), for the feature cache.

        Returns:
            The feeder this epoch's ``state.model`` takes: ``feeder``, or cached features.
        """
        if not self.active:
            return feeder
        phase = self.phase(state.epoch)
        trainable = set() if phase == "frozen" else unfrozen_names(self.units, self.cfg.unfreeze)
        if phase != self._phase:
            self._apply(trainable, lr_factor=self.cfg.lr_factor if phase == "unfrozen" and self.cfg.freeze_epochs else 1.0)
            self._log_phase(state.epoch, phase, trainable)
            self._phase = phase
        if not trainable and self.cfg.cache_features and not self.augment:
            if self._features is None:
                self._features = cached_features(
                    self.model, feeder, self.cache, rows, batch_size=self.eval_batch_size, progress=self.progress
                )
            state.model = self._head_only
            # The head alone trains in fp32: its small matmuls gain nothing from bf16 autocast (slower on the CPU).
            runtime = dataclasses.replace(feeder.runtime, amp_dtype=None)
            return FeatureFeeder(self._features, feeder.labels, feeder.mean, feeder.std, runtime)
        state.model = self._through
        return feeder

    def _apply(self, trainable: set[str], *, lr_factor: float) -> None:
        in_units = {n for u in self.units for n in u.params}
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trainable or name not in in_units)
        # lr × lr_factor for the head and the top unfrozen unit, × discriminative once more per unit below.
        scale: dict[str, float] = {"head": lr_factor}
        step = self.cfg.discriminative or 1.0
        rank = 0
        for unit in reversed(self.units):
            if any(n in trainable for n in unit.params):
                scale[unit.name] = lr_factor * step**rank
                rank += 1
            else:
                scale[unit.name] = 0.0
        scale["backbone"] = lr_factor if trainable else 0.0
        if self._optimizer is not None:
            for group in self._optimizer.param_groups:
                group["lr_scale"] = scale[group["name"].removesuffix(":no_decay")]

    def _log_phase(self, epoch: int, phase: str, trainable: set[str]) -> None:
        if not self.progress:
            return
        params = dict(self.model.named_parameters())
        backbone = sum(params[n].numel() for u in self.units for n in u.params)
        unfrozen = sum(params[n].numel() for n in trainable)
        units = sum(any(n in trainable for n in u.params) for u in self.units)
        text = (
            f"fine-tune: epoch {epoch + 1} trains the head only (backbone frozen, {backbone:,} params)"
            if phase == "frozen"
            else f"fine-tune: epoch {epoch + 1} unfreezes {units} of {len(self.units)} backbone blocks "
            f"({unfrozen:,} of {backbone:,} params)"
            + (f" at lr x {self.cfg.lr_factor:g}" if self.cfg.freeze_epochs else "")
            + (f", x {self.cfg.discriminative:g} per block down" if self.cfg.discriminative else "")
        )
        print(text, file=sys.stderr)

