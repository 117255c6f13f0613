"""``tellapart fit``: data-aware decisions, budgeted halving, one test read, resume, the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _fixtures_train import write_easy_images
from _images import write_idx

from tellapart import UserError
from tellapart.cli import main
from tellapart.data import open_source
from tellapart.autofit import DataProfile, FitConfig, candidates, decide, fit, parse_budget, profile_source

#: What every end-to-end test here searches: one small CNN, two augmentations, no export (seconds).
QUICK = ("--architectures", "cnn_s", "--augment", "none,trivial", "--no-export", "--quiet", "--device", "cpu")


@pytest.fixture(scope="module")
def easy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fit") / "easy"
    write_easy_images(folder, per_class=40, size=24)
    return folder


@pytest.fixture(scope="module")
def fitted(easy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit-out") / "fit"
    assert main(["fit", str(easy), "--out", str(out), "--budget", "90s", *QUICK]) == 0
    return out


def _profile(**kw: object) -> DataProfile:
    base = dict(images=1000, sampled=256, median_short_side=28, median_long_side=28, grey_fraction=1.0,
                class_counts={"a": 500, "b": 500}, has_test_split=False)
    return DataProfile(**{**base, **kw})  # type: ignore[arg-type]


def test_budget_parsing_accepts_durations_and_refuses_nonsense() -> None:
    assert parse_budget("90") == 90 and parse_budget("90s") == 90
    assert parse_budget("10m") == 600 and parse_budget("1h30m") == 5400 and parse_budget("1.5h") == 5400
    for bad in ("", "ten minutes", "5x", "-3m"):
        with pytest.raises(UserError, match="--budget"):
            parse_budget(bad)


def test_tiny_grey_images_keep_their_size_and_one_channel() -> None:
    d = decide(_profile(), FitConfig(budget_s=300))
    assert (d.size, d.grayscale, d.class_weights) == (28, True, "none")
    assert "never upscaled" in d.reasons["size"] and "grey" in d.reasons["grayscale"]


def test_large_colour_images_are_reduced_to_the_preset_cap() -> None:
    d = decide(_profile(median_short_side=1024, median_long_side=1024, grey_fraction=0.1), FitConfig(budget_s=600))
    assert d.size == 64 and not d.grayscale and "1024 px" in d.reasons["size"]
    assert decide(_profile(median_short_side=1024, grey_fraction=0.0), FitConfig(budget_s=600, preset="best")).size == 96


def test_imbalanced_classes_get_balanced_weights_and_every_choice_can_be_overridden() -> None:
    skewed = _profile(class_counts={"a": 900, "b": 100})
    assert decide(skewed, FitConfig()).class_weights == "balanced"
    d = decide(skewed, FitConfig(class_weights="none", size=48, grayscale=False))
    assert (d.class_weights, d.size, d.grayscale) == ("none", 48, False)
    assert "upscales" in d.reasons["size"]  # asked for 48 px on 28-px images: said so


def test_no_candidate_flips_unless_flipping_is_one_of_the_searched_options() -> None:
    d = decide(_profile(), FitConfig(augment=("none", "shift_rotate_scale", "trivial")))
    for c in candidates(d, train_images=800, num_classes=2, seed=0):
        assert not c.config["augment"].get("hflip"), c.name
        assert c.config["model"]["args"].get("activation", "relu") == "relu"


def test_bad_options_are_refused_by_name() -> None:
    with pytest.raises(UserError, match="--augment"):
        FitConfig(augment=("mirror",))
    with pytest.raises(UserError, match="--budget"):
        FitConfig(budget_s=0)
    with pytest.raises(UserError, match="--size"):
        FitConfig(size=100_000)


def test_profile_reads_every_source_format(tmp_path: Path, easy: Path) -> None:
    rng = np.random.default_rng(0)
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "train-images-idx3-ubyte", rng.integers(0, 255, (30, 12, 12), dtype=np.uint8))
    write_idx(idx / "train-labels-idx1-ubyte", np.arange(30, dtype=np.uint8) % 3)
    csv_path = easy.parent / "list.csv"  # paths relative to the list's folder, inside it
    csv_path.write_text("path,label\n" + "".join(f"{p.relative_to(easy.parent)},{p.parent.name}\n" for p in sorted(easy.rglob("*.png"))))
    for source, size, grey in ((easy, 24, False), (idx, 12, True), (csv_path, 24, False)):
        p = profile_source(open_source(source))
        assert (p.median_short_side, p.grey_fraction >= 1.0) == (size, grey), source
        assert sum(p.class_counts.values()) == p.images


def test_fit_end_to_end_writes_plan_leaderboard_report_and_one_test_read(fitted: Path) -> None:
    plan = json.loads((fitted / "plan.json").read_text())
    assert plan["status"] == "done"
    assert {"profile", "prepare", "baselines", "search", "test"} <= set(plan["steps"])
    assert plan["decisions"]["size"] == 24 and plan["decisions"]["grayscale"] is False
    board = json.loads((fitted / "leaderboard.json").read_text())
    kinds = {r["kind"] for r in board}
    assert kinds == {"classical", "network"}  # baselines on the same split, beside the networks
    assert {r["model"] for r in board if r["kind"] == "classical"} == {"logreg", "svm_pixels", "hog_svm"}
    chosen = json.loads((fitted / "chosen.json").read_text())
    run = fitted / chosen["run"]
    assert (run / "checkpoints" / "best.pt").is_file()
    reads = json.loads((run / "test_reads.json").read_text())
    assert [r["split"] for r in reads] == ["test"]  # the test split, read once
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9  # the easy images are separable
    assert any("classical" in c["other"] for c in metrics["comparisons"])
    page = (fitted / "report.html").read_text()
    assert "How the budget was spent" in page and "Is the chosen model really better?" in page
    assert "baseline:logreg" in page


def test_rerunning_the_same_fit_reads_back_without_a_second_test_read(fitted: Path, easy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = json.loads((fitted / "chosen.json").read_text())
    summary = fitted / chosen["run"] / "summary.json"
    before = summary.stat().st_mtime_ns
    assert main(["fit", str(easy), "--out", str(fitted), "--budget", "90s", *QUICK]) == 0
    assert summary.stat().st_mtime_ns == before  # nothing retrained
    reads = json.loads((fitted / chosen["run"] / "test_reads.json").read_text())
    assert len(reads) == 1
    assert "tested once" in capsys.readouterr().out


def test_another_command_into_the_same_folder_is_refused(fitted: Path, easy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", str(easy), "--out", str(fitted), "--budget", "5m", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "another command" in err and "budget_s" in err and "Traceback" not in err


def test_fit_refuses_a_folder_it_did_not_write(tmp_path: Path, easy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["fit", str(easy), "--out", str(foreign), *QUICK]) == 2
    assert "not a fit folder" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_predict_and_evaluate_accept_the_fit_folder(fitted: Path, easy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = sorted((easy / "left").glob("*.png"))[0]
    assert main(["predict", str(fitted), str(image)]) == 0
    assert "\tleft\t" in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_fit_resumes_and_keeps_finished_runs(tmp_path: Path, easy: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tellapart", "fit", str(easy), "--out", str(out), "--budget", "90s", *QUICK]
    env = {**os.environ, "TELLAPART_NO_REEXEC": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("runs/*/summary.json")):
        time.sleep(0.2)
        assert proc.poll() is None or list(out.glob("runs/*/summary.json")), "fit ended before a run finished"
    proc.kill()
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/summary.json")}
    assert finished, "no run finished within two minutes"
    spent = json.loads((out / "plan.json").read_text())["spent_s"]
    assert spent > 0
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was retrained"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["status"] == "done" and plan["spent_s"] >= spent  # the time before the kill still counts
    chosen = json.loads((out / "chosen.json").read_text())
    assert len(json.loads((out / chosen["run"] / "test_reads.json").read_text())) == 1


def test_fit_from_python_on_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 120
    labels = np.arange(n, dtype=np.uint8) % 2
    images = rng.integers(0, 60, (n, 12, 12)).astype(np.uint8)
    images[labels == 1, :, 6:] += 150  # class 1: a bright right half
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    cfg = FitConfig(budget_s=60, architectures=("cnn_s",), augment=("none",), baselines=("logreg",), export=False, device="cpu")
    result = fit(tmp_path, tmp_path / "out", cfg, progress=False)
    assert result.plan["decisions"]["grayscale"] is True and result.plan["decisions"]["size"] == 12
    assert result.test["n"] == len(json.loads((tmp_path / "out" / "cache" / "manifest.json").read_text())["ids"]) - \
        sum(1 for s in json.loads((tmp_path / "out" / "cache" / "manifest.json").read_text())["splits"] if s != "test")
    assert result.chosen["kind"] == "network"


def test_a_missing_extra_is_named_not_a_traceback(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['optuna'] = None\n"  # as on a base install without the tune extra
        "from tellapart.cli import main\n"
        f"sys.exit(main(['tune', {str(tmp_path)!r}, '--space', 's1_grid', '--out', {str(tmp_path / 'study')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'tellapart[tune]'" in done.stderr and "Traceback" not in done.stderr


def _write_format(kind: str, easy: Path, root: Path) -> tuple[Path, list[str]]:
    """``easy``'s images in another source format; returns the source and extra CLI options."""
    import pickle
    import shutil
    import zipfile

    from PIL import Image

    from _images import write_cifar_batch

    files = sorted(easy.rglob("*.png"))
    if kind == "csv":
        shutil.copytree(easy, root / "images")
        (root / "list.csv").write_text("path,label\n" + "".join(f"images/{p.relative_to(easy)},{p.parent.name}\n" for p in files))
        return root / "list.csv", []
    if kind == "zip":
        with zipfile.ZipFile(root / "easy.zip", "w") as z:
            for p in files:
                z.write(p, f"easy/{p.relative_to(easy)}")
        return root / "easy.zip", []
    if kind == "paired":  # each "left" image's twin is its mirror in "right" (same stem)
        for k, p in enumerate(sorted((easy / "left").glob("*.png"))):
            for side, img in (("face", Image.open(p)), ("comics", Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
                (root / "pairs" / side).mkdir(parents=True, exist_ok=True)
                img.save(root / "pairs" / side / f"{k:03d}.png")
        return root / "pairs", ["--kind", "paired"]
    folder = root / "cifar-10-batches-py"  # cifar: 32x32 RGB batches, its own test batch
    folder.mkdir()
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32))) for p in files])
    labels = [0 if p.parent.name == "left" else 1 for p in files]
    order = np.random.default_rng(0).permutation(len(files))
    write_cifar_batch(folder / "data_batch_1", images[order[:64]], [labels[i] for i in order[:64]])
    write_cifar_batch(folder / "test_batch", images[order[64:]], [labels[i] for i in order[64:]])
    names = [b"left", b"right"] + [f"unused{k}".encode() for k in range(8)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return root, []


@pytest.mark.parametrize("kind", ["csv", "zip", "cifar", "paired"])
def test_fit_runs_end_to_end_on_each_source_format(kind: str, easy: Path, tmp_path: Path) -> None:
    source, extra = _write_format(kind, easy, tmp_path)
    out = tmp_path / "fit"
    assert main(["fit", str(source), "--out", str(out), "--budget", "45s", "--baselines", "logreg", *QUICK, *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] > 0
    assert json.loads((out / "plan.json").read_text())["status"] == "done"


def test_the_seed_sets_fits_split_as_its_help_says(easy: Path, tmp_path: Path) -> None:
    # fit --seed is "split and training seed": two seeds must deal the images to train/val/test differently
    from tellapart.autofit._run import _prepare_config
    from tellapart.data import prepare

    decisions = decide(profile_source(open_source(easy)), FitConfig())
    splits = []
    for seed in (0, 1):
        cache = prepare(open_source(easy), tmp_path / f"cache-{seed}", _prepare_config(decisions, FitConfig(seed=seed)), progress=False)
        splits.append(json.loads((cache.path / "manifest.json").read_text())["splits"])
    assert splits[0] != splits[1]
    again = prepare(open_source(easy), tmp_path / "again", _prepare_config(decisions, FitConfig(seed=1)), progress=False)
    assert json.loads((again.path / "manifest.json").read_text())["splits"] == splits[1]
