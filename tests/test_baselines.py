"""Classical baselines, the paired comparison, the default ladder and the augmentations fit searches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _fixtures_train import easy_cache, easy_images  # noqa: F401  (fixtures)

from tellapart import UserError
from tellapart.cli import main
from tellapart.data import Cache
from tellapart.evaluate import paired_comparison
from tellapart.train import DEFAULT_LADDER, AugmentConfig, augment_batch, fit_baseline, run_ladder
from tellapart.train._augment import color_jitter, trivial_augment


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """Horizontal vs vertical stripes at random phases: what gradients (HOG) see, and pixels too."""
    from PIL import Image

    from tellapart.data import PrepareConfig, Preprocess, open_source, prepare

    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    for label in ("horizontal", "vertical"):
        (root / "src" / label).mkdir(parents=True)
        for k in range(30):
            img = np.zeros((16, 16), np.uint8)
            lines = img[rng.integers(0, 2)::4] if label == "horizontal" else img[:, rng.integers(0, 2)::4]
            lines[...] = 220
            Image.fromarray(img).save(root / "src" / label / f"{k}.png")
    return prepare(open_source(root / "src"), root / "cache", PrepareConfig(preprocess=Preprocess(size=16, grayscale=True)), progress=False)


@pytest.mark.parametrize("name", ["logreg", "svm_pixels", "hog_svm"])
def test_each_baseline_learns_easy_images_and_reports_its_cost(easy_cache: Cache, stripes: Cache, name: str) -> None:  # noqa: F811
    cache = stripes if name == "hog_svm" else easy_cache  # HOG's unsigned gradients cannot tell left-bright from right-bright
    model = fit_baseline(cache, name)
    r = model.result
    assert r.val_acc is not None and r.val_acc >= 0.9
    easy_cache = cache
    assert r.train_rows == len(easy_cache.indices("train")) and r.train_seconds > 0 and r.features > 0
    probs = model.predict_proba(easy_cache.indices("val"))
    assert probs.shape == (len(easy_cache.indices("val")), easy_cache.num_classes)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (r.val_loss is not None) == (name == "logreg")  # only logistic regression gives a log loss


def test_a_baseline_fits_on_a_stratified_capped_subset(easy_cache: Cache) -> None:  # noqa: F811
    r = fit_baseline(easy_cache, "logreg", max_train_rows=10).result
    assert r.train_rows <= 11 and r.train_rows_available == len(easy_cache.indices("train"))


def test_an_unknown_baseline_is_refused_by_name(easy_cache: Cache) -> None:  # noqa: F811
    with pytest.raises(UserError, match="unknown baseline 'forest'"):
        fit_baseline(easy_cache, "forest")


def test_the_ladder_puts_baselines_on_its_leaderboard_and_evaluate_tests_a_network(easy_cache: Cache, tmp_path: Path) -> None:  # noqa: F811
    from tellapart.train import Rung

    rungs = [Rung("tiny", {"model": {"name": "linear"}})]
    base = {"device": "cpu", "precision": "fp32", "threads": 1, "batch_size": 8, "checkpoint_every_s": 0, "epochs": 1}
    rows = run_ladder(easy_cache, tmp_path / "ladder", rungs=rungs, base=base, baselines=("logreg",), progress=False)
    assert {r["rung"] for r in rows} == {"baseline:logreg", "tiny"}
    classical = next(r for r in rows if r["rung"] == "baseline:logreg")
    assert classical["kind"] == "classical" and classical["run"] is None and "fitted on" in classical["note"]
    assert (tmp_path / "ladder" / "baselines" / "logreg.json").is_file()  # a re-run reads it back
    assert main(["evaluate", str(tmp_path / "ladder")]) == 0
    assert (tmp_path / "ladder" / "tiny" / "test_reads.json").is_file()


def test_the_default_ladder_neither_flips_nor_pays_for_mish() -> None:
    for rung in DEFAULT_LADDER:
        assert not rung.config.get("augment", {}).get("hflip"), rung.name
        assert rung.config.get("model", {}).get("args", {}).get("activation", "relu") == "relu", rung.name


def test_paired_comparison_counts_disagreements_and_tests_them() -> None:
    labels = np.zeros(100, dtype=int)
    chosen = labels.copy()
    other = labels.copy()
    other[:20] = 1  # the other model misses 20 images the chosen one gets right
    chosen[20:22] = 1  # and gets 2 right that the chosen one misses
    c = paired_comparison(labels, chosen, other, "svm")
    assert (c.only_chosen_right, c.only_other_right, c.n) == (20, 2, 100)
    assert c.difference == pytest.approx(0.18) and c.difference_ci[0] > 0
    assert c.p_value < 0.001 and c.verdict.startswith("better than svm")
    same = paired_comparison(labels, chosen, chosen, "itself")
    assert same.p_value == 1.0 and "not distinguishable" in same.verdict


def test_brightness_scales_pixels_not_the_standardised_mean() -> None:
    mean, std = 0.5, 0.25
    pixels = torch.full((4, 1, 8, 8), 0.6)
    x = (pixels - mean) / std
    black = torch.tensor([-mean / std]).view(1, -1, 1, 1)
    out = color_jitter(x, torch.Generator().manual_seed(0), brightness=0.5, contrast=0.0, black=black)
    back = out * std + mean
    factor = back[:, 0, 0, 0] / 0.6
    assert torch.allclose(back, factor.view(-1, 1, 1, 1) * pixels, atol=1e-5)  # p -> b * p
    assert (factor - 1).abs().max() > 0.05  # and it does change something


def test_trivial_augment_is_per_sample_reproducible_and_never_flips() -> None:
    x = torch.arange(16 * 1 * 12 * 12, dtype=torch.float32).view(16, 1, 12, 12) / 2304.0
    a = trivial_augment(x, torch.Generator().manual_seed(3))
    b = trivial_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    changed = [(a[k] - x[k]).abs().max() > 1e-6 for k in range(16)]
    assert 4 <= sum(changed) < 16  # most images get an op, identity is one of eight
    mirrored = [torch.allclose(a[k], x[k].flip(-1)) for k in range(16)]
    assert not any(mirrored)
    assert AugmentConfig(policy="trivial").enabled and not AugmentConfig().enabled
    y = augment_batch(x, AugmentConfig(policy="trivial"), torch.Generator().manual_seed(3))
    assert torch.equal(y, a)
