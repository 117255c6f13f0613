"""Notes on a chosen image size that the data package owns, so prepare and fit say the same."""

from __future__ import annotations

__all__ = ["UPSCALE_NOTE_FACTOR", "upscale_note"]

#: Above this factor (cache side / median short side) most images are blown up, not resized:
#: the cache grows with the square of the side while adding no detail.
UPSCALE_NOTE_FACTOR = 1.5


def upscale_note(size: int, median_short_side: int) -> str | None:
    """Why ``size`` px upscales most images, or None when it does not by more than 1.5x.

    Args:
        size: the cache's side, px.
        median_short_side: the median of the images' shorter sides, px.
    """
    if median_short_side <= 0 or size <= UPSCALE_NOTE_FACTOR * median_short_side:
        return None
    return (
        f"--size {size} upscales the median image ({median_short_side} px short side) "
        f"{size / median_short_side:.1f}x: training gets slower and the cache larger, with no detail added; "
        f"--size {median_short_side} keeps the images' own size"
    )
