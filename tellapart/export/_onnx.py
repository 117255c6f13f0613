"""Export a run's model to ONNX (torch.onnx's exporter) and check onnxruntime agrees with PyTorch."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tellapart._errors import UserError
from tellapart.train import load_model, logits_to_probs

__all__ = ["ExportResult", "export_onnx", "PARITY_ATOL"]

#: Largest allowed absolute difference between onnxruntime's and PyTorch's probabilities.
PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float  # worst |p_onnx - p_torch| over the parity batch (probabilities)
    tolerance: float
    samples: int

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


def export_onnx(run: str | Path, out: str | Path | None = None, *, samples: int = 16, seed: int = 0) -> ExportResult:
    """Writes ``model.onnx`` (input ``image``: float NCHW, normalised; output ``probs``) and checks parity.

    The preprocessing (size, channels, fit, mean/std) and class names are stored in the model's
    metadata (``tellapart.preprocess``, ``tellapart.class_names``), so a consumer can feed it right.
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'tellapart[export]'") from None
    run = Path(run)
    loaded = load_model(run)
    pre = loaded.preprocess
    out_path = Path(out) if out else (run if run.is_dir() else run.parent) / "model.onnx"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if pre["grayscale"] else 3
    wrapper = _WithProbabilities(loaded.model).eval()
    example = torch.randn(2, channels, pre["size"], pre["size"], generator=torch.Generator().manual_seed(seed))
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        wrapper, (example,), input_names=["image"], output_names=["probs"],
        dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False, verbose=False,
    )
    assert program is not None
    program.save(str(tmp))
    model_proto = onnx.load(str(tmp))
    meta = {
        "tellapart.preprocess": json.dumps(
            {**pre, "input": "float32 NCHW, (pixels/255 - mean) / std, RGB or luma as 'grayscale' says"}
        ),
        "tellapart.class_names": json.dumps(loaded.class_names),
        "tellapart.model": json.dumps(loaded.checkpoint["model"]),
    }
    onnx.helper.set_model_props(model_proto, meta)
    onnx.save(model_proto, str(tmp))
    os.replace(tmp, out_path)

    inputs = torch.randn(samples, channels, pre["size"], pre["size"], generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected = wrapper(inputs).numpy()
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    got = session.run(["probs"], {"image": inputs.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))
    return ExportResult(out_path, diff, PARITY_ATOL, samples)
