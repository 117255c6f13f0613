"""Fault injection: hostile files, bad invocations, kills, full disks and corrupted folders.

Every case names what a user should see. ``bench/reliability.py`` runs this file and writes the
table of what was tried and how it came out to ``RELIABILITY.md``.

Sections (the report groups cases by the first word after ``test_``):

- corpus:  a hostile dataset written here (truncated, empty, mislabelled, 16-bit, CMYK, palette +
  alpha, decompression bombs, symlink loops, hidden and extension-less files, unicode names);
  each file has one expected outcome in the prepared cache.
- cli:     bad invocations, in process: exit status 2 and one ``error:`` line naming the option or
  file, never a traceback.
- kill:    ``train`` killed (``os._exit(137)``) at each checkpoint boundary, then ``--resume``:
  the curves equal an uninterrupted run's.
- disk:    full disks, simulated (ENOSPC) and real (a 2 MB tmpfs, when mounting is permitted).
- corrupt: caches and run folders damaged after the fact.
- data:    silent data decisions that must now be said out loud.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from _fixtures_train import (  # noqa: F401 - fixtures
    FAST,
    TINY_CNN,
    csv_rows,
    easy_cache,
    easy_images,
    easy_run,
    fast_config,
)
from _images import png_bomb, write_image

from tellapart import UserError
from tellapart.cli import main
from tellapart.data import Cache, PrepareConfig, Preprocess, decode, open_source, prepare, verify_cache
from tellapart.train import read_checkpoint, train

CURVE_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # the deterministic columns


# --------------------------------------------------------------------------- the hostile corpus


@dataclass(frozen=True)
class Case:
    path: str  # relative to the dataset root
    expect: str  # "kept", "note", "unreadable", or "left out"
    detail: str = ""  # a word the error or reason must contain
    write: Callable[[Path], None] = lambda p: None


def _png(seed: int, size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Callable[[Path], None]:
    return lambda p: write_image(p, size, mode=mode, seed=seed)


def _jpeg(seed: int) -> Callable[[Path], None]:
    return lambda p: write_image(p, (24, 24), seed=seed, format="JPEG", quality=90)


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _half_of(writer: Callable[[Path], None], suffix: str) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        full = p.with_name("_full" + suffix)
        writer(full)
        data = full.read_bytes()
        full.unlink()
        p.write_bytes(data[: len(data) // 2])

    return write


def _save(make: Callable[[], Image.Image], **kw: object) -> Callable[[Path], None]:
    return lambda p: make().save(p, **kw)


def _sixteen_bit(top: int) -> Callable[[Path], None]:
    ramp = (np.linspace(0, top, 16 * 16).reshape(16, 16)).astype(np.uint16)
    return _save(lambda: Image.fromarray(ramp), format="PNG")


def _white_on_transparent() -> Image.Image:
    rgba = np.full((16, 16, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[4:12, 4:12, 3] = 255  # a white square on a transparent (white) background
    return Image.fromarray(rgba, "RGBA")


def _palette_alpha() -> Image.Image:
    img = Image.fromarray(np.random.default_rng(3).integers(0, 4, (16, 16), dtype=np.uint8) * 60, "L").convert("P")
    img.info["transparency"] = 0
    return img


def _exif_rotated(p: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    write_image(p, (24, 16), seed=77, format="JPEG", exif=exif.tobytes())


def _animated_gif(p: Path) -> None:
    frames = [Image.new("P", (16, 16), k * 40) for k in range(3)]
    frames[0].save(p, save_all=True, append_images=frames[1:])


def _header_bomb(p: Path) -> None:
    bomb = png_bomb(60_000, 60_000)  # ~ 3.6e9 pixels claimed; the IDAT is kept tiny
    p.write_bytes(bomb[:33] + bomb[-12:])  # signature + IHDR + IEND: no pixel data at all


def _cmyk() -> Image.Image:
    return Image.new("RGB", (16, 16), (200, 30, 90)).convert("CMYK")


CORPUS: tuple[Case, ...] = (
    *(Case(f"{c}/png-{k:02d}.png", "kept", write=_png(100 * (c == "b") + k)) for c in "ab" for k in range(12)),
    *(Case(f"{c}/jpeg-{k}.jpg", "kept", write=_jpeg(300 + 100 * (c == "b") + k)) for c in "ab" for k in range(4)),
    Case("a/sixteen-bit-dark.png", "kept", write=_sixteen_bit(200)),
    Case("b/sixteen-bit-mid.png", "kept", write=_sixteen_bit(30000)),
    Case("a/cmyk.jpg", "kept", write=_save(_cmyk, format="JPEG")),
    Case("b/cmyk.tif", "kept", write=_save(_cmyk, format="TIFF")),
    Case("a/palette-alpha.png", "kept", write=_save(_palette_alpha, format="PNG", transparency=0)),
    Case("b/palette-alpha.gif", "kept", write=_save(_palette_alpha, format="GIF", transparency=0)),
    Case("a/grey-alpha.png", "kept", write=_save(lambda: Image.new("LA", (16, 16), (90, 200)), format="PNG")),
    Case("a/white-on-transparent.png", "note", "blank", write=_save(_white_on_transparent, format="PNG")),
    Case("b/white-on-transparent.png", "note", "blank", write=_save(_white_on_transparent, format="PNG")),
    Case("a/animated.gif", "kept", write=_animated_gif),
    Case("b/image.bmp", "kept", write=_png(501)),
    Case("b/image.webp", "kept", write=_png(502)),
    Case("a/exif-rotated.jpg", "kept", write=_exif_rotated),
    Case("b/png-named.jpg", "kept", write=_save(lambda: Image.new("RGB", (16, 16), (1, 2, 3)), format="PNG")),
    Case("a/one-pixel.png", "kept", write=_png(503, (1, 1))),
    Case("b/very-wide.png", "kept", write=_png(504, (2000, 4))),
    Case("a/café-é.png", "kept", write=_png(505)),
    Case("a/日本語の画像.png", "kept", write=_png(506)),
    Case("b/emoji-😀.png", "kept", write=_png(507)),
    Case("b/with space.png", "kept", write=_png(508)),
    Case("b/ÅÄÖ.PNG", "kept", write=_png(509)),
    Case("a/truncated-1.jpg", "unreadable", "runcated", write=_half_of(_jpeg(600), ".jpg")),
    Case("b/truncated-2.jpg", "unreadable", "runcated", write=_half_of(_jpeg(601), ".jpg")),
    Case("a/truncated-1.png", "unreadable", "", write=_half_of(_png(602, (32, 32)), ".png")),
    Case("b/truncated-2.png", "unreadable", "", write=_half_of(_png(603, (32, 32)), ".png")),
    Case("a/zero-bytes.jpg", "unreadable", "empty", write=_bytes(b"")),
    Case("b/zero-bytes.png", "unreadable", "empty", write=_bytes(b"")),
    Case("a/text-renamed.jpg", "unreadable", "not an image", write=_bytes(b"these are my notes\n" * 10)),
    Case("b/html-renamed.png", "unreadable", "not an image", write=_bytes(b"<!doctype html><html><body>404</body></html>")),
    Case("a/random-bytes.png", "unreadable", "", write=_bytes(np.random.default_rng(5).bytes(2000))),
    Case("b/bomb.png", "unreadable", "decompression bomb", write=_bytes(png_bomb())),
    Case("a/header-bomb.png", "unreadable", "decompression bomb", write=_header_bomb),
    Case("a/dangling-link.png", "unreadable", "FileNotFound",
         write=lambda p: p.symlink_to(p.with_name("missing-target.png"))),  # fmt: skip
    Case("a/loop-1.png", "left out", "symlink loop", write=lambda p: p.symlink_to(p.with_name("loop-2.png"))),
    Case("a/loop-2.png", "left out", "symlink loop", write=lambda p: p.symlink_to(p.with_name("loop-1.png"))),
    Case("a/.hidden.png", "left out", "hidden file", write=_png(700)),
    Case("b/.DS_Store", "left out", "hidden file", write=_bytes(b"\0\0\0\1Bud1")),
    Case("a/.thumbnails/x.png", "left out", "hidden folder", write=_png(701)),
    Case("a/README", "left out", "no file extension", write=_bytes(b"about this data\n")),
    Case("b/image-without-extension", "left out", "no file extension", write=_save(lambda: Image.new("RGB", (8, 8)), format="PNG")),
    Case("a/notes.txt", "left out", "not an image extension", write=_bytes(b"notes\n")),
    Case("b/Thumbs.db", "left out", "not an image extension", write=_bytes(b"\0" * 64)),
)


def _write_corpus(root: Path) -> None:
    for case in CORPUS:
        path = root / case.path
        path.parent.mkdir(parents=True, exist_ok=True)
        case.write(path)


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cache, str]:
    root = tmp_path_factory.mktemp("corpus") / "data"
    _write_corpus(root)
    out = root.parent / "cache"
    prepare(open_source(root), out, PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)
    cache = Cache(out)
    return cache, cache.summary()


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 60
    assert {c.expect for c in CORPUS} == {"kept", "note", "unreadable", "left out"}


@pytest.mark.parametrize("case", CORPUS, ids=[c.path for c in CORPUS])
def test_corpus_file_has_its_expected_outcome(case: Case, corpus_cache: tuple[Cache, str]) -> None:
    cache, _ = corpus_cache
    skipped = {s["id"]: s["error"] for s in cache.manifest["skipped"]}
    notes = {n["id"]: n["note"] for n in cache.manifest["decode_notes"]}
    if case.expect in ("kept", "note"):
        assert case.path in cache.ids
        assert (case.path in notes) == (case.expect == "note")
        if case.detail:
            assert case.detail in notes[case.path]
    elif case.expect == "unreadable":
        assert case.path in skipped
        assert case.detail in skipped[case.path]
    else:
        assert case.path not in cache.ids and case.path not in skipped
        assert cache.manifest["left_out"].get(case.detail, 0) >= 1


def test_corpus_counts_every_file_left_out_by_reason(corpus_cache: tuple[Cache, str]) -> None:
    cache, summary = corpus_cache
    expected: dict[str, int] = {}
    for case in CORPUS:
        if case.expect == "left out":
            expected[case.detail] = expected.get(case.detail, 0) + 1
    assert cache.manifest["left_out"] == expected
    assert f"left out {sum(expected.values())} file(s)" in summary
    assert "WARNING: 2 image(s) blank after compositing" in summary


def test_corpus_sixteen_bit_pixels_scale_by_bit_depth(tmp_path: Path) -> None:
    dark, mid = tmp_path / "dark.png", tmp_path / "mid.png"
    _sixteen_bit(200)(dark)  # at most 200 of 65535: black to the eye
    _sixteen_bit(30000)(mid)
    pre = Preprocess(size=16, grayscale=True)
    assert decode(str(dark), pre).pixels.max() <= 1  # type: ignore[union-attr]
    got = decode(str(mid), pre).pixels.max()  # type: ignore[union-attr]
    assert abs(int(got) - round(30000 * 255 / 65535)) <= 2


def test_corpus_pixel_limit_is_safe_by_default_and_can_be_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tellapart.data._decode import MAX_PIXELS

    assert MAX_PIXELS <= 179_000_000  # under Pillow's own refusal: a 1 MB PNG cannot cost gigabytes
    big = write_image(tmp_path / "big.png", (1200, 1000), seed=1)
    pre = Preprocess(size=16)
    assert decode(str(big), pre).error is None
    monkeypatch.setenv("TELLAPART_MAX_PIXELS", "1000000")
    error = decode(str(big), pre).error
    assert error and "decompression bomb" in error and "1,000,000" in error and "--max-pixels" in error
    monkeypatch.setenv("TELLAPART_MAX_PIXELS", "2000000")
    assert decode(str(big), pre).error is None


def test_corpus_prepare_max_pixels_reaches_the_decoder_and_the_identity(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for k, label in enumerate("ab"):
        for i in range(3):
            write_image(root / label / f"{i}.png", (16, 16), seed=10 * k + i)
    write_image(root / "a" / "big.png", (1100, 1000), seed=9)
    cache = prepare(open_source(root), tmp_path / "c", PrepareConfig(preprocess=Preprocess(size=8), workers=1, max_pixels=1_000_000), progress=False)
    assert [s["id"] for s in cache.manifest["skipped"]] == ["a/big.png"]
    raised = prepare(open_source(root), tmp_path / "c", PrepareConfig(preprocess=Preprocess(size=8), workers=1), progress=False)
    assert "a/big.png" in raised.ids  # another limit is another cache: rebuilt, not reused


def test_corpus_archive_member_over_the_cap_is_skipped_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "data.zip"
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with zipfile.ZipFile(archive, "w") as zf:
        for k, label in enumerate("ab"):
            for i in range(3):
                path = write_image(tmp_path / "src" / label / f"{i}.png", seed=10 * k + i)
                zf.write(path, f"{label}/{i}.png")
        noise.save(tmp_path / "noise.png")
        zf.write(tmp_path / "noise.png", "a/noise.png")  # about 12 KB
    monkeypatch.setenv("TELLAPART_MAX_MEMBER_MB", "0.005")  # 5 KB
    cache = prepare(open_source(archive), tmp_path / "c", PrepareConfig(preprocess=Preprocess(size=8), workers=1), progress=False)
    skipped = {s["id"]: s["error"] for s in cache.manifest["skipped"]}
    assert "over the" in skipped["a/noise.png"] and "TELLAPART_MAX_MEMBER_MB" in skipped["a/noise.png"]


# --------------------------------------------------------------------------- silent data decisions


def test_data_csv_giving_one_file_two_labels_is_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png")
    write_image(tmp_path / "y.png", seed=1)
    (tmp_path / "list.csv").write_text("path,label\nx.png,cat\ny.png,dog\nx.png,dog\n")
    with pytest.raises(UserError, match=r"list.csv:4: 'x.png' is labelled 'dog' here but 'cat' on line 2"):
        open_source(tmp_path / "list.csv")


def test_data_a_class_with_one_image_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    for i in range(12):
        write_image(root / "many" / f"{i}.png", seed=i)
    write_image(root / "lonely" / "0.png", seed=99)
    cache = prepare(open_source(root), tmp_path / "c", PrepareConfig(preprocess=Preprocess(size=8), workers=1), progress=True)
    err = capsys.readouterr().err
    assert "WARNING: class 'lonely' has 1 image(s) and none in val or test" in err
    assert any("lonely" in n for n in cache.manifest["notes"])


def test_data_pair_dirs_that_do_not_exist_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        write_image(root / label / "0.png")
    with pytest.raises(UserError, match=r"--pair-dirs x,y: .* holds no 'x/' and 'y/'"):
        open_source(root, pair_dirs=("x", "y"))
    assert open_source(root).kind == "folder"  # the default names still fall back quietly


def test_data_foreign_folder_with_a_manifest_is_never_deleted(easy_images: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "project"}')
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not a tellapart cache.*nothing was changed"):
        prepare(open_source(easy_images), mine, PrepareConfig(preprocess=Preprocess(size=8), workers=1), progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "thesis.tex"]
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_data_a_cache_that_gained_a_foreign_file_is_not_replaced(easy_images: Path, tmp_path: Path) -> None:
    cfg = PrepareConfig(preprocess=Preprocess(size=8), workers=1)
    prepare(open_source(easy_images), tmp_path / "c", cfg, progress=False)
    (tmp_path / "c" / "my-notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="my-notes.txt"):
        prepare(open_source(easy_images), tmp_path / "c", cfg, progress=False, force=True)
    assert (tmp_path / "c" / "my-notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- corrupted caches and run folders


def _copy_cache(cache: Cache, dest: Path) -> Path:
    shutil.copytree(cache.path, dest)
    return dest


def _truncate_pixels(p: Path) -> None:
    pixels = p / "pixels.u8"
    os.truncate(pixels, pixels.stat().st_size // 2)


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:  # type: ignore[type-arg]
    def edit(p: Path) -> None:
        m = json.loads((p / "manifest.json").read_text())
        change(m)
        (p / "manifest.json").write_text(json.dumps(m))

    return edit


def _flip_a_byte(p: Path) -> None:
    with open(p / "pixels.u8", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, bool]] = {
    # name: (damage, word the error names, caught on open (else only by verify))
    "truncated pixels": (_truncate_pixels, "pixels.u8", True),
    "missing pixels": (lambda p: (p / "pixels.u8").unlink(), "pixels.u8", True),
    "manifest without splits": (_edit_manifest(lambda m: m.pop("splits")), "splits", True),
    "manifest without labels": (_edit_manifest(lambda m: m.pop("labels")), "labels", True),
    "manifest cut short": (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text()[:200]), "manifest.json", True),
    "manifest of another cache": (_edit_manifest(lambda m: m.update(fingerprint="0" * 32)), "does not belong", True),
    "marker removed": (lambda p: (p / "tellapart-cache.json").unlink(), "tellapart-cache.json", True),
    "old format": (_edit_manifest(lambda m: m.update(format=1)), "format", True),
    "flipped pixel byte": (_flip_a_byte, "checksum", False),
    "labels swapped": (_edit_manifest(lambda m: m.update(labels=[9] * m["n"])), "label", False),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_cache_is_reported_by_name_and_rebuilt_by_prepare(name: str, easy_cache: Cache, easy_images: Path, tmp_path: Path) -> None:
    damage, word, on_open = CORRUPTIONS[name]
    path = _copy_cache(easy_cache, tmp_path / "cache")
    damage(path)
    with pytest.raises(UserError, match=word) as caught:
        verify_cache(path)
    assert "--force" in str(caught.value)
    if on_open:
        with pytest.raises(UserError, match=word):
            Cache(path)
        with pytest.raises(UserError, match=word):  # never mmap's ValueError, a KeyError or a JSONDecodeError
            train(path, fast_config("model.name=linear", epochs=1), tmp_path / "run", progress=False)
        settings = PrepareConfig(**{**easy_cache.manifest["settings"], "preprocess": easy_cache.preprocess, "split": _split(easy_cache), "workers": 1})
        rebuilt = prepare(open_source(easy_images), path, settings, progress=False)  # not "reused"
        assert verify_cache(rebuilt.path).endswith("match their checksum)")


def _split(cache: Cache):  # type: ignore[no-untyped-def]
    from tellapart.data import SplitConfig

    return SplitConfig(**cache.manifest["settings"]["split"])


def test_corrupt_verify_passes_on_a_sound_cache(easy_cache: Cache, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "verify", str(easy_cache.path)]) == 0
    assert "ok" in capsys.readouterr().out


def test_corrupt_run_config_is_reported_by_name(easy_cache: Cache, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = fast_config("model.name=linear", epochs=1)
    from tellapart.train import config_to_dict
    import yaml

    text = yaml.safe_dump({**config_to_dict(cfg), "cache": str(easy_cache.path)}, sort_keys=False)
    lines = text.splitlines(keepends=True)
    (run / "config.yaml").write_text("".join(lines[: len(lines) // 3]))  # cut short by a crash mid-write (the old writer)
    with pytest.raises(UserError, match=r"config.yaml is incomplete"):
        train(easy_cache, cfg, run, resume=True, progress=False)
    (run / "config.yaml").write_text("model: {name: [unclosed\n")
    with pytest.raises(UserError, match=r"config.yaml is not valid YAML"):
        train(easy_cache, cfg, run, resume=True, progress=False)


def test_corrupt_last_checkpoint_is_reported_by_name(easy_run: Path, easy_cache: Cache, tmp_path: Path) -> None:
    run = shutil.copytree(easy_run, tmp_path / "run")
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\3\4 not really")
    with pytest.raises(UserError, match="last.pt is not a readable tellapart checkpoint"):
        train(easy_cache, fast_config(), run, resume=True, progress=False)


# --------------------------------------------------------------------------- kills at checkpoint boundaries

KILL_EPOCHS = 3
KILL_SETTINGS = (*TINY_CNN, "deterministic=true")
#: Where train is killed: each boundary between the files it writes (``NAME@K``: the K-th pass).
KILL_POINTS = (
    "after_config",  # config and ledger written, nothing trained
    "after_best_pt@1",  # first best.pt written, first last.pt not yet
    "after_last_pt@1",  # first last.pt written, metrics.csv not yet
    "before_last_pt@2",  # epoch 2's best.pt may be written, its last.pt not
    f"after_last_pt@{KILL_EPOCHS}",  # the final last.pt written, the final metrics.csv not
)


@pytest.fixture(scope="module")
def uninterrupted(easy_cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    run = tmp_path_factory.mktemp("whole") / "run"
    train(easy_cache, fast_config(*KILL_SETTINGS, epochs=KILL_EPOCHS), run, progress=False)
    return [{k: r[k] for k in CURVE_KEYS} for r in csv_rows(run / "metrics.csv")]


def _train_argv(cache: Path, run: Path) -> list[str]:
    settings = [a for s in (*FAST, *KILL_SETTINGS) for a in ("--set", s)]
    return ["train", str(cache), "--out", str(run), "--epochs", str(KILL_EPOCHS), "--quiet", *settings]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_then_resume_matches_an_uninterrupted_run(
    point: str, easy_cache: Cache, uninterrupted: list[dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "TELLAPART_FAULT": point, "TELLAPART_NO_REEXEC": "1"}
    killed = subprocess.run(
        [sys.executable, "-m", "tellapart", *_train_argv(easy_cache.path, run)], env=env, capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert main(_train_argv(easy_cache.path, run)) == 2  # without --resume: refused, never a silent overwrite
    assert "--resume" in capsys.readouterr().err
    assert main([*_train_argv(easy_cache.path, run), "--resume"]) == 0, capsys.readouterr().err
    got = [{k: r[k] for k in CURVE_KEYS} for r in csv_rows(run / "metrics.csv")]
    assert got == uninterrupted
    assert json.loads((run / "summary.json").read_text())["epochs"] == KILL_EPOCHS
    assert not list(run.rglob(".*tmp-*"))  # no temporary file left behind
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train")] == list(range(1, KILL_EPOCHS + 1))


def test_kill_after_the_final_last_pt_resumes_to_complete_curves(easy_cache: Cache, uninterrupted: list[dict[str, str]], tmp_path: Path) -> None:
    # What a kill between the final last.pt and the final metrics.csv leaves: every checkpoint, one row short.
    run = tmp_path / "run"
    cfg = fast_config(*KILL_SETTINGS, epochs=KILL_EPOCHS)
    train(easy_cache, cfg, run, progress=False)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:-1]))
    (run / "summary.json").unlink()
    train(easy_cache, cfg, run, resume=True, progress=False)
    assert [{k: r[k] for k in CURVE_KEYS} for r in csv_rows(run / "metrics.csv")] == uninterrupted


def test_kill_between_the_first_best_pt_and_last_pt_can_be_resumed(easy_cache: Cache, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = fast_config("model.name=linear", epochs=1)
    train(easy_cache, cfg, run, progress=False)
    (run / "checkpoints" / "last.pt").unlink()  # what the kill leaves: config, ledger, tb, best.pt
    (run / "metrics.csv").unlink()
    (run / "summary.json").unlink()
    result = train(easy_cache, cfg, run, resume=True, progress=False)  # starts over
    assert [r["epoch"] for r in result.history] == [1]
    assert (run / "checkpoints" / "last.pt").is_file()


# --------------------------------------------------------------------------- full disks


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_prepare_is_a_user_error_and_leaves_nothing(easy_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PrepareConfig(preprocess=Preprocess(size=16), workers=1)
    old = prepare(open_source(easy_images), tmp_path / "cache", cfg, progress=False)
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    with pytest.raises(UserError, match=r"cannot write .*new: No space left on device; it needs about 30.7 kB and .* is free"):
        prepare(open_source(easy_images), tmp_path / "new", cfg, progress=False)
    with pytest.raises(UserError, match="No space left"):
        prepare(open_source(easy_images), tmp_path / "cache", cfg, progress=False, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no partial folder
    assert verify_cache(old.path)  # the previous cache is intact


def test_disk_full_while_checkpointing_keeps_the_previous_last_pt(
    easy_cache: Cache, uninterrupted: list[dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tellapart._files as files

    real_fsync, writes = os.fsync, []

    def fsync(fd: int) -> None:
        if ".last.pt.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            writes.append(fd)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    run = tmp_path / "run"
    cfg = fast_config(*KILL_SETTINGS, epochs=KILL_EPOCHS)
    with pytest.raises(UserError, match=r"cannot write .*last.pt: No space left on device; it needs about"):
        train(easy_cache, cfg, run, progress=False)
    monkeypatch.undo()
    assert read_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list(run.rglob(".*tmp-*"))
    train(easy_cache, cfg, run, resume=True, progress=False)
    assert [{k: r[k] for k in CURVE_KEYS} for r in csv_rows(run / "metrics.csv")] == uninterrupted


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem (tmpfs); skipped where this process may not mount one."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the simulated ENOSPC tests cover the code paths")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_disk_full_for_real_prepare_on_a_small_tmpfs(easy_images: Path, small_tmpfs: Path) -> None:
    cfg = PrepareConfig(preprocess=Preprocess(size=160), workers=1)  # 40 x 77 KB: over 2 MB
    with pytest.raises(UserError, match="No space left on device"):
        prepare(open_source(easy_images), small_tmpfs / "cache", cfg, progress=False)
    assert list(small_tmpfs.iterdir()) == []
    small = prepare(open_source(easy_images), small_tmpfs / "cache", PrepareConfig(preprocess=Preprocess(size=16), workers=1), progress=False)
    assert verify_cache(small.path)


def test_disk_full_for_real_train_then_resume(easy_cache: Cache, uninterrupted: list[dict[str, str]], small_tmpfs: Path) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_tmpfs).free - 6 * 4096))  # room for a few small files
    run = small_tmpfs / "run"
    cfg = fast_config(*KILL_SETTINGS, epochs=KILL_EPOCHS)
    with pytest.raises(UserError, match="No space left on device"):
        train(easy_cache, cfg, run, progress=False)
    assert not list(run.rglob(".*tmp-*"))
    filler.unlink()
    train(easy_cache, cfg, run, resume=True, progress=False)
    assert [{k: r[k] for k in CURVE_KEYS} for r in csv_rows(run / "metrics.csv")] == uninterrupted


# --------------------------------------------------------------------------- bad invocations


@dataclass(frozen=True)
class World:
    """What the bad invocations point at."""

    tmp: Path
    images: Path
    cache: Path
    run: Path


def _w(path: str) -> Callable[[World], str]:
    return lambda w: str(w.tmp / path)


def _file(name: str, text: str) -> Callable[[World], str]:
    def make(w: World) -> str:
        (w.tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (w.tmp / name).write_text(text)
        return str(w.tmp / name)

    return make


def _folder(name: str, build: Callable[[Path], None]) -> Callable[[World], str]:
    def make(w: World) -> str:
        build(w.tmp / name)
        return str(w.tmp / name)

    return make


def _one_class(root: Path) -> None:
    for i in range(3):
        write_image(root / "only" / f"{i}.png", seed=i)


def _unreadable(root: Path) -> None:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / "x.jpg").write_text("no image")


def _empty_class(root: Path) -> None:
    write_image(root / "a" / "0.png")
    (root / "b").mkdir(parents=True)


def _loose_image(root: Path) -> None:
    write_image(root / "a" / "0.png")
    write_image(root / "loose.png")


def _damaged_cache(damage: Callable[[Path], None]) -> Callable[[World], str]:
    def make(w: World) -> str:
        dest = w.tmp / f"cache-{len(list(w.tmp.iterdir()))}"
        shutil.copytree(w.cache, dest)
        damage(dest)
        return str(dest)

    return make


def _run_with(change: Callable[[Path], None]) -> Callable[[World], str]:
    def make(w: World) -> str:
        dest = w.tmp / f"run-{len(list(w.tmp.iterdir()))}"
        shutil.copytree(w.run, dest)
        change(dest)
        return str(dest)

    return make


Arg = str | Callable[[World], str]
#: (name, argv with callables resolved against the world, a word the one error line must contain)
BAD: tuple[tuple[str, tuple[Arg, ...], str], ...] = (
    ("check: missing source", ("data", "check", _w("nowhere")), "nowhere"),
    ("check: --pair-dirs that do not exist", ("data", "check", lambda w: str(w.images), "--pair-dirs", "x,y"), "--pair-dirs"),
    ("check: --pair-dirs with one name", ("data", "check", lambda w: str(w.images), "--pair-dirs", "face"), "--pair-dirs"),
    ("check: --class-map missing", ("data", "check", lambda w: str(w.images), "--class-map", _w("map.txt")), "map.txt"),
    ("check: --class-map bad JSON", ("data", "check", lambda w: str(w.images), "--class-map", _file("map.json", "{oops")), "map.json"),
    ("check: --class-map bad line", ("data", "check", lambda w: str(w.images), "--class-map", _file("map2.txt", "lonely\n")), "map2.txt"),
    ("check: --workers -1", ("data", "check", lambda w: str(w.images), "--workers", "-1"), "--workers"),
    ("check: --max-pixels 0", ("data", "check", lambda w: str(w.images), "--max-pixels", "0"), "--max-pixels"),
    ("check: --kind csv on a folder", ("data", "check", lambda w: str(w.images), "--kind", "csv"), "CSV list"),
    ("check: --kind idx on a folder", ("data", "check", lambda w: str(w.images), "--kind", "idx"), "IDX"),
    ("check: --kind cifar on a folder", ("data", "check", lambda w: str(w.images), "--kind", "cifar"), "CIFAR"),
    ("check: CSV with two labels for a file", ("data", "check", _file("two.csv", "p.png,a\np.png,b\n")), "two.csv"),
    ("check: CSV row with one column", ("data", "check", _file("short.csv", "p.png\n")), "short.csv"),
    ("check: CSV with an unknown split", ("data", "check", _file("split.csv", "p.png,a,g,holdout\n")), "holdout"),
    ("check: empty CSV", ("data", "check", _file("empty.csv", "")), "empty.csv"),
    ("check: CSV path outside its root", ("data", "check", _file("out.csv", "../../etc/passwd,a\n")), "outside"),
    ("check: text file named .zip", ("data", "check", _file("fake.zip", "not an archive")), "fake.zip"),
    ("check: empty class folder", ("data", "check", _folder("emptyclass", _empty_class)), "holds no images"),
    ("check: image outside a class folder", ("data", "check", _folder("loose", _loose_image)), "loose.png"),
    ("check: empty folder", ("data", "check", _folder("void", lambda p: p.mkdir())), "no image files"),
    ("prepare: --size 100000", ("data", "prepare", lambda w: str(w.images), "--out", _w("c1"), "--size", "100000"), "--size"),
    ("prepare: --size 2", ("data", "prepare", lambda w: str(w.images), "--out", _w("c2"), "--size", "2"), "--size"),
    ("prepare: --test 1.5", ("data", "prepare", lambda w: str(w.images), "--out", _w("c3"), "--test", "1.5"), "--test"),
    ("prepare: --val -0.1", ("data", "prepare", lambda w: str(w.images), "--out", _w("c4"), "--val", "-0.1"), "--val"),
    ("prepare: --near-threshold 100", ("data", "prepare", lambda w: str(w.images), "--out", _w("c5"), "--near-threshold", "100"), "--near-threshold"),
    ("prepare: --max-pixels -5", ("data", "prepare", lambda w: str(w.images), "--out", _w("c6"), "--max-pixels", "-5"), "--max-pixels"),
    ("prepare: --out is a file", ("data", "prepare", lambda w: str(w.images), "--out", _file("afile", "x"), "--quiet"), "afile"),
    ("prepare: --out is a foreign folder", ("data", "prepare", lambda w: str(w.images), "--out",
                                            _folder("foreign", lambda p: (p.mkdir(), (p / "manifest.json").write_text("{}"))), "--quiet"),
     "not a tellapart cache"),  # fmt: skip
    ("prepare: one class", ("data", "prepare", _folder("oneclass", _one_class), "--out", _w("c7"), "--quiet"), "two classes"),
    ("prepare: nothing readable", ("data", "prepare", _folder("unreadable", _unreadable), "--out", _w("c8"), "--quiet"), "none of the"),
    ("prepare: --strict with a bad file", ("data", "prepare", _folder("strict", lambda p: (_unreadable(p), _one_class(p / "a"))),
                                           "--out", _w("c9"), "--strict", "--quiet"), "--strict"),  # fmt: skip
    ("verify: not a cache", ("data", "verify", _w("nocache")), "not a prepared cache"),
    ("verify: truncated pixels", ("data", "verify", _damaged_cache(_truncate_pixels)), "pixels.u8"),
    ("verify: manifest without splits", ("data", "verify", _damaged_cache(_edit_manifest(lambda m: m.pop("splits")))), "splits"),
    ("verify: manifest not JSON", ("data", "verify", _damaged_cache(lambda p: (p / "manifest.json").write_text("{"))), "manifest.json"),
    ("verify: flipped pixel byte", ("data", "verify", _damaged_cache(_flip_a_byte)), "checksum"),
    ("verify: another cache's manifest", ("data", "verify", _damaged_cache(_edit_manifest(lambda m: m.update(fingerprint="f" * 32)))), "does not belong"),
    ("shard: --parts 0", ("data", "shard", lambda w: str(w.cache), "--parts", "0", "--out", _w("set"), "--quiet"), "--parts"),
    ("train: missing cache", ("train", _w("nocache"), "--out", _w("r1"), "--quiet"), "nocache"),
    ("train: unknown model", ("train", lambda w: str(w.cache), "--model", "nosuchnet", "--out", _w("r2"), "--quiet"), "nosuchnet"),
    ("train: unknown config key", ("train", lambda w: str(w.cache), "--set", "optim.lrr=1", "--out", _w("r3"), "--quiet"), "lrr"),
    ("train: --set without =", ("train", lambda w: str(w.cache), "--set", "epochs", "--out", _w("r4"), "--quiet"), "epochs"),
    ("train: --config missing", ("train", lambda w: str(w.cache), "--config", _w("nocfg.yaml"), "--out", _w("r5"), "--quiet"), "nocfg.yaml"),
    ("train: --seeds 0", ("train", lambda w: str(w.cache), "--seeds", "0", "--out", _w("r6"), "--quiet"), "--seeds"),
    ("train: --resume with nothing", ("train", lambda w: str(w.cache), "--out", _w("r7"), "--resume", "--quiet"), "nothing to resume"),
    ("train: into a used folder", ("train", lambda w: str(w.cache), "--out", lambda w: str(w.run), "--quiet"), "already holds files"),
    ("train: --resume, config cut short", ("train", lambda w: str(w.cache), "--out",
                                           _run_with(lambda r: ((r / "checkpoints" / "last.pt").unlink(), (r / "summary.json").unlink(),
                                                                (r / "config.yaml").write_text("model:\n  name: cnn\n"))),
                                           "--resume", "--quiet"), "config.yaml"),  # fmt: skip
    ("train: --resume, corrupt last.pt", ("train", lambda w: str(w.cache), "--out",
                                          _run_with(lambda r: (r / "checkpoints" / "last.pt").write_bytes(b"junk")), "--resume", "--quiet"),
     "last.pt"),  # fmt: skip
    ("train: on a truncated cache", ("train", _damaged_cache(_truncate_pixels), "--out", _w("r8"), "--quiet"), "pixels.u8"),
    ("predict: --batch-size 0", ("predict", lambda w: str(w.run), lambda w: str(w.images), "--batch-size", "0", "--quiet"), "--batch-size"),
    ("predict: missing run", ("predict", _w("norun"), lambda w: str(w.images), "--quiet"), "norun"),
    ("predict: missing image", ("predict", lambda w: str(w.run), _w("nothing.png"), "--quiet"), "nothing.png"),
    ("predict: folder without images", ("predict", lambda w: str(w.run), _folder("noimages", lambda p: p.mkdir()), "--quiet"), "no image files"),
    ("predict: pattern matching nothing", ("predict", lambda w: str(w.run), _w("*.nomatch"), "--quiet"), "nomatch"),
    ("evaluate: missing run", ("evaluate", _w("norun2")), "norun2"),
    ("evaluate: run without checkpoints", ("evaluate", _run_with(lambda r: shutil.rmtree(r / "checkpoints"))), "checkpoint"),
    ("export: missing run", ("export", _w("norun3")), "norun3"),
)


@pytest.fixture
def world(easy_images: Path, easy_cache: Cache, easy_run: Path, tmp_path: Path) -> World:
    return World(tmp_path, easy_images, easy_cache.path, easy_run)


def test_cli_bad_invocations_are_enough() -> None:
    assert len(BAD) >= 40


@pytest.mark.parametrize("argv,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_cli_bad_invocation_is_one_error_line(argv: tuple[Arg, ...], needle: str, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    resolved = [a(world) if callable(a) else a for a in argv]
    capsys.readouterr()
    code = main(resolved)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], err  # one error line, last (after any progress notes)
    assert needle in errors[0], errors[0]


def test_cli_predict_exits_1_whenever_a_file_was_skipped(easy_run: Path, easy_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "five"
    folder.mkdir()
    for k, src in enumerate(sorted((easy_images / "left").iterdir())[:4]):
        shutil.copy(src, folder / f"{k}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    assert main(["predict", str(easy_run), str(folder), "--quiet"]) == 1  # a folder of five, one unreadable
    assert main(["predict", str(easy_run), str(folder / "broken.png"), "--quiet"]) == 1  # one unreadable file
    assert main(["predict", str(easy_run), str(folder / "0.png"), "--quiet"]) == 0
    assert "skipped" in capsys.readouterr().err


@pytest.mark.parametrize("after_s", [0.3, 0.8, 1.5])
def test_kill_prepare_at_a_random_time_then_rerun_equals_an_uninterrupted_prepare(tmp_path: Path, after_s: float) -> None:
    """A prepare killed mid-way leaves no half cache; re-running it gives the cache an uninterrupted one gives."""
    import time

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (src / label).mkdir(parents=True)
        for k in range(150):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(src / label / f"{k}.png")
    cmd = [sys.executable, "-m", "tellapart", "data", "prepare", str(src), "--size", "16", "--quiet", "--workers", "1"]
    env = {**os.environ, "TELLAPART_NO_REEXEC": "1"}
    reference = tmp_path / "reference"
    assert subprocess.run([*cmd, "--out", str(reference)], env=env, capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(after_s)
    proc.kill()
    proc.wait()
    if out.exists():  # the kill came after the rename: then the cache is whole
        assert Cache(out).fingerprint == Cache(reference).fingerprint
    rerun = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    a, b = Cache(out), Cache(reference)
    assert a.fingerprint == b.fingerprint and a.ids == b.ids and list(a.splits) == list(b.splits)
    assert np.array_equal(np.asarray(a.pixels), np.asarray(b.pixels))
    assert not list(tmp_path.glob(".killed.partial-*"))  # the killed run's staging folder was cleaned up
