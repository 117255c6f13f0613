"""Classical baselines on the cached pixels (scikit-learn), so every leaderboard shows whether a
network earned its cost.

``logreg``      logistic regression on standardised pixels (images above 32 px averaged down to 32)
``svm_pixels``  RBF-kernel SVM on the same pixels
``hog_svm``     HOG descriptors of the grey image (scikit-image) -> RBF-kernel SVM

They fit on the train split (a stratified subset above ``max_train_rows``: an RBF SVM costs
O(n^2)), score on val, and read the test split only through :meth:`FittedBaseline.predict`,
which callers use once, after selection. They are deterministic and take seconds, so they are
refitted rather than saved: nothing is unpickled.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tellapart._errors import UserError
from tellapart.data import Cache, stratified_cap

__all__ = ["BASELINES", "DEFAULT_BASELINES", "BaselineResult", "FittedBaseline", "fit_baseline", "baseline_row"]

#: name -> what it is, for leaderboards and --help.
BASELINES: dict[str, str] = {
    "logreg": "logistic regression on standardised pixels",
    "svm_pixels": "RBF SVM on standardised pixels",
    "hog_svm": "HOG descriptors -> RBF SVM",
}
DEFAULT_BASELINES: tuple[str, ...] = ("logreg", "svm_pixels", "hog_svm")
_PIXEL_SIDE = 32  # classical models see at most 32x32 px: more only slows them down
_CHUNK = 2048  # rows featurised at once: bounded memory for big caches


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    val_acc: float | None  # None when the cache has no validation split
    val_loss: float | None  # log loss where the model gives probabilities (logreg), else None
    train_rows: int  # rows fitted on
    train_rows_available: int  # rows of the train split(s)
    features: int  # input dimensions
    train_seconds: float  # featurising + fitting + scoring val

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FittedBaseline:
    """A fitted baseline: predicts cache rows (probabilities where the model has them)."""

    def __init__(self, name: str, cache: Cache, model: Any, result: BaselineResult) -> None:
        self.name, self.cache, self.model, self.result = name, cache, model, result

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """(N, K) probabilities; an SVM without them gives one-hot rows of its predictions."""
        x = _features(self.name, self.cache, np.asarray(rows))
        k = self.cache.num_classes
        if hasattr(self.model, "predict_proba"):
            proba = self.model.predict_proba(x)
            out = np.zeros((len(rows), k), np.float32)
            out[:, self.model.classes_] = proba
            return out
        return np.eye(k, dtype=np.float32)[self.model.predict(x)]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.predict_proba(rows).argmax(1)


def fit_baseline(
    cache: Cache, name: str, *, splits: Sequence[str] = ("train",), max_train_rows: int = 10_000, seed: int = 0
) -> FittedBaseline:
    """Fits baseline ``name`` on ``splits`` of ``cache`` and scores it on val."""
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    started = time.perf_counter()
    rows = np.concatenate([cache.indices(s) for s in splits])
    if len(rows) == 0:
        raise UserError(f"cache {cache.path} has no training images")
    available = len(rows)
    rows = stratified_cap(rows, cache.labels, max_train_rows, seed=seed, salt=104729)
    x, y = _features(name, cache, rows), cache.labels[rows]
    model = _model(name, seed)
    if len(np.unique(y)) < 2:
        raise UserError(f"cache {cache.path}: the train split holds one class only; a baseline needs two")
    with warnings.catch_warnings():  # an unconverged baseline is still a baseline; its score says how good
        warnings.simplefilter("ignore", category=UserWarning)
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model.fit(x, y)
    fitted = FittedBaseline(name, cache, model, None)  # type: ignore[arg-type]
    val = cache.indices("val")
    val_acc = val_loss = None
    if len(val):
        proba = fitted.predict_proba(val)
        labels = cache.labels[val]
        val_acc = round(float((proba.argmax(1) == labels).mean()), 6)
        if hasattr(model, "predict_proba"):
            val_loss = round(float(-np.log(np.clip(proba[np.arange(len(val)), labels], 1e-7, 1.0)).mean()), 6)
    fitted.result = BaselineResult(
        name=name, description=BASELINES[name], val_acc=val_acc, val_loss=val_loss, train_rows=int(len(rows)),
        train_rows_available=int(available), features=int(x.shape[1]), train_seconds=round(time.perf_counter() - started, 3),
    )
    return fitted


def baseline_row(result: BaselineResult) -> dict[str, Any]:
    """A leaderboard row (the ladder's and fit's columns) for a baseline."""
    return {
        "rung": f"baseline:{result.name}",
        "kind": "classical",
        "model": result.name,
        "params": result.features,
        "val_acc": result.val_acc,
        "val_acc_std": None,
        "val_loss": result.val_loss,
        "best_epoch": None,
        "epochs": None,
        "train_seconds": result.train_seconds,
        "images_per_s": None,
        "seeds": 1,
        "run": None,
        "note": f"{result.description}; fitted on {result.train_rows:,} of {result.train_rows_available:,} train images",
    }


def _model(name: str, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "logreg":  # lbfgs to a loose tolerance: a baseline, not a tuned model
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=200, tol=1e-3, random_state=seed))
    return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, gamma="scale", random_state=seed))


def _features(name: str, cache: Cache, rows: np.ndarray) -> np.ndarray:
    parts = [_featurise(name, np.asarray(cache.pixels[rows[k : k + _CHUNK]])) for k in range(0, len(rows), _CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _featurise(name: str, pixels: np.ndarray) -> np.ndarray:
    """(n, side, side, c) uint8 -> (n, d) float32 features."""
    if name == "hog_svm":
        return _hog(pixels)
    return _small(pixels).reshape(len(pixels), -1)


def _small(pixels: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1], averaged down to at most 32 px a side."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] > _PIXEL_SIDE:
        x = F.adaptive_avg_pool2d(x, _PIXEL_SIDE)
    return x.numpy().astype(np.float32)


def _hog(pixels: np.ndarray) -> np.ndarray:
    """HOG of the grey image (at most 64 px): 9 orientations, 4x4 or 8x8 cells, 2x2 blocks."""
    import torch
    import torch.nn.functional as F
    from skimage.feature import hog

    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
    x = x.mean(1, keepdim=True)
    if x.shape[-1] > 64:
        x = F.adaptive_avg_pool2d(x, 64)
    grey = x[:, 0].numpy()
    side = grey.shape[-1]
    cell = max(2, side // (4 if side <= 32 else 8))
    return np.stack(
        [hog(img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), feature_vector=True) for img in grey]
    ).astype(np.float32)
