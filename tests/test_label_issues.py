"""``find_label_issues`` and ``tellapart data issues`` on real images (scikit-learn's 8x8 digits)
with a few labels flipped on purpose: the flips are found, the right label is suggested, the
test split is never looked at, and user errors are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tellapart._errors import UserError
from tellapart.cli import main
from tellapart.data import (
    Cache,
    FolderSource,
    LabelIssues,
    PrepareConfig,
    Preprocess,
    find_label_issues,
    label_issues_section,
    prepare,
    write_label_issues,
)

NOISE = 0.03  # share of labels flipped to another class


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cache, dict[str, str]]:
    """A cache of the 1,797 digits as class folders of PNGs, 3% filed under a wrong class.

    Returns the cache and {flipped file name: its true class}.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)  # values 0-16 -> 0-255
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(images), int(NOISE * len(images)), replace=False)
    labels = digits.target.copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    root = tmp_path_factory.mktemp("digits") / "images"
    for k, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"digit_{k:04d}.png")
    cfg = PrepareConfig(preprocess=Preprocess(size=8, grayscale=True), workers=1)
    cache = prepare(FolderSource.open(root), root.parent / "cache", cfg, progress=False)
    truth = {f"digit_{k:04d}.png": str(digits.target[k]) for k in flipped}
    return cache, truth


@pytest.fixture(scope="module")
def found(noisy_digits: tuple[Cache, dict[str, str]]) -> LabelIssues:
    cache, _ = noisy_digits
    return find_label_issues(cache, seed=0)  # the default model and filter


def _file_name(item_id: str) -> str:
    return Path(item_id).name


def _checked_flips(cache: Cache, truth: dict[str, str]) -> set[str]:
    """Flipped files in the train and val splits: the only ones a search may look at."""
    rows = np.concatenate([cache.indices("train"), cache.indices("val")])
    return {_file_name(cache.ids[k]) for k in rows} & set(truth)


def test_most_flipped_labels_are_flagged_and_few_others(noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues) -> None:
    cache, truth = noisy_digits
    flips = _checked_flips(cache, truth)
    flagged = {_file_name(i.id) for i in found.issues}
    assert len(flips) >= 30  # the split kept enough flips in train+val for the shares below to mean something
    recall = len(flagged & flips) / len(flips)
    precision = len(flagged & flips) / len(flagged)
    assert recall >= 0.65, f"only {recall:.0%} of the flipped labels were flagged"
    assert precision >= 0.65, f"only {precision:.0%} of the flagged rows were flipped"


def test_flagged_flips_suggest_their_true_class(noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues) -> None:
    _, truth = noisy_digits
    flips = [i for i in found.issues if _file_name(i.id) in truth]
    assert flips and all(i.given != truth[_file_name(i.id)] for i in flips)
    right = sum(i.suggested == truth[_file_name(i.id)] for i in flips)
    assert right / len(flips) >= 0.8


def test_rows_are_ranked_and_point_at_the_original_files(found: LabelIssues) -> None:
    scores = [i.self_confidence for i in found.issues]
    assert scores == sorted(scores)  # most likely wrong first
    first = found.issues[0]
    assert first.path is not None and Path(first.path).is_file() and Path(first.path).parent.name == first.given
    assert first.suggested != first.given and first.suggested_probability > first.self_confidence
    assert found.count == len(found.issues) and found.model == "hog_logreg" and "cleanlab" in found.method


def test_test_rows_are_never_used(noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues) -> None:
    cache, truth = noisy_digits
    test_rows = set(cache.indices("test").tolist())
    assert test_rows  # the cache has a test split to protect
    assert found.rows_checked == len(cache.indices("train")) + len(cache.indices("val")) and not found.sampled
    assert all(i.split in ("train", "val") and i.row not in test_rows for i in found.issues)
    test_flips = {_file_name(cache.ids[k]) for k in test_rows} & set(truth)
    assert test_flips and not test_flips & {_file_name(i.id) for i in found.issues}


def test_max_rows_samples_and_says_so(noisy_digits: tuple[Cache, dict[str, str]]) -> None:
    cache, _ = noisy_digits
    result = find_label_issues(cache, model="logreg", max_rows=400)
    assert result.sampled and 390 <= result.rows_checked <= 410 and result.rows_available > 1000
    assert "sample" in result.summary()


def test_report_section_embeds_thumbnails_and_escapes_text(noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues) -> None:
    cache, _ = noisy_digits
    title, body = label_issues_section(found, cache, top=5)
    assert title == "Likely label errors"
    assert body.count("data:image/png;base64,") == 5 and found.issues[0].id in body
    assert "<script" not in body


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_table_and_writes_json_and_html(
    noisy_digits: tuple[Cache, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, _ = noisy_digits
    out = tmp_path / "issues"
    code, stdout, _ = _run(capsys, "data", "issues", cache.path, "--model", "logreg", "--top", "5", "--out", out)
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].split() == ["file", "given", "suggested", "score"] and len(lines[1:6]) == 5
    record = json.loads((out / "label_issues.json").read_text())
    assert f"{record['count']} likely label error(s)" in stdout and record["count"] == len(record["issues"]) > 5
    assert {"row", "split", "id", "path", "given", "suggested", "self_confidence"} <= set(record["issues"][0])
    page = (out / "label_issues.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 5

    code, _, _ = _run(capsys, "data", "issues", cache.path, "--model", "logreg", "--out", out)
    assert code == 0  # its own earlier output is replaced


def test_cli_default_out_is_beside_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "images"
    for k in range(200):  # two classes, 100 each: small and quick
        folder = root / ("zero" if digits.target[k] % 2 == 0 else "one")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(digits.images[k] * 16, 0, 255).astype(np.uint8)).save(folder / f"{k}.png")
    cache = prepare(FolderSource.open(root), tmp_path / "cache", PrepareConfig(preprocess=Preprocess(size=8, grayscale=True), workers=1), progress=False)
    code, _, _ = _run(capsys, "data", "issues", cache.path, "--model", "logreg", "--folds", "3")
    assert code == 0 and (tmp_path / "cache-label-issues" / "label_issues.json").is_file()
    assert sorted(p.name for p in cache.path.iterdir()) == sorted(["manifest.json", "pixels.u8", "tellapart-cache.json"])


def test_cli_refuses_a_folder_it_did_not_write(
    noisy_digits: tuple[Cache, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, _ = noisy_digits
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "label_issues.json").write_text('{"my": "notes"}')
    code, _, err = _run(capsys, "data", "issues", cache.path, "--model", "logreg", "--out", mine)
    assert code == 2 and err.startswith("error: ") and "choose another --out" in err and len(err.splitlines()) == 1
    assert (mine / "label_issues.json").read_text() == '{"my": "notes"}'


@pytest.mark.parametrize(
    ("options", "names"),
    [
        (["--folds", "1"], "--folds"),
        (["--model", "resnet"], "--model"),
        (["--max-rows", "3"], "--max-rows"),
        (["--max-rows", "20"], "--folds"),  # 2 rows a class: fewer than 5 folds
        (["--filter-by", "vibes"], "--filter-by"),
        (["--top", "-1"], "--top"),
        (["--features", "resnet9000"], "--features"),
        (["--features", "efficientnet_lite0", "--model", "kernel"], "--model"),
        (["--model", "features"], "--features"),
        (["--features", "efficientnet_lite0", "--features-size", "8"], "--features-size"),
    ],
)
def test_cli_bad_options_are_one_clear_line(
    noisy_digits: tuple[Cache, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], names: str
) -> None:
    cache, _ = noisy_digits
    code, _, err = _run(capsys, "data", "issues", cache.path, "--out", tmp_path / "o", *options)
    assert code == 2 and err.startswith("error: ") and names in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_names_a_folder_that_is_not_a_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "data", "issues", tmp_path)
    assert code == 2 and "is not a prepared cache" in err and "tellapart data prepare" in err and len(err.splitlines()) == 1


def test_write_refuses_a_file_as_out(noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues, tmp_path: Path) -> None:
    from tellapart._errors import UserError

    cache, _ = noisy_digits
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(UserError, match="not a folder"):
        write_label_issues(found, cache, target)
    assert target.read_text() == "keep me"


def test_cli_names_the_extra_when_cleanlab_is_missing(
    noisy_digits: tuple[Cache, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    cache, _ = noisy_digits
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)  # as if the issues extra were not installed
    code, _, err = _run(capsys, "data", "issues", cache.path, "--model", "logreg", "--out", tmp_path / "o")
    assert code == 2 and "pip install 'tellapart[issues]'" in err and len(err.splitlines()) == 1


def test_the_evaluation_report_shows_the_label_issues_found_in_its_cache(
    noisy_digits: tuple[Cache, dict[str, str]], found: LabelIssues, tmp_path: Path
) -> None:
    from tellapart.data import read_label_issues, write_label_issues
    from tellapart.evaluate import evaluate_run
    from tellapart.train import load_config, train

    cache, _ = noisy_digits
    assert read_label_issues(cache) is None  # nothing written beside this cache yet: no section
    write_label_issues(found, cache)  # what `tellapart data issues CACHE` writes, to its default folder
    again = read_label_issues(cache)
    assert again is not None and again.issues == found.issues
    cfg = load_config(None, ["device=cpu", "precision=fp32", "threads=1", "epochs=1", "model.name=linear"])
    run = tmp_path / "run"
    train(cache, cfg, run, progress=False)
    report = Path(evaluate_run(run)["report"]).read_text()
    assert "Likely label errors" in report and f"{found.count:,} likely label error(s)" in report
    assert report.count("suggested: ") == min(found.count, 24)  # one card per shown issue


def test_given_features_are_cross_validated_and_named(noisy_digits: tuple[Cache, dict[str, str]]) -> None:
    cache, truth = noisy_digits
    # features that know the true digit for most rows (a one-hot of the true class, blurred by noise):
    # what a good backbone gives; the flips are then the rows whose given label disagrees
    from sklearn.datasets import load_digits

    from tellapart.data import IssueFeatures

    true_by_name = {f"digit_{k:04d}.png": int(t) for k, t in enumerate(load_digits().target)}
    true = np.array([true_by_name[Path(i).name] for i in cache.ids])
    rng = np.random.default_rng(3)
    matrix = (np.tile(np.eye(10)[true], 13) + rng.normal(0, 0.5, (len(true), 130))).astype(np.float32)  # 130-d, as wide as backbones' are
    result = find_label_issues(cache, features=IssueFeatures("test features", matrix))
    assert result.model == "features" and "logistic regression on standardised test features" in result.method
    flagged = {Path(i.id).name for i in result.issues}
    checked = {Path(cache.ids[k]).name for k in np.concatenate([cache.indices("train"), cache.indices("val")])}
    flips = set(truth) & checked
    assert len(flagged & flips) >= 0.7 * len(flips) and len(flagged - flips) <= 0.2 * len(flagged)
    with pytest.raises(UserError, match="one feature vector per row"):
        find_label_issues(cache, features=IssueFeatures("short", matrix[:10]))


def test_cli_features_of_a_real_pretrained_backbone_are_cached_in_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "images"
    for k in range(120):  # two classes of 60: EfficientNet-Lite0 at 64 px, a few seconds
        folder = root / ("even" if digits.target[k] % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(digits.images[k] * 16, 0, 255).astype(np.uint8)).save(folder / f"{k}.png")
    cfg = PrepareConfig(preprocess=Preprocess(size=8, grayscale=True), workers=1)
    cache = prepare(FolderSource.open(root), tmp_path / "cache", cfg, progress=False)
    code, stdout, _ = _run(capsys, "data", "issues", cache.path, "--features", "efficientnet_lite0", "--folds", "3", "--quiet")
    assert code == 0, stdout
    record = json.loads((tmp_path / "cache-label-issues" / "label_issues.json").read_text())
    assert record["model"] == "features" and "efficientnet_lite0 features (ImageNet weights, 64 px)" in record["method"]
    assert [p.name for p in (cache.path / "features").iterdir()] and Cache(cache.path).verify() is not None
    code, _, _ = _run(capsys, "data", "issues", cache.path, "--features", "efficientnet_lite0", "--folds", "3", "--quiet")
    assert code == 0  # the second run reuses the cached features and replaces its own output


def test_cli_features_into_a_cache_it_cannot_write_is_one_clear_line(
    noisy_digits: tuple[Cache, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tellapart.train._features as features_module

    def refused(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(features_module, "_create", refused)  # what a read-only cache folder does (root ignores chmod)
    cache, _ = noisy_digits
    code, _, err = _run(capsys, "data", "issues", cache.path, "--features", "efficientnet_lite0", "--out", tmp_path / "o", "--quiet")
    assert code == 2 and err.startswith("error: cannot write backbone features into") and "make the cache folder writable" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
