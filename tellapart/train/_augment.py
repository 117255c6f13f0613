"""Batched tensor augmentations: pure functions of (batch, generator), one kernel per batch.

Each sample draws its own parameters from an explicit ``torch.Generator`` (airbench's
``batch_flip_lr`` style), so a run's augmentations are reproducible and testable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._config import AugmentConfig

__all__ = ["augment_batch", "random_affine", "random_hflip", "color_jitter", "cutout"]


def _uniform(n: int, bound: float, gen: torch.Generator) -> torch.Tensor:
    """n samples uniform in [-bound, bound]."""
    return (torch.rand(n, generator=gen) * 2.0 - 1.0) * bound


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def random_affine(x: torch.Tensor, gen: torch.Generator, *, rotate: float, translate: float, scale: float) -> torch.Tensor:
    """Rotation (degrees), translation (fraction of side) and zoom per sample, bilinear, zero fill."""
    n = x.shape[0]
    angle = _uniform(n, math.radians(rotate), gen)
    zoom = 1.0 + _uniform(n, scale, gen)
    tx, ty = _uniform(n, 2.0 * translate, gen), _uniform(n, 2.0 * translate, gen)  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(x: torch.Tensor, gen: torch.Generator, *, brightness: float, contrast: float) -> torch.Tensor:
    """Relative brightness and contrast changes per sample (on normalised inputs: scale and shift)."""
    n = x.shape[0]
    b = (1.0 + _uniform(n, brightness, gen)).to(x.device, x.dtype).view(-1, 1, 1, 1)
    c = (1.0 + _uniform(n, contrast, gen)).to(x.device, x.dtype).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * c + mean * b


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


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Applies every enabled augmentation of ``cfg`` to a normalised NCHW batch."""
    if cfg.hflip:
        x = random_hflip(x, gen)
    if cfg.rotate or cfg.translate or cfg.scale:
        x = random_affine(x, gen, rotate=cfg.rotate, translate=cfg.translate, scale=cfg.scale)
    if cfg.brightness or cfg.contrast:
        x = color_jitter(x, gen, brightness=cfg.brightness, contrast=cfg.contrast)
    if cfg.cutout:
        x = cutout(x, gen, size=cfg.cutout)
    return x
