"""Prediction on new files with the preprocessing a checkpoint carries."""

from ._predictor import Prediction, Predictor, expand_paths, load, write_predictions

__all__ = ["Prediction", "Predictor", "expand_paths", "load", "write_predictions"]
