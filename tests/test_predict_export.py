"""Prediction on new files and ONNX export, both with the preprocessing the checkpoint carries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _fixtures_train import csv_rows, easy_cache, easy_images, easy_run  # noqa: F401 - fixtures
from PIL import Image

import tellapart.predict
from tellapart.cli import main
from tellapart.data import Cache
from tellapart.train import Feeder, evaluate, load_model, resolve_runtime


@pytest.fixture
def new_images(easy_images: Path, tmp_path: Path) -> dict[str, Path]:
    """Images as a user brings them: loose files, a folder with a broken file, a glob's worth."""
    loose = tmp_path / "loose"
    shutil.copytree(easy_images / "left", loose / "some", dirs_exist_ok=True)
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in sorted((easy_images / "right").glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return {
        "file": loose / "some" / "left-00.png",
        "folder": folder,
        "glob": loose / "some" / "left-0[012].png",  # overlaps "file"
        "broken": folder / "broken.png",
    }


def test_cli_predicts_files_folders_and_globs_skipping_broken_files(
    easy_run: Path, new_images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions.csv"
    argv = ["predict", str(easy_run), str(new_images["file"]), str(new_images["folder"]), str(new_images["glob"]), "-o", str(out), "--quiet"]
    assert main(argv) == 1  # a file was skipped: exit 1, the readable ones still predicted
    err = capsys.readouterr().err
    assert f"skipped {new_images['broken']}:" in err and "1 file(s) skipped" in err
    rows = csv_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 1 + 3 + 2  # each file once, however often it was named
    assert str(new_images["broken"]) not in paths
    assert set(rows[0]) == {"path", "label", "confidence", "p_left", "p_right"}
    for r in rows:
        assert float(r["confidence"]) == max(float(r["p_left"]), float(r["p_right"]))
        assert r["label"] == ("left" if float(r["p_left"]) >= float(r["p_right"]) else "right")

    # The library gives what the CLI wrote.
    predictor = tellapart.predict.load(easy_run)
    assert predictor.predict(paths) == [r["label"] for r in rows]
    probs = predictor.predict_proba(paths)
    np.testing.assert_allclose(probs, [[float(r["p_left"]), float(r["p_right"])] for r in rows], atol=1e-6)
    assert sum(label == "left" for label in predictor.predict(paths[:1])) == 1  # the easy data is learnt


def test_predict_raises_on_a_broken_image_and_files_skip_it(easy_run: Path, new_images: dict[str, Path]) -> None:
    predictor = tellapart.predict.load(easy_run)
    with pytest.raises(ValueError, match="not an image"):
        predictor.predict([new_images["file"], new_images["broken"]])
    results, failures = predictor.predict_files([new_images["file"], new_images["broken"]], progress=False)
    assert [r.path for r in results] == [str(new_images["file"])]
    assert failures == [(str(new_images["broken"]), "not an image Pillow can read")]


def test_predictions_match_the_model_on_cached_pixels(easy_run: Path, easy_cache: Cache) -> None:
    rows = easy_cache.indices("test")
    files = [easy_cache.source_path(int(r)) for r in rows]
    assert all(f is not None for f in files)
    predictor = tellapart.predict.load(easy_run)
    from_files = predictor.predict_proba(files)  # decoded again from the original files

    loaded = load_model(easy_run)
    pre = loaded.preprocess
    feeder = Feeder(easy_cache.pixels, easy_cache.labels, tuple(pre["mean"]), tuple(pre["std"]),
                    resolve_runtime("cpu", "fp32", "off", 1, is_conv=True))  # fmt: skip
    from_cache = evaluate(loaded.model, feeder, rows)  # rows come back sorted, as indices() gives them
    np.testing.assert_allclose(from_files, from_cache.probs, atol=1e-6)

    # Arrays and PIL images in memory go through the same preprocessing as files.
    in_memory = [np.asarray(Image.open(files[0]).convert("RGB")), Image.open(files[1])]
    np.testing.assert_allclose(predictor.predict_proba(in_memory), from_files[:2], atol=1e-6)


def test_cli_predict_user_errors(easy_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(easy_run), str(tmp_path / "nothing-*.png"), "--quiet"]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no best checkpoint" in err and "Traceback" not in err


def test_export_to_onnx_agrees_with_pytorch_and_carries_the_preprocessing(
    easy_run: Path, easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", str(easy_run), "--out", str(out), "--samples", "8", "--input", "normalized"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out}" and printed[1].startswith("parity") and printed[1].endswith(" ok")
    assert len(printed) == 2  # no exporter chatter

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["tellapart.class_names"]) == ["left", "right"]
    pre = json.loads(meta["tellapart.preprocess"])
    assert pre["size"] == 16 and pre["grayscale"] is False and len(pre["mean"]) == 3 and len(pre["std"]) == 3

    # Fed as the metadata says, onnxruntime predicts what `predict` does, for any batch size.
    rows = easy_cache.indices("test")
    pixels = np.asarray(easy_cache.pixels[rows], dtype=np.float32) / 255.0
    x = ((pixels - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32)).transpose(0, 3, 1, 2)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["probs"], {"image": np.ascontiguousarray(x)})[0]
    want = tellapart.predict.load(easy_run).predict_proba([easy_cache.source_path(int(r)) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-4)

