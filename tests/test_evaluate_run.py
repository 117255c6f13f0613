"""``evaluate_run`` and ``tellapart evaluate``: metrics.json, report.html, test reads, leakage warnings."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _fixtures_train import easy_cache, easy_images, easy_run, fast_config, fresh_copy, write_easy_images  # noqa: F401

from tellapart.cli import main
from tellapart.data import Cache, PrepareConfig, Preprocess, open_source, prepare
from tellapart.evaluate import evaluate_run
from tellapart.train import train

RUN_SECTIONS = ("summary", "learning-curves", "confusion-matrix", "per-class", "calibration", "mistakes", "config", "environment")


class _Sections(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.ids.extend(v for k, v in attrs if k == "id" and v)


def _sections(path: Path) -> list[str]:
    return _Sections(path.read_text()).ids


def test_evaluation_writes_metrics_and_a_full_report(easy_run: Path, easy_cache: Cache, tmp_path: Path) -> None:
    run = fresh_copy(easy_run, tmp_path / "run")
    record = evaluate_run(run)
    n_test = len(easy_cache.indices("test"))

    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("n", "accuracy", "accuracy_ci", "loss", "errors", "confusion_matrix", "per_class", "roc_auc", "ece",
                "split", "best_epoch", "reads_of_split"):  # fmt: skip
        assert key in metrics, key
    assert metrics["n"] == n_test and metrics["split"] == "test" and metrics["reads_of_split"] == 1
    assert 0 <= metrics["accuracy_ci"][0] <= metrics["accuracy"] <= metrics["accuracy_ci"][1] <= 1
    assert np.sum(metrics["confusion_matrix"]) == n_test
    assert metrics["class_names"] == ["left", "right"]
    assert record["report"] == str(run / "report.html")

    sections = _sections(run / "report.html")
    assert set(RUN_SECTIONS) <= set(sections)
    assert "warnings" not in sections and "leaderboard" not in sections  # first, clean reading


def test_each_test_reading_is_counted_and_the_second_is_flagged(easy_run: Path, tmp_path: Path) -> None:
    run = fresh_copy(easy_run, tmp_path / "run")
    evaluate_run(run)
    assert [r["split"] for r in json.loads((run / "test_reads.json").read_text())] == ["test"]
    evaluate_run(run, split="val")  # reading val does not count against test
    second = evaluate_run(run)
    reads = json.loads((run / "test_reads.json").read_text())
    assert [r["split"] for r in reads] == ["test", "val", "test"]
    assert second["reads_of_split"] == 2
    assert "warnings" in _sections(run / "report.html")
    assert "read the test split 2 times" in (run / "report.html").read_text()
    assert (run / "metrics-val.json").is_file() and (run / "report-val.html").is_file()


def test_cross_split_duplicates_warn_in_the_report(tmp_path: Path) -> None:
    # A CSV list with fixed splits, in which one training image appears again in test.
    paths = write_easy_images(tmp_path / "images", per_class=8)
    rows = ["path,label,split"]
    for k, path in enumerate(paths):
        split = ("train", "train", "train", "train", "val", "test", "train", "val")[k % 8]
        rows.append(f"{path.relative_to(tmp_path / 'images').as_posix()},{path.parent.name},{split}")
    shutil.copy(paths[0], tmp_path / "images" / "left" / "copy-of-left-00.png")
    rows.append("left/copy-of-left-00.png,left,test")
    (tmp_path / "images" / "list.csv").write_text("\n".join(rows) + "\n")
    cache = prepare(open_source(tmp_path / "images" / "list.csv"), tmp_path / "cache",
                    PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)  # fmt: skip
    assert cache.manifest["duplicates"]["cross_split_exact"]

    train(cache, fast_config("model.name=linear", epochs=1), tmp_path / "run", progress=False)
    evaluate_run(tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "warnings" in _sections(tmp_path / "run" / "report.html")
    assert "exact duplicate pair(s) link the test split" in html and "copy-of-left-00.png" in html


def test_cli_evaluates_a_ladder_folder_with_its_leaderboard(
    easy_cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)  # a relative --out, as a user types it
    args = ["ladder", str(easy_cache.path), "--out", "ladder", "--epochs", "1", "--quiet", "--ladder", str(_two_rung_ladder(tmp_path)),
            *[f"--set={s}" for s in ("device=cpu", "precision=fp32", "threads=1", "batch_size=8")]]  # fmt: skip
    assert main(args) == 0
    monkeypatch.chdir(tmp_path)  # ... and evaluated later from elsewhere
    capsys.readouterr()
    assert main(["evaluate", "project/ladder"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test: accuracy ") and "report: " in out
    report = project / "ladder" / "report.html"
    sections = _sections(report)
    assert sections[0] == "leaderboard" and set(RUN_SECTIONS) <= set(sections)
    rows = json.loads((project / "ladder" / "leaderboard.json").read_text())
    best = next(r["rung"] for r in rows if r.get("kind") != "classical")  # baselines have no run to test
    assert (project / "ladder" / best / "test_reads.json").is_file()  # the read is recorded with the run
    assert json.loads((project / "ladder" / "metrics.json").read_text())["n"] == len(easy_cache.indices("test"))


def _two_rung_ladder(tmp: Path) -> Path:
    path = tmp / "ladder.yaml"
    path.write_text("rungs:\n  - name: linear\n    config: {model: {name: linear}}\n"
                    "  - name: mlp\n    config: {model: {name: mlp, args: {hidden: [8]}}}\n")  # fmt: skip
    return path


@pytest.mark.parametrize("where", ["", "absent"])  # a folder that is not a run; no folder at all
def test_cli_evaluate_on_something_that_is_not_a_run(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no best checkpoint" in err and "Traceback" not in err


def test_evaluate_with_the_wrong_cache_is_refused(easy_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_easy_images(tmp_path / "other", per_class=6, seed=3)
    other = prepare(open_source(tmp_path / "other"), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)
    run = fresh_copy(easy_run, tmp_path / "run")
    assert main(["evaluate", str(run), "--cache", str(other.path)]) == 2
    assert "not the cache" in capsys.readouterr().err
    assert not (run / "test_reads.json").exists()  # a refused evaluation reads nothing
