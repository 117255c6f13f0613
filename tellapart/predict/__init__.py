"""Prediction on new files with the preprocessing a checkpoint carries; which run a folder stands for."""

from ._predictor import Prediction, Predictor, expand_paths, file_digest, load, write_predictions
from ._resolve import resolve_run

__all__ = ["Prediction", "Predictor", "expand_paths", "file_digest", "load", "resolve_run", "write_predictions"]
