"""``fit``: the best model a wall-clock budget allows, chosen on validation, tested once, reported.

The stage above train, tune and evaluate: it profiles the data, prepares it, fits classical
baselines, runs successive halving over CNNs x augmentation policies, tests the winner once,
writes the report and exports the model.
"""

from ._plan import (
    ARCHITECTURES,
    AUGMENT_POLICIES,
    PRESETS,
    Candidate,
    DataProfile,
    Decisions,
    FitConfig,
    Preset,
    candidates,
    decide,
    parse_budget,
    profile_source,
)
from ._run import FitResult, fit

__all__ = [
    "ARCHITECTURES",
    "AUGMENT_POLICIES",
    "PRESETS",
    "Candidate",
    "DataProfile",
    "Decisions",
    "FitConfig",
    "FitResult",
    "Preset",
    "candidates",
    "decide",
    "fit",
    "parse_budget",
    "profile_source",
]
