"""``tellapart fit --seeds N``: the chosen configuration trained N times, each tested once, one model exported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _fixtures_train import write_easy_images
from scipy import stats

from tellapart import UserError
from tellapart.autofit import FitConfig
from tellapart.autofit._run import _seeds_that_fit
from tellapart.cli import main
from tellapart.train import seed_spread
from tellapart.train._ladder import _aggregate

#: One candidate, so the one round is the last and its time goes to the seeds (seconds on a busy machine).
QUICK = ("--architectures", "cnn_s", "--augment", "none", "--baselines", "none", "--pretrained", "off", "--no-export", "--quiet", "--device", "cpu")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    easy = tmp_path_factory.mktemp("seeds") / "easy"
    write_easy_images(easy, per_class=30, size=16)
    out = easy.parent / "fit"
    assert main(["fit", str(easy), "--out", str(out), "--budget", "60s", "--seeds", "3", *QUICK]) == 0
    return out


def test_seed_spread_is_the_student_t_interval_of_the_mean() -> None:
    values = [0.90, 0.92, 0.97]
    spread = seed_spread(values)
    mean, sem = sum(values) / 3, stats.sem(values)
    lo, hi = stats.t.interval(0.95, 2, loc=mean, scale=sem)
    assert spread.n == 3 and math.isclose(spread.mean, mean, abs_tol=1e-6)
    assert spread.ci is not None and math.isclose(spread.ci[0], lo, abs_tol=1e-6) and math.isclose(spread.ci[1], hi, abs_tol=1e-6)
    assert "±" in spread.text() and "95% t-interval" in spread.text()
    one = seed_spread([0.5])
    assert one.std is None and one.ci is None and "1 seed" in one.text()


def test_the_ladder_aggregate_gives_the_same_interval_next_to_mean_and_std(tmp_path: Path) -> None:
    rows = [{"model": "cnn", "params": 10, "val_acc": v, "val_loss": 0.3, "best_epoch": 1, "epochs": 2,
             "train_seconds": 1.0, "images_per_s": 100.0} for v in (0.8, 0.84, 0.9)]
    row = _aggregate(rows, tmp_path, 3)
    assert row["val_acc_ci"] == list(seed_spread([0.8, 0.84, 0.9]).ci or ())
    assert row["val_acc_ci"][0] < row["val_acc"] < row["val_acc_ci"][1]
    assert _aggregate(rows[:1], tmp_path, 1)["val_acc_ci"] is None


def test_bad_seed_counts_are_refused_by_option_name_and_one_seed_resumes_old_fits() -> None:
    for bad in (0, -2, 1000):
        with pytest.raises(UserError, match="--seeds"):
            FitConfig(seeds=bad)
    assert "seeds" not in FitConfig().request()  # a fit folder made before --seeds still resumes
    assert FitConfig(seeds=3).request()["seeds"] == 3


def test_seeds_are_reduced_when_the_last_round_cannot_give_each_three_epochs() -> None:
    ips, fixed = {"cnn_s+none": 1000.0}, {"cnn_s+none": 1.5}  # 1,000 images/s; 1.5 s to set a run up
    # an epoch of 1,000 train + 300 val images costs about 1.4 s, so 3 epochs and the set-up about 5.7 s a seed
    assert _seeds_that_fit(5, 60.0, fixed, ips, 1000, 300, max_epochs=60) == 5
    assert _seeds_that_fit(5, 12.0, fixed, ips, 1000, 300, max_epochs=60) == 2
    assert _seeds_that_fit(5, 3.0, fixed, ips, 1000, 300, max_epochs=60) == 1  # one run always remains


def test_every_seed_is_trained_in_the_last_round_and_tested_once_after_selection(seeded: Path) -> None:
    plan = json.loads((seeded / "plan.json").read_text())
    last = plan["rounds"][-1]
    seeds = plan["seeds"]
    assert seeds["asked"] == 3 and seeds["used"] == last["seeds"] and seeds["used"] >= 2
    assert ("why_reduced" in seeds) == (seeds["used"] < 3)
    runs = [r["run"] for r in seeds["runs"]]
    assert len(set(runs)) == len(runs) == seeds["used"]
    assert sorted(r["seed"] for r in seeds["runs"]) == list(range(seeds["used"]))
    chosen_at = (seeded / "chosen.json").stat().st_mtime
    for run in runs:
        reads = json.loads((seeded / run / "test_reads.json").read_text())
        assert [r["split"] for r in reads] == ["test"], run  # each seed's model read the test split once
        assert (seeded / run / "summary.json").stat().st_mtime <= chosen_at  # trained before the choice was final


def test_chosen_json_and_the_report_give_mean_std_and_t_interval_and_one_exported_model(seeded: Path) -> None:
    chosen = json.loads((seeded / "chosen.json").read_text())
    seeds = chosen["seeds"]
    vals = [r["val_acc"] for r in seeds["runs"]]
    tests = [r["test_acc"] for r in seeds["runs"]]
    assert all(isinstance(v, float) for v in vals + tests)
    assert math.isclose(seeds["val_acc"]["mean"], sum(vals) / len(vals), abs_tol=1e-6)
    assert math.isclose(seeds["test_acc"]["mean"], sum(tests) / len(tests), abs_tol=1e-6)
    lo, hi = seeds["test_acc"]["ci"]
    assert lo <= seeds["test_acc"]["mean"] <= hi
    # one model is exported and served: the best seed on validation, named
    best = max(seeds["runs"], key=lambda r: r["val_acc"])
    assert chosen["run"] == seeds["exported"]["run"] and chosen["val_acc"] == best["val_acc"]
    assert "best of the seeds on validation" in seeds["exported"]["why"]
    metrics = json.loads((seeded / "metrics.json").read_text())
    assert metrics["run"].endswith(chosen["run"])
    report = (seeded / "report.html").read_text()
    assert "Seeds of the chosen configuration" in report and "95% t-interval" in report and "filled in once" not in report
    assert seeds["test_text"] in report and chosen["run"] in report


def test_the_cli_prints_the_spread_and_which_seed_is_served(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    easy = seeded.parent / "easy"
    assert main(["fit", str(easy), "--out", str(seeded), "--budget", "60s", "--seeds", "3", *QUICK]) == 0  # complete: read back
    out = capsys.readouterr().out
    assert "seed(s) of cnn_s+" in out and "95% t-interval" in out and "exported and served:" in out
