"""``tellapart data synth|check|prepare`` end to end, and user errors as one line with exit 2."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from _images import write_class_folders, write_image

from tellapart.cli import main
from tellapart.data import Cache


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_synth_check_prepare_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, cache_dir = tmp_path / "faces", tmp_path / "cache"
    code, out, _ = _run(capsys, "data", "synth", "--out", data, "--pairs", "6", "--size", "64", "--quiet")
    assert code == 0 and "12 images" in out
    assert len(list((data / "face").glob("*.jpg"))) == 6 and len(list((data / "comics").glob("*.jpg"))) == 6

    code, out, _ = _run(capsys, "data", "check", data, "--quiet", "--workers", "1")
    assert code == 0 and "12 of 12 images readable" in out and "usable: yes" in out

    code, out, err = _run(capsys, "data", "prepare", data, "--out", cache_dir, "--size", "32", "--quiet", "--workers", "1")
    assert code == 0 and out.strip() == str(cache_dir)
    cache = Cache(cache_dir)
    assert cache.pixels.shape == (12, 32, 32, 3) and cache.class_names == ["comics", "face"]
    assert cache.manifest["source"]["kind"] == "paired"

    code, _, err = _run(capsys, "data", "prepare", data, "--out", cache_dir, "--size", "32", "--workers", "1")
    assert code == 0 and "reusing" in err


def test_check_json_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_class_folders(tmp_path / "good", {"cat": 2, "dog": 2})
    code, out, _ = _run(capsys, "data", "check", tmp_path / "good", "--json", "--quiet")
    report = json.loads(out)
    assert code == 0 and report["usable"] is True and report["readable"] == 4

    write_class_folders(tmp_path / "bad", {"cat": 2})
    (tmp_path / "bad" / "dog").mkdir()
    (tmp_path / "bad" / "dog" / "0.png").write_bytes(b"")
    code, out, _ = _run(capsys, "data", "check", tmp_path / "bad", "--json", "--quiet")
    report = json.loads(out)
    assert code == 1 and report["usable"] is False and report["unreadable"] == [{"id": "dog/0.png", "error": "empty file (0 bytes)"}]


def test_prepare_options_reach_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_class_folders(tmp_path / "ds", {"cat": 6, "dog": 6}, size=(20, 10))
    code, _, _ = _run(
        capsys, "data", "prepare", tmp_path / "ds", "--out", tmp_path / "c", "--size", "8", "--grayscale",
        "--fit", "pad", "--test", "0.5", "--val", "0", "--seed", "3", "--quiet",
    )  # fmt: skip
    assert code == 0
    cache = Cache(tmp_path / "c")
    assert cache.pixels.shape == (12, 8, 8, 1) and cache.preprocess.fit == "pad"
    assert sorted(cache.splits.tolist()).count("test") == 6 and "val" not in cache.splits.tolist()


def _dataset(tmp_path: Path) -> Path:
    write_class_folders(tmp_path / "ds", {"cat": 2, "dog": 2})
    return tmp_path / "ds"


def _case_missing(tmp_path: Path) -> list[str | Path]:
    return ["data", "check", tmp_path / "missing"]


def _case_single_class(tmp_path: Path) -> list[str | Path]:
    write_class_folders(tmp_path / "one", {"cat": 2})
    return ["data", "prepare", tmp_path / "one", "--out", tmp_path / "c", "--quiet"]


def _case_empty_class(tmp_path: Path) -> list[str | Path]:
    (_dataset(tmp_path) / "bird").mkdir()
    return ["data", "check", tmp_path / "ds", "--quiet"]


def _case_csv_outside(tmp_path: Path) -> list[str | Path]:
    write_image(tmp_path / "outside.jpg")
    (_dataset(tmp_path) / "list.csv").write_text("cat/000.png,cat\n../outside.jpg,dog\n")
    return ["data", "check", tmp_path / "ds" / "list.csv"]


def _case_archive_dotdot(tmp_path: Path) -> list[str | Path]:
    png = write_image(tmp_path / "a.png")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.write(png, "cat/a.png")
        zf.write(png, "../dog/b.png")
    return ["data", "check", tmp_path / "evil.zip"]


def _case_strict(tmp_path: Path) -> list[str | Path]:
    (_dataset(tmp_path) / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return ["data", "prepare", tmp_path / "ds", "--out", tmp_path / "c", "--strict", "--quiet"]


def _case_out_taken(tmp_path: Path) -> list[str | Path]:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "thesis.tex").write_text("...")
    return ["data", "prepare", _dataset(tmp_path), "--out", tmp_path / "taken", "--quiet"]


def _case_size(tmp_path: Path) -> list[str | Path]:
    return ["data", "prepare", _dataset(tmp_path), "--out", tmp_path / "c", "--size", "2"]


def _case_test_share(tmp_path: Path) -> list[str | Path]:
    return ["data", "prepare", _dataset(tmp_path), "--out", tmp_path / "c", "--test", "1.5"]


def _case_pair_dirs(tmp_path: Path) -> list[str | Path]:
    return ["data", "check", _dataset(tmp_path), "--pair-dirs", "face"]


def _case_synth_pairs(tmp_path: Path) -> list[str | Path]:
    return ["data", "synth", "--out", tmp_path / "s", "--pairs", "0"]


def _case_synth_not_empty(tmp_path: Path) -> list[str | Path]:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    return ["data", "synth", "--out", tmp_path / "full", "--pairs", "1", "--size", "32"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (_case_missing, "dataset not found"),
        (_case_single_class, "at least two classes"),
        (_case_empty_class, "bird holds no images"),
        (_case_csv_outside, "'../outside.jpg' lies outside"),
        (_case_archive_dotdot, "'../dog/b.png' points outside the archive"),
        (_case_strict, "cannot read dog/broken.jpg"),
        (_case_out_taken, "taken exists and is not a tellapart cache"),
        (_case_size, "--size"),
        (_case_test_share, "--test"),
        (_case_pair_dirs, "--pair-dirs"),
        (_case_synth_pairs, "pairs must be at least 1"),
        (_case_synth_not_empty, "full is not empty"),
    ],
    ids=lambda v: v.__name__.removeprefix("_case_") if callable(v) else "",
)
def test_user_errors_are_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case, message: str  # type: ignore[no-untyped-def]
) -> None:
    code, out, err = _run(capsys, *case(tmp_path))
    assert code == 2, err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
