"""Model files (safetensors + config.json, read without unpickling), ONNX on raw pixels, and which
run a folder stands for (``resolve_run``) in every command that needs a model."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures_train import easy_cache, easy_images, easy_run  # noqa: F401 - fixtures

import tellapart
from tellapart._errors import UserError
from tellapart.cli import main
from tellapart.data import Cache
from tellapart.predict import resolve_run
from tellapart.train import save_checkpoint


def _probe_files(easy_images: Path) -> list[Path]:
    return sorted(easy_images.glob("*/*.png"))[::7]


# --------------------------------------------------------------------------- resolve_run


def _fake_run(folder: Path, easy_run: Path) -> Path:
    """A run folder as far as resolving goes: ``checkpoints/best.pt`` (the tiny CNN's)."""
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(easy_run / "checkpoints" / "best.pt", folder / "checkpoints" / "best.pt")
    return folder


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_resolve_run_follows_every_folder_that_chose_a_model(easy_run: Path, tmp_path: Path) -> None:
    assert resolve_run(easy_run) == (easy_run, f"{easy_run}: run folder")
    ckpt = easy_run / "checkpoints" / "best.pt"
    assert resolve_run(ckpt)[0] == ckpt

    chosen = tmp_path / "fit"
    _fake_run(chosen / "runs" / "b", easy_run)
    _write(chosen / "chosen.json", {"run": "runs/b", "why": "best on validation"})
    run, note = resolve_run(chosen)
    assert run == chosen / "runs" / "b" and "chosen.json" in note

    ladder = tmp_path / "ladder"  # rank 1 never finished: the first row whose run has a best.pt wins
    _fake_run(ladder / "mlp" / "seed-0", easy_run)
    _write(ladder / "leaderboard.json", [{"rank": 1, "rung": "cnn", "run": "elsewhere/cnn"}, {"rank": 2, "rung": "mlp", "seeds": 3, "run": "x"}])
    run, note = resolve_run(ladder)
    assert run == ladder / "mlp" / "seed-0" and "ladder" in note and "mlp" in note

    study = tmp_path / "study"
    _fake_run(study / "trials" / "1", easy_run)
    _write(study / "leaderboard.json", [
        {"rank": 1, "trial": 4, "state": "pruned", "run": "trials/4"},
        {"rank": 2, "trial": 1, "state": "complete", "run": "trials/1"},
    ])
    assert resolve_run(study)[0] == study / "trials" / "1"
    _fake_run(study / "final" / "run", easy_run)
    _write(study / "final" / "metrics.json", {"split": "test", "accuracy": 1.0})
    run, note = resolve_run(study)
    assert run == study / "final" / "run" and "--final" in note  # the retrain that was tested wins

    recipe = tmp_path / "recipe"  # recorded run paths are as typed elsewhere: found by step and rung
    (recipe / "recipe.yaml").parent.mkdir(parents=True)
    (recipe / "recipe.yaml").write_text("recipe: s0\n")
    _fake_run(recipe / "ladder" / "cnn", easy_run)
    _write(recipe / "ladder" / "leaderboard.json", [{"rank": 1, "rung": "cnn"}])
    _fake_run(recipe / "single", easy_run)
    _write(recipe / "leaderboard.json", [
        {"rank": 1, "rung": "cnn", "step": "ladder", "run": "/gone/ladder/cnn"},
        {"rank": 2, "rung": "single", "step": "single", "run": "/gone/single"},
    ])
    run, note = resolve_run(recipe)
    assert run == recipe / "ladder" / "cnn" and "recipe" in note
    _write(recipe / "leaderboard.json", [{"rank": 1, "rung": "single", "step": "single", "run": "/gone/single"}])
    assert resolve_run(recipe)[0] == recipe / "single"  # a train step's folder is the run

    with pytest.raises(UserError, match="holds no best checkpoint"):
        (tmp_path / "empty").mkdir()
        resolve_run(tmp_path / "empty")
    _write(tmp_path / "bad" / "chosen.json", {"run": "missing"})
    with pytest.raises(UserError, match="holds no checkpoints/best.pt"):
        resolve_run(tmp_path / "bad")


def test_predict_and_export_accept_a_ladder_folder_and_say_how(
    easy_run: Path, easy_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = tmp_path / "ladder"
    shutil.copytree(easy_run, ladder / "cnn")
    _write(ladder / "leaderboard.json", [{"rank": 1, "rung": "cnn", "run": "somewhere/else"}])
    image = _probe_files(easy_images)[0]
    assert main(["predict", str(ladder), str(image), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"model: {ladder}: ladder, rank 1 rung cnn -> {ladder / 'cnn'}" in captured.err
    assert captured.out.startswith(f"{image}\t")
    assert main(["export", str(ladder), "--format", "safetensors"]) == 0
    assert (ladder / "cnn" / "export" / "model.safetensors").is_file()
    assert "ladder" in capsys.readouterr().err


# --------------------------------------------------------------------------- safetensors + config.json


def test_safetensors_export_loads_without_unpickling_and_predicts_the_same(
    easy_run: Path, easy_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shipped"
    assert main(["export", str(easy_run), "--format", "safetensors", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'model.safetensors'} and {out / 'config.json'} (tellapart parameter names)"
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == ["left", "right"] and config["architecture"] == "cnn"
    assert config["input_size"] == [3, 16, 16] and len(config["mean"]) == len(config["std"]) == 3
    assert config["preprocessing"]["fit"] == "stretch" and config["tellapart"]["model"]["name"] == "cnn"

    files = _probe_files(easy_images)
    want = tellapart.load(easy_run).predict_proba(files)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an export must load without unpickling")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    predictor = tellapart.load(out)
    np.testing.assert_allclose(predictor.predict_proba(files), want, atol=1e-6)
    assert predictor.model_id.startswith("shipped@") and predictor.class_names == ["left", "right"]


def test_import_tellapart_stays_light() -> None:
    code = "import sys, tellapart; assert 'torch' not in sys.modules, 'torch imported'; assert callable(tellapart.load); assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_timm_backbone_export_loads_in_timm_itself(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from tellapart.models import BACKBONES, create_model

    spec = {"name": "efficientnet_lite0", "args": {"weights": None}, "in_chans": 3, "num_outputs": 3, "input_size": 32, "single_logit": False}
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", in_chans=3, num_classes=3, input_size=32, weights=None).eval()
    pre = {"size": 32, "grayscale": False, "fit": "stretch", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "channels_last": False}
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.pt", {"model": spec, "state_dict": model.state_dict(), "class_names": ["a", "b", "c"], "preprocess": pre, "epoch": 1})

    assert main(["export", str(run), "--format", "safetensors", "--out", str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == BACKBONES["efficientnet_lite0"].timm_name and config["num_classes"] == 3
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["mean"] == pre["mean"] and cfg["label_names"] == ["a", "b", "c"]

    weights = str(tmp_path / "out" / "model.safetensors")
    theirs = timm.create_model(config["architecture"], pretrained=True, num_classes=3,
                               pretrained_cfg_overlay={"file": weights, "num_classes": 3}).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        torch.testing.assert_close(theirs(x), ours, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tellapart.load(tmp_path / "out").loaded.model(x), ours, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- ONNX on raw pixels


def test_onnx_takes_raw_uint8_pixels_and_checks_parity_on_the_runs_images(
    easy_run: Path, easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(easy_run), "--out", str(out), "--samples", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out}"
    assert "8 images from the run's cache" in printed[1] and printed[1].endswith(" ok")

    proto = onnx.load(str(out))
    (inp,) = proto.graph.input
    assert inp.name == "pixels" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1:] == [16, 16, 3]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["tellapart.class_names"]) == ["left", "right"]
    assert json.loads(meta["tellapart.preprocess"])["input_kind"] == "raw"

    rows = easy_cache.indices("test")
    pixels = np.ascontiguousarray(easy_cache.pixels[rows])  # uint8 NHWC, as a decoder gives them
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["probs"], {"pixels": pixels})[0]
    want = tellapart.load(easy_run).predict_proba([easy_cache.source_path(int(r)) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_onnx_parity_falls_back_to_random_pixels_and_a_failure_keeps_no_model(
    easy_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from tellapart.export import _onnx, export_onnx

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(easy_run / "checkpoints", run / "checkpoints")  # no config.yaml: no cache to read
    result = export_onnx(run, samples=4)
    assert result.ok and "4 random uint8 images" in result.parity_images and result.path == run / "model.onnx"

    monkeypatch.setattr(_onnx, "PARITY_ATOL", -1.0)  # nothing passes
    failed = export_onnx(run, tmp_path / "strict.onnx", samples=4)
    assert not failed.ok and failed.path == tmp_path / "strict.parity-failed.onnx" and failed.path.is_file()
    assert not (tmp_path / "strict.onnx").exists()
