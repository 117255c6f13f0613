"""The README's main job: synthetic faces -> ``fit`` (within a budget) -> report.html, model.onnx."""

from __future__ import annotations

from pathlib import Path

from tellapart._log import say as _say
from tellapart.data import SynthConfig, open_source, synth_faces
from tellapart.autofit import FitConfig, FitResult, fit

__all__ = ["run_demo"]


def run_demo(
    out: str | Path = "tellapart-demo",
    *,
    pairs: int = 600,
    image_size: int = 256,
    budget_s: float = 180.0,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Writes the built-in data once, then ``fit`` on it; re-running resumes and reuses what is done."""
    out = Path(out)
    data = out / "data"
    if not (data / "face").is_dir():
        _say(progress, f"[demo] writing {2 * pairs} synthetic images to {data} (faces and their comic twins)")
        synth_faces(data, SynthConfig(pairs=pairs, size=image_size, seed=seed), progress=progress)
    else:
        _say(progress, f"[demo] reusing the images in {data}")
    _say(progress, f"[demo] tellapart fit {data} --budget {budget_s:g}s: pairs kept within one split")
    return fit(open_source(data, kind="paired"), out / "fit", FitConfig(budget_s=budget_s, seed=seed), progress=progress)
