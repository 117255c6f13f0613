"""Predictions on new images with exactly the preprocessing stored in the checkpoint."""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tellapart._errors import UserError
from tellapart.data import Preprocess, decode, is_image_name, to_tensor
from tellapart.runs import RunDir
from tellapart.train import LoadedModel, load_model, logits_to_probs

from ._resolve import resolve_run

__all__ = ["Predictor", "Prediction", "load", "expand_paths", "file_digest", "write_predictions"]

Image_ = Union[str, Path, bytes, np.ndarray, Image.Image]


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str  # predicted class
    confidence: float  # its probability
    probs: dict[str, float]  # every class's probability


class Predictor:
    """A trained model plus its preprocessing: ``tellapart.load(RUN).predict(images)``."""

    def __init__(self, loaded: LoadedModel, *, model_id: str = "", source: Path | None = None, note: str = "") -> None:
        self.loaded = loaded
        self.model_id = model_id or str(loaded.checkpoint["model"]["name"])  # name@digest of the weights file
        self.source = source  # the run folder, checkpoint file or export folder it was loaded from
        self.note = note  # how the path given to load() was resolved to ``source``
        pre = loaded.preprocess
        self.preprocess = Preprocess(size=int(pre["size"]), grayscale=bool(pre["grayscale"]), fit=pre["fit"])
        self.mean, self.std = tuple(pre["mean"]), tuple(pre["std"])

    @property
    def class_names(self) -> list[str]:
        return self.loaded.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the uint8 pixels :meth:`predict_pixels` takes."""
        return self.preprocess.size, self.preprocess.size, self.preprocess.channels

    def decode_image(self, image: Image_) -> np.ndarray:
        """One image -> its uint8 (H, W, C) pixels, preprocessed as in training; ValueError if unreadable."""
        return self._pixels(image)

    def predict_pixels(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, H, W, C) uint8 pixels from :meth:`decode_image` -> (N, K) probabilities."""
        return self._probs(pixels, batch_size)

    def _pixels(self, image: Image_) -> np.ndarray:
        if isinstance(image, Image.Image):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            image = buf.getvalue()
        payload = str(image) if isinstance(image, Path) else image
        d = decode(payload, self.preprocess)
        if d.error is not None:
            raise ValueError(d.error)
        assert d.pixels is not None
        return d.pixels

    def predict_proba(self, images: Sequence[Image_], batch_size: int = 64) -> np.ndarray:
        """(N, K) probabilities; raises ValueError on an unreadable image (use ``predict_files`` to skip)."""
        pixels = np.stack([self._pixels(im) for im in images]) if len(images) else np.zeros((0,))
        return self._probs(pixels, batch_size)

    @torch.no_grad()
    def _probs(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        _check_batch_size(batch_size)
        model = self.loaded.model.eval()
        out = []
        for start in range(0, len(pixels), batch_size):
            x = to_tensor(pixels[start : start + batch_size], self.mean, self.std, channels_last=bool(self.loaded.preprocess.get("channels_last")))
            out.append(logits_to_probs(model(x)).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def predict(self, images: Sequence[Image_], batch_size: int = 64) -> list[str]:
        """Predicted class names."""
        probs = self.predict_proba(images, batch_size)
        return [self.class_names[k] for k in probs.argmax(1)]

    def predict_files(
        self, paths: Sequence[str | Path], *, batch_size: int = 64, progress: bool = True
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predictions for readable files, and (path, error) for the ones skipped."""
        _check_batch_size(batch_size)
        results: list[Prediction] = []
        failures: list[tuple[str, str]] = []
        bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
        for start in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[start : start + batch_size]]
            good, pixels = [], []
            for path in chunk:
                d = decode(path, self.preprocess)
                if d.error is not None:
                    failures.append((path, d.error))
                else:
                    good.append(path)
                    pixels.append(d.pixels)
            if pixels:
                probs = self._probs(np.stack(pixels), batch_size)
                for path, p in zip(good, probs):
                    k = int(p.argmax())
                    results.append(
                        Prediction(path, self.class_names[k], float(p[k]), {c: float(v) for c, v in zip(self.class_names, p)})
                    )
            bar.update(len(chunk))
        bar.close()
        return results, failures


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size (--batch-size) must be at least 1, got {batch_size}")


def load(path: str | Path) -> Predictor:
    """Loads a model for prediction: ``tellapart.load("runs/cnn").predict(["a.jpg"])``.

    ``path`` is a run folder, a checkpoint file, an export folder (``model.safetensors`` +
    ``config.json``, read without unpickling) or any folder that chose a run (see :func:`resolve_run`).
    """
    from tellapart.export import is_export, read_export

    p = Path(path)
    if is_export(p):
        return Predictor(read_export(p), model_id=_model_id(p / "model.safetensors", p.name), source=p, note=f"{p}: export folder")
    run, note = resolve_run(p)
    weights = run if run.is_file() else RunDir(run).best
    return Predictor(load_model(run), model_id=_model_id(weights, run.stem if run.is_file() else run.name), source=run, note=note)


def _model_id(weights: Path, name: str) -> str:
    return f"{name}@{file_digest(weights)}"


def file_digest(path: str | Path, length: int = 12) -> str:
    """The first ``length`` hex digits of a file's SHA-256: a model's identity in answers and logs."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def expand_paths(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (searched recursively for images) and glob patterns -> image paths, each once.

    Paths keep the order of ``inputs``; a folder's or a pattern's matches are sorted.
    """
    found: list[Path] = []
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not matches:
            raise UserError(f"no file matches {item!r}")
        for m in matches:
            if m.is_dir():
                found.extend(sorted(p for p in m.rglob("*") if p.is_file() and is_image_name(p.name)))
            elif m.exists():
                found.append(m)
            else:
                raise UserError(f"file not found: {m}")
    return list(dict.fromkeys(found))  # a file named twice (say, directly and by a pattern) is predicted once


def write_predictions(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str]) -> None:
    """CSV (path, label, confidence, one probability column per class) or JSON, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        rows: list[dict[str, Any]] = [p.__dict__ for p in predictions]
        path.write_text(json.dumps(rows, indent=2))
        return
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "confidence", *[f"p_{c}" for c in class_names]])
        for p in predictions:
            writer.writerow([p.path, p.label, f"{p.confidence:.6f}", *[f"{p.probs[c]:.6f}" for c in class_names]])
