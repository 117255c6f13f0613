"""The built-in synthetic dataset: Kaggle layout, determinism, and no one-number giveaway."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tellapart._errors import UserError
from tellapart.data import _synth
from tellapart.data._synth import SynthConfig, render_pair, synth_faces

SMALL = SynthConfig(pairs=4, size=64)


def _write(folder: Path, cfg: SynthConfig = SMALL) -> Path:
    return synth_faces(folder, cfg, progress=False)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_faces_and_comics_that_pair_by_stem(tmp_path: Path) -> None:
    out = _write(tmp_path / "out")

    assert out == tmp_path / "out"
    assert _names(out) == ["comics", "face"]
    assert _names(out / "face") == _names(out / "comics") == [f"{i:05d}.jpg" for i in range(4)]


def test_folder_names_are_options(tmp_path: Path) -> None:
    out = _write(tmp_path / "out", SynthConfig(pairs=2, size=32, face_dir="real", comic_dir="drawn"))

    assert _names(out) == ["drawn", "real"]
    assert _names(out / "real") == _names(out / "drawn") == ["00000.jpg", "00001.jpg"]


def test_images_are_rgb_jpegs_of_the_configured_size(tmp_path: Path) -> None:
    out = _write(tmp_path / "out")

    for path in out.rglob("*.jpg"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))


def test_same_seed_gives_identical_files_and_another_seed_different_ones(tmp_path: Path) -> None:
    first, again = _write(tmp_path / "a"), _write(tmp_path / "b")
    other = _write(tmp_path / "c", replace(SMALL, seed=1))

    for path in sorted(first.rglob("*.jpg")):
        relative = path.relative_to(first)
        assert path.read_bytes() == (again / relative).read_bytes()
        assert path.read_bytes() != (other / relative).read_bytes()


def test_a_pair_does_not_depend_on_how_many_are_written(tmp_path: Path) -> None:
    few, more = _write(tmp_path / "few", replace(SMALL, pairs=2)), _write(tmp_path / "more")

    for path in few.rglob("*.jpg"):
        assert path.read_bytes() == (more / path.relative_to(few)).read_bytes()


def test_a_comic_shows_the_same_face_as_its_photo() -> None:
    pairs = [render_pair(np.random.default_rng([7, i]), 64) for i in range(8)]
    # At 16 x 16 pixels ink and texture blur away and what is left is layout and colour.
    photos = np.stack([_coarse(photo) for photo, _ in pairs])
    comics = np.stack([_coarse(comic) for _, comic in pairs])

    similarity = np.corrcoef(comics, photos)[:8, 8:]  # comic i against photo j
    own = np.diag(similarity)
    others = (similarity.sum(axis=1) - own) / 7
    assert (own > others + 0.1).all()


def test_a_seed_gives_the_same_faces_at_every_size() -> None:
    for index in range(3):
        small = render_pair(np.random.default_rng([0, index]), 64)
        large = render_pair(np.random.default_rng([0, index]), 128)
        for a, b in zip(small, large):
            assert b.shape == (128, 128, 3)
            assert np.corrcoef(_coarse(a), _coarse(b))[0, 1] > 0.9


def _coarse(image: np.ndarray) -> np.ndarray:
    assert image.dtype == np.uint8
    return np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR), dtype=np.float32).ravel()


@pytest.mark.parametrize("features", ["mean and std", "channel means and std"])
def test_one_global_statistic_does_not_tell_faces_from_comics(tmp_path: Path, features: str) -> None:
    pytest.importorskip("sklearn", reason="scikit-learn comes with the dev extra")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = _write(tmp_path / "out", SynthConfig(pairs=100, size=64))
    rows, is_comic, pair = [], [], []
    for label, folder in enumerate(("face", "comics")):
        for index, path in enumerate(sorted((out / folder).iterdir())):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
            means = [pixels.mean()] if features == "mean and std" else list(pixels.mean(axis=(0, 1)))
            rows.append([*means, pixels.std()])
            is_comic.append(label)
            pair.append(index)

    model = make_pipeline(StandardScaler(), LogisticRegression())
    scores = cross_val_score(model, np.array(rows), np.array(is_comic), cv=GroupKFold(5), groups=pair)
    assert scores.mean() < 0.75


def test_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(UserError, match="not empty"):
        _write(tmp_path)
    assert _names(tmp_path) == ["notes.txt"]


def test_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("mine")

    with pytest.raises(UserError, match="is a file"):
        _write(tmp_path / "data")


def test_writes_into_an_existing_empty_folder(tmp_path: Path) -> None:
    assert _names(_write(tmp_path)) == ["comics", "face"]


def test_a_failed_run_leaves_the_folder_empty_so_a_rerun_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _synth.render_pair
    calls = []

    def fail_on_third(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(size)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(rng, size)

    monkeypatch.setattr(_synth, "render_pair", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "out")
    assert _names(tmp_path / "out") == []

    monkeypatch.setattr(_synth, "render_pair", real)
    assert len(list(_write(tmp_path / "out").rglob("*.jpg"))) == 8


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("pairs", 0),
        ("pairs", 2.5),
        ("size", 31),
        ("size", "64"),
        ("seed", -1),
        ("quality", 0),
        ("quality", 101),
        ("face_dir", ""),
        ("comic_dir", "a/b"),
        ("comic_dir", "face"),
    ],
)
def test_bad_options_raise_a_user_error_naming_them(option: str, value: object) -> None:
    with pytest.raises(UserError, match=option):
        SynthConfig(**{option: value})
