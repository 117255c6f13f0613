"""Export a run's model to ONNX (torch.onnx's exporter): raw uint8 pixels in by default, parity checked."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tellapart._errors import UserError
from tellapart._files import commit_file
from tellapart.data import to_tensor
from tellapart.train import load_model, logits_to_probs

__all__ = ["INPUTS", "ExportResult", "export_onnx", "PARITY_ATOL"]

#: Largest allowed absolute difference between onnxruntime's and PyTorch's probabilities.
PARITY_ATOL = 1e-4


#: ONNX input kinds: ``raw`` takes uint8 NHWC pixels at the cache size and normalises inside the
#: graph (the default: a consumer only decodes and resizes); ``normalized`` takes float NCHW, normalised.
INPUTS = ("raw", "normalized")


@dataclass(frozen=True)
class ExportResult:
    path: Path  # the model file; a failed parity check leaves it as NAME.parity-failed.onnx
    max_abs_diff: float  # worst |p_onnx - p_torch| over the parity batch (probabilities)
    tolerance: float
    samples: int
    inputs: str = "raw"  # "raw" (uint8 NHWC) or "normalized" (float NCHW)
    parity_images: str = ""  # what the parity check ran on, in words

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


class _WithProbabilities(torch.nn.Module):
    """Outputs class probabilities (softmax, or [1-p, p] for one logit), as predict does."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_to_probs(self.model(x))


class _FromPixels(torch.nn.Module):
    """uint8 NHWC pixels -> ``(x / 255 - mean) / std`` NCHW -> probabilities, all inside the graph."""

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = _WithProbabilities(model)
        self.register_buffer("scale", torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        return self.model(x * self.scale + self.shift)


def export_onnx(
    run: str | Path, out: str | Path | None = None, *, samples: int = 16, seed: int = 0, inputs: str = "raw"
) -> ExportResult:
    """Writes ``model.onnx`` (output ``probs``) and checks onnxruntime against PyTorch before keeping it.

    Args:
        run: a run folder or checkpoint file.
        out: the model file (default: ``RUN/model.onnx``).
        samples: images in the parity check: the run's cache's train/val images when the cache
            is here, else random uint8 images (``ExportResult.parity_images`` says which).
        inputs: ``raw`` (default): input ``pixels``, uint8 NHWC at the cache size, RGB or luma,
            normalised inside the graph. ``normalized``: input ``image``, float32 NCHW,
            ``(pixels/255 - mean) / std``.

    The preprocessing (size, channels, fit, mean/std, input kind) and class names are stored in
    the model's metadata (``tellapart.preprocess``, ``tellapart.class_names``), so a consumer can
    feed it right. Above the tolerance the file is kept as ``NAME.parity-failed.onnx`` for
    inspection, never as ``NAME``.
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'tellapart[export]'") from None
    if inputs not in INPUTS:
        raise UserError(f"ONNX input must be one of {', '.join(INPUTS)}, got {inputs!r}")
    run = Path(run)
    loaded = load_model(run)
    pre = loaded.preprocess
    out_path = Path(out) if out else (run if run.is_dir() else run.parent) / "model.onnx"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    channels, side = (1 if pre["grayscale"] else 3), int(pre["size"])
    raw = inputs == "raw"
    wrapper = (_FromPixels(loaded.model, pre["mean"], pre["std"]) if raw else _WithProbabilities(loaded.model)).eval()
    input_name = "pixels" if raw else "image"
    gen = torch.Generator().manual_seed(seed)
    example = (
        torch.randint(0, 256, (2, side, side, channels), generator=gen, dtype=torch.uint8)
        if raw else torch.randn(2, channels, side, side, generator=gen)
    )
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        wrapper, (example,), input_names=[input_name], output_names=["probs"],
        dynamic_shapes={"pixels" if raw else "x": {0: batch}}, dynamo=True, external_data=False, verbose=False,
    )
    assert program is not None
    program.save(str(tmp))
    model_proto = onnx.load(str(tmp))
    described = (
        f"uint8 NHWC (N, {side}, {side}, {channels}), 0-255, {'luma' if channels == 1 else 'RGB'}, resized as 'fit' says; normalised inside the model"
        if raw else "float32 NCHW, (pixels/255 - mean) / std, RGB or luma as 'grayscale' says"
    )
    meta = {
        "tellapart.preprocess": json.dumps({**pre, "input_kind": inputs, "input": described}),
        "tellapart.class_names": json.dumps(loaded.class_names),
        "tellapart.model": json.dumps(loaded.checkpoint["model"]),
    }
    onnx.helper.set_model_props(model_proto, meta)
    onnx.save(model_proto, str(tmp))

    pixels, said = _parity_pixels(run, samples, (side, side, channels), seed)
    with torch.no_grad():
        if raw:
            feed = pixels
            expected = wrapper(torch.from_numpy(pixels)).numpy()
        else:
            feed = to_tensor(pixels, pre["mean"], pre["std"], channels_last=False).numpy()
            expected = wrapper(torch.from_numpy(feed)).numpy()
        reference = logits_to_probs(loaded.model(to_tensor(pixels, pre["mean"], pre["std"], channels_last=False))).numpy()
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    got = session.run(["probs"], {input_name: feed})[0]
    diff = float(max(np.max(np.abs(got - expected)), np.max(np.abs(got - reference))))
    result = ExportResult(out_path, diff, PARITY_ATOL, len(pixels), inputs, said)
    if not result.ok:
        failed = out_path.with_name(f"{out_path.stem}.parity-failed{out_path.suffix}")
        commit_file(tmp, failed)
        return dataclasses.replace(result, path=failed)
    commit_file(tmp, out_path)
    return result


def _parity_pixels(run: Path, samples: int, shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, str]:
    """Up to ``samples`` real train/val images of the run's cache (never test), else random uint8 images."""
    samples = max(1, samples)
    try:
        from tellapart.evaluate import run_cache

        cache = run_cache(run if run.is_dir() else run.parent.parent)
        rows = np.concatenate([cache.indices("train"), cache.indices("val")])[:samples]
        if len(rows) and tuple(cache.pixels.shape[1:]) == shape:
            return np.ascontiguousarray(cache.pixels[np.sort(rows)]), f"{len(rows)} images from the run's cache ({cache.path})"
        why = "the run's cache holds other-sized images"
    except UserError as exc:
        why = str(exc)
    rng = np.random.default_rng(seed + 1)
    return rng.integers(0, 256, (samples, *shape), dtype=np.uint8), f"{samples} random uint8 images ({why})"
