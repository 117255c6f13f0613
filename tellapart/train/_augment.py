"""Batched tensor augmentations: pure functions of (batch, generator), one kernel per batch.

Each sample draws its own parameters from an explicit ``torch.Generator`` (airbench's
``batch_flip_lr`` style), so a run's augmentations are reproducible and testable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._config import AugmentConfig

__all__ = ["augment_batch", "random_affine", "random_hflip", "color_jitter", "cutout", "trivial_augment"]


def _uniform(n: int, bound: float, gen: torch.Generator) -> torch.Tensor:
    """n samples uniform in [-bound, bound]."""
    return (torch.rand(n, generator=gen) * 2.0 - 1.0) * bound


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def random_affine(
    x: torch.Tensor, gen: torch.Generator, *, rotate: float, translate: float, scale: float, black: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotation (degrees), translation (fraction of side) and zoom per sample, bilinear.

    Uncovered borders are filled with ``black`` (the normalised black pixel), else with 0.
    """
    n = x.shape[0]
    angle = _uniform(n, math.radians(rotate), gen)
    zoom = 1.0 + _uniform(n, scale, gen)
    tx, ty = _uniform(n, 2.0 * translate, gen), _uniform(n, 2.0 * translate, gen)  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if black is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    zero = black.to(x.device, x.dtype)
    return F.grid_sample(x - zero, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + zero


def color_jitter(
    x: torch.Tensor, gen: torch.Generator, *, brightness: float, contrast: float, black: torch.Tensor | None = None
) -> torch.Tensor:
    """Relative brightness and contrast changes per sample, in pixel terms.

    Inputs are normalised, ``(p - mean) / std``, so a black pixel sits at ``black = -mean / std``
    (per channel, shape (1, C, 1, 1)); brightness scales the distance from black, as it does
    for raw pixels. (Scaling the normalised mean, which is about 0, changed almost nothing.)
    Contrast scales each image's distance from its own mean. ``black`` None: inputs in [0, 1].
    """
    n = x.shape[0]
    b = (1.0 + _uniform(n, brightness, gen)).to(x.device, x.dtype).view(-1, 1, 1, 1)
    c = (1.0 + _uniform(n, contrast, gen)).to(x.device, x.dtype).view(-1, 1, 1, 1)
    zero = torch.zeros((), device=x.device, dtype=x.dtype) if black is None else black.to(x.device, x.dtype)
    x = (x - zero) * b + zero
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


#: TrivialAugment's ops that make sense for every kind of image (no flips, no colour inversion):
#: identity, rotate (deg), shear x/y (fraction), shift x/y (fraction of side), brightness, contrast.
_TRIVIAL_OPS = ("identity", "rotate", "shear_x", "shear_y", "shift_x", "shift_y", "brightness", "contrast")
_TRIVIAL_MAX = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "shift_x": 0.15, "shift_y": 0.15, "brightness": 0.5, "contrast": 0.5}


def trivial_augment(x: torch.Tensor, gen: torch.Generator, *, black: torch.Tensor | None = None) -> torch.Tensor:
    """TrivialAugment, batched: each image gets one op drawn uniformly, at a uniform random strength.

    torchvision's ``TrivialAugmentWide`` draws one op per call, so a batch would share it; here
    every sample draws its own, and the geometric ops run as one ``affine_grid`` for the batch.
    """
    n = x.shape[0]
    op = torch.randint(len(_TRIVIAL_OPS), (n,), generator=gen)
    strength = _uniform(n, 1.0, gen)  # signed, in [-1, 1]

    def amount(name: str) -> torch.Tensor:
        return torch.where(op == _TRIVIAL_OPS.index(name), strength * _TRIVIAL_MAX[name], torch.zeros(n))

    angle = torch.deg2rad(amount("rotate"))
    sx, sy = amount("shear_x"), amount("shear_y")
    tx, ty = 2.0 * amount("shift_x"), 2.0 * amount("shift_y")  # grid units span 2 per side
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin + sx, tx], 1), torch.stack([sin + sy, cos, ty], 1)], 1
    ).to(x.device, x.dtype)
    geometric = (op >= 1) & (op <= 5)
    if bool(geometric.any()):
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        zero = torch.zeros((), device=x.device, dtype=x.dtype) if black is None else black.to(x.device, x.dtype)
        moved = F.grid_sample(x - zero, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + zero
        x = torch.where(geometric.to(x.device).view(-1, 1, 1, 1), moved, x)
    b = (1.0 + amount("brightness")).to(x.device, x.dtype).view(-1, 1, 1, 1)
    c = (1.0 + amount("contrast")).to(x.device, x.dtype).view(-1, 1, 1, 1)
    zero = torch.zeros((), device=x.device, dtype=x.dtype) if black is None else black.to(x.device, x.dtype)
    x = (x - zero) * b + zero
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean


def cutout(x: torch.Tensor, gen: torch.Generator, *, size: float) -> torch.Tensor:
    """Zeroes one square of side ``size`` (fraction of the image side) at a random place per sample."""
    n, _, h, w = x.shape
    side = max(1, int(round(size * min(h, w))))
    cy = (torch.rand(n, generator=gen) * h).long().view(-1, 1, 1)
    cx = (torch.rand(n, generator=gen) * w).long().view(-1, 1, 1)
    top, left = cy - side // 2, cx - side // 2  # the square spans [top, top + side), clipped at the border
    ys = torch.arange(h).view(1, -1, 1)
    xs = torch.arange(w).view(1, 1, -1)
    inside = (ys >= top) & (ys < top + side) & (xs >= left) & (xs < left + side)
    return x.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, *, black: torch.Tensor | None = None) -> torch.Tensor:
    """Applies every enabled augmentation of ``cfg`` to a normalised NCHW batch.

    ``black``: the normalised value of a black pixel per channel (``-mean / std``), so brightness
    and the fill of shifted-in borders mean what they mean on raw pixels; None for [0, 1] inputs.
    """
    if cfg.hflip:
        x = random_hflip(x, gen)
    if cfg.rotate or cfg.translate or cfg.scale:
        x = random_affine(x, gen, rotate=cfg.rotate, translate=cfg.translate, scale=cfg.scale, black=black)
    if cfg.policy == "trivial":
        x = trivial_augment(x, gen, black=black)
    if cfg.brightness or cfg.contrast:
        x = color_jitter(x, gen, brightness=cfg.brightness, contrast=cfg.contrast, black=black)
    if cfg.cutout:
        x = cutout(x, gen, size=cfg.cutout)
    return x
