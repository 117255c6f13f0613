"""Model files without pickles: ``model.safetensors`` + ``config.json``, readable by tellapart and timm.

Export folder::

    model.safetensors   the weights (no code, no pickle)
    config.json         the architecture spec, label_names, input size and channels, mean/std and the
                        preprocessing; for a timm backbone whose head is one Linear layer, timm's own
                        fields too (``architecture``, ``num_classes``, ``pretrained_cfg``) with the
                        weights stored under timm's names, so
                        ``timm.create_model(arch, num_classes=K, pretrained=True,
                        pretrained_cfg_overlay={"file": "model.safetensors", "num_classes": K})`` loads them.

``read_export(folder)`` rebuilds the model from these two files alone (``tellapart.load`` calls it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tellapart._errors import UserError
from tellapart._files import atomic_output, atomic_write
from tellapart.runs import RunDir
from tellapart.train import LoadedModel, load_model

__all__ = ["CONFIG_FORMAT", "SafetensorsExport", "export_safetensors", "is_export", "read_export"]

#: Version of the ``tellapart`` block of config.json; a reader refuses any other.
CONFIG_FORMAT = 1

_WEIGHTS, _CONFIG = "model.safetensors", "config.json"


@dataclass(frozen=True)
class SafetensorsExport:
    folder: Path  # holds model.safetensors and config.json
    weights: Path
    config: Path
    layout: str  # "timm" (timm's parameter names) or "tellapart" (the Classifier's names)


def is_export(path: str | Path) -> bool:
    """True for a folder written by :func:`export_safetensors`."""
    p = Path(path)
    return p.is_dir() and (p / _WEIGHTS).is_file() and (p / _CONFIG).is_file()


def _timm_classifier(model: torch.nn.Module) -> str | None:
    """timm's name for the classifier when the model is a timm body + one Linear, else None.

    Only then do tellapart's weights map one-to-one onto ``timm.create_model(arch, num_classes=K)``.
    """
    from tellapart.models import Backbone

    if not isinstance(model, Backbone):
        return None
    if any(True for _ in model.head.parameters()):  # hidden dense layers: timm has no such head
        return None
    name = getattr(model.features.body, "pretrained_cfg", {}).get("classifier")
    return name if isinstance(name, str) else None


def _to_timm(state: dict[str, torch.Tensor], classifier: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("features.body."):
            out[key[len("features.body."):]] = value
        elif key.startswith("classifier."):
            out[f"{classifier}.{key[len('classifier.'):]}"] = value
        else:
            raise UserError(f"cannot map parameter {key!r} to timm's layout")
    return out


def _from_timm(state: dict[str, torch.Tensor], classifier: str) -> dict[str, torch.Tensor]:
    heads = {f"{classifier}.weight": "classifier.weight", f"{classifier}.bias": "classifier.bias"}
    return {heads.get(k, f"features.body.{k}"): v for k, v in state.items()}


def export_safetensors(run: str | Path, out: str | Path | None = None) -> SafetensorsExport:
    """Writes ``model.safetensors`` and ``config.json`` for a run's best model into ``out``.

    Args:
        run: a run folder or checkpoint file.
        out: the export folder (default: ``RUN/export``).
    """
    from safetensors.torch import save_file

    run = Path(run)
    loaded = load_model(run)
    folder = Path(out) if out else (run if run.is_dir() else run.parent) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    classifier = _timm_classifier(loaded.model)
    layout = "timm" if classifier else "tellapart"
    if classifier:
        state = _to_timm(state, classifier)
    config = _config(loaded, layout, classifier, run)
    weights, cfg_path = folder / _WEIGHTS, folder / _CONFIG
    with atomic_output(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "tellapart.layout": layout})
    atomic_write(cfg_path, json.dumps(config, indent=2))
    return SafetensorsExport(folder, weights, cfg_path, layout)


def _config(loaded: LoadedModel, layout: str, classifier: str | None, run: Path) -> dict[str, Any]:
    pre = loaded.preprocess
    spec = loaded.checkpoint["model"]
    channels = 1 if pre["grayscale"] else 3
    side = int(pre["size"])
    model_side = int(spec["args"].get("resize_to") or side)  # a backbone may resize inside the model
    config: dict[str, Any] = {
        "architecture": spec["name"],
        "num_classes": int(spec["num_outputs"]),
        "label_names": list(loaded.class_names),
        "input_size": [channels, side, side],
        "mean": list(pre["mean"]),
        "std": list(pre["std"]),
        "preprocessing": {
            "size": side,
            "channels": channels,
            "color": "luma (L)" if pre["grayscale"] else "RGB",
            "fit": pre["fit"],
            "resize": "bilinear (Pillow), after EXIF rotation; alpha over white",
            "normalize": "(pixels / 255 - mean) / std, per channel",
            "layout": "NCHW float32",
            "output": "softmax over num_classes (one logit: sigmoid gives p of label_names[1])",
        },
    }
    if classifier:
        timm_arch = loaded.model.pretrained_cfg["architecture"]  # type: ignore[attr-defined]
        config["architecture"] = timm_arch
        config["num_features"] = int(loaded.model.num_features)
        config["global_pool"] = "avg"
        config["pretrained_cfg"] = {
            "architecture": timm_arch,
            "input_size": [channels, model_side, model_side],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(pre["mean"]),
            "std": list(pre["std"]),
            "num_classes": int(spec["num_outputs"]),
            "classifier": classifier,
            "label_names": list(loaded.class_names),
        }
    config["tellapart"] = {
        "format": CONFIG_FORMAT,
        "model": spec,
        "class_names": list(loaded.class_names),
        "preprocess": pre,
        "layout": layout,
        "timm_classifier": classifier,
        "source": {"run": str(run), "epoch": loaded.checkpoint.get("epoch")},
        "metrics": _test_record(run),
    }
    return config


def _test_record(run: Path) -> dict[str, Any] | None:
    """The run's test accuracy and interval (its metrics.json), so the export carries its model card."""
    path = RunDir(run if run.is_dir() else run.parent.parent).evaluation()
    try:
        record = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("split") != "test":
        return None
    return {k: record.get(k) for k in ("accuracy", "accuracy_ci", "n", "loss")}


def read_export(folder: str | Path) -> LoadedModel:
    """Rebuilds the model of an export folder from config.json and model.safetensors (no unpickling)."""
    from safetensors.torch import load_file

    from tellapart.models import create_model, model_kwargs

    folder = Path(folder)
    if not is_export(folder):
        raise UserError(f"{folder} holds no {_WEIGHTS} + {_CONFIG}; write them with 'tellapart export RUN --format safetensors'")
    try:
        config = json.loads((folder / _CONFIG).read_text())
        block = config["tellapart"]
        spec = block["model"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{folder / _CONFIG} is not a tellapart export config ({exc}); export the run again") from None
    if block.get("format") != CONFIG_FORMAT:
        raise UserError(f"{folder / _CONFIG} has format {block.get('format')!r}; this tellapart reads format {CONFIG_FORMAT}")
    args = dict(spec["args"])
    if "weights" in model_kwargs(spec["name"]):
        args["weights"] = None  # the weights are the file next to this config
    model = create_model(spec["name"], in_chans=spec["in_chans"], num_classes=spec["num_outputs"], input_size=spec["input_size"], **args)
    try:
        state = load_file(str(folder / _WEIGHTS), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to replace
        raise UserError(f"{folder / _WEIGHTS} is not a readable safetensors file: {exc}") from None
    if block.get("layout") == "timm":
        state = _from_timm(state, str(block["timm_classifier"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{folder / _WEIGHTS} does not fit {spec['name']} as config.json describes it: {exc}") from None
    model.eval()
    checkpoint = {
        "model": spec, "class_names": block["class_names"], "preprocess": block["preprocess"],
        "epoch": block.get("source", {}).get("epoch"), "metrics": block.get("metrics"),
    }
    return LoadedModel(model, list(block["class_names"]), dict(block["preprocess"]), checkpoint)

