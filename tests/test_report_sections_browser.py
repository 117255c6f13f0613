"""The report's trust sections, rendered by headless Chromium at a laptop's width.

A real run on a dataset with test images copied into train and a few train images in the wrong
class folder: the duplicates section must give the exact pair count with both thumbnails of each
pair, the paired comparison its verdict, the label-issue section the flagged images, and a wide
leaderboard must scroll inside its own box instead of widening the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _fixtures_train import TINY_CNN, fast_config, write_easy_images
from PIL import Image

from tellapart.data import (
    Cache,
    PrepareConfig,
    Preprocess,
    find_label_issues,
    label_issues_section,
    open_source,
    prepare,
)
from tellapart.evaluate import evaluate_run
from tellapart.train import train

CHROMIUM = "/usr/bin/chromium"
WIDTH = 1300  # px: a laptop window, where the leaderboard used to overflow
COPIED = 3  # test images copied into train: exactly this many exact pairs cross the splits
MISLABELLED = 2  # train images of "right" moved into the "left" folder

#: Appended to a copy of the report (the report itself has no script): once laid out, writes the
#: page's and the leaderboard box's widths into the DOM, where --dump-dom can read them.
_MEASURE = """<script>
window.addEventListener("load", () => {
  const box = document.querySelector("#leaderboard .table-wrap");
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({
    window: window.innerWidth, page: document.documentElement.scrollWidth,
    box_right: box.getBoundingClientRect().right, box_client: box.clientWidth, box_scroll: box.scrollWidth,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (`apt-get install -y chromium`) to run the browser tests")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}  # keep Chromium's caches out of the real home
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, check=False)


def _leaking_dataset(root: Path) -> Path:
    """``train/`` and ``test/`` class folders, ``COPIED`` test images also copied into train, ``MISLABELLED`` in the wrong folder."""
    write_easy_images(root / "train", per_class=16, size=16, seed=0)
    write_easy_images(root / "test", per_class=6, size=16, seed=1)
    for k, image in enumerate(sorted((root / "test" / "left").glob("*.png"))[:COPIED]):
        shutil.copy(image, root / "train" / "left" / f"copied-{k}.png")
    for k, image in enumerate(sorted((root / "train" / "right").glob("*.png"))[:MISLABELLED]):
        image.rename(root / "train" / "left" / f"mislabelled-{k}.png")
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("sections")
    cache = prepare(open_source(_leaking_dataset(tmp / "data")), tmp / "cache",
                    PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)
    run = tmp / "run"
    train(cache, fast_config(*TINY_CNN), run, progress=False)
    test_rows = np.sort(Cache(cache.path).indices("test"))
    always_left = np.full(len(test_rows), cache.class_names.index("left"))
    # the names a long fit leaves on its leaderboard, with every column the report shows
    leaderboard = [
        {"rank": k + 1, "rung": f"r{k % 3}-cnn_m+shift_rotate_scale-seed{k}-with-a-long-descriptive-suffix", "model": "cnn_m",
         "val_acc": 0.9 - 0.01 * (k // 2), "val_acc_std": 0.004, "val_loss": 0.3 + 0.01 * k, "best_epoch": 12, "epochs": 20,
         "train_seconds": 123.4 + k, "images_per_s": 2345.6, "params": 1_234_567, "seeds": 3}
        for k in range(8)
    ]
    issues = find_label_issues(cache, folds=3, model="logreg")
    metrics = evaluate_run(run, split="test", cache=cache.path, leaderboard=leaderboard,
                           compare={"always left": always_left}, extra_sections=[label_issues_section(issues, cache)])
    return Path(metrics["report"]), {**metrics, "label_issues": [i.id for i in issues.issues]}


def _rendered(report: Path, tmp_path: Path, width: int) -> tuple[str, dict[str, float]]:
    measured = tmp_path / f"measured-{width}.html"
    measured.write_text(report.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    result = _chromium([f"--window-size={width},1600", "--dump-dom", measured.resolve().as_uri()], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', result.stdout)
    assert found, f"the page's widths were not measured; chromium said:\n{result.stderr[-2000:]}"
    return result.stdout, json.loads(found.group(1).replace("&quot;", '"'))


def _section(dom: str, section_id: str) -> str:
    found = re.search(rf'<section id="{section_id}">(.*?)</section>', dom, re.DOTALL)
    assert found, f"section {section_id!r} is missing from the rendered page"
    return found.group(1)


def test_duplicates_section_gives_the_exact_count_and_both_thumbnails_of_each_pair(
    report: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    dom, _ = _rendered(report[0], tmp_path, WIDTH)
    assert "<h2>Duplicates across splits</h2>" in dom
    warnings = _section(dom, "warnings")
    assert f"{COPIED} exact duplicate pair(s) link the test split to another split" in warnings
    duplicates = _section(dom, "duplicates")
    thumbnails = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', duplicates)
    assert len(thumbnails) == 2 * COPIED  # each pair shown side by side
    assert duplicates.count("[test]") == COPIED


def test_paired_comparison_section_gives_its_verdict(report: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    dom, _ = _rendered(report[0], tmp_path, WIDTH)
    section = _section(dom, "extra-is-the-chosen-model-really-better")
    assert "<h2>Is the chosen model really better?</h2>" in section
    (comparison,) = report[1]["comparisons"]  # type: ignore[misc]
    assert comparison["other"] == "always left"
    assert comparison["verdict"] in section and "McNemar" in comparison["verdict"]


def test_label_issue_section_shows_the_flagged_images(report: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    dom, _ = _rendered(report[0], tmp_path, WIDTH)
    section = _section(dom, "extra-likely-label-errors")
    assert "<h2>Likely label errors</h2>" in section
    flagged: list[str] = report[1]["label_issues"]  # type: ignore[assignment]
    assert any("mislabelled-" in f for f in flagged), flagged  # the images in the wrong folder are found
    thumbnails = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', section)
    assert len(thumbnails) == min(len(flagged), 24)
    assert all(f in section for f in flagged)


@pytest.mark.parametrize("width", [WIDTH, 900])
def test_a_wide_leaderboard_scrolls_in_its_box_and_never_widens_the_page(
    report: tuple[Path, dict[str, object]], tmp_path: Path, width: int
) -> None:
    _, m = _rendered(report[0], tmp_path, width)
    assert m["page"] <= m["window"], f"the page is {m['page']} px wide in a {m['window']} px window"
    assert m["box_right"] <= m["window"]
    if width < WIDTH:  # too narrow for the table: its own box scrolls
        assert m["box_scroll"] > m["box_client"]


def test_the_rendered_report_is_not_blank_at_laptop_width(report: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    result = _chromium([f"--screenshot={shot}", f"--window-size={WIDTH},1600", report[0].resolve().as_uri()], tmp_path)
    assert shot.exists(), f"no screenshot; chromium said:\n{result.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == (WIDTH, 1600)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 16, "the screenshot is (nearly) blank"
