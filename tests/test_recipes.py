"""Recipes: the five bundled ones load and validate, quick overrides merge where they say, the
stand-in converters write data the sources read back (CIFAR batches in the exact format, an
Imagenette tree with its class map), and every recipe runs end to end with ``--quick`` on its
stand-in, its model chosen on validation beating the recipe's baseline.

The Fashion-MNIST tests need the Debian package ``dataset-fashion-mnist``; without it they fail
and say how to install it (CI installs it).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import optuna
import pytest

from tellapart._errors import UserError
from tellapart.cli import main
from tellapart.data import CifarSource, Item, open_source
from tellapart.recipes import (
    FASHION_MNIST_DIR,
    STANDINS,
    fashion_mnist_as_cifar,
    fashion_mnist_as_imagenette,
    list_recipes,
    load_recipe,
    read_marker,
    run_recipe,
    subset_items,
    synthetic_faces,
    write_cifar_batches,
    write_standin,
)
from tellapart.recipes._recipe import recipe_from_dict
from tellapart.recipes._runner import _validate

optuna.logging.set_verbosity(optuna.logging.WARNING)

RECIPES = ("s0_faces_ladder", "s1_grid_rounds", "s2_two_stage", "s3_cifar10", "s4_imagenette")
#: Every training run of the end-to-end tests: CPU, no mid-epoch checkpoints.
RUN_SETTINGS = ("device=cpu", "checkpoint_every_s=0")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"Fashion-MNIST is missing from {FASHION_MNIST_DIR}; install it with "
            "'apt-get install -y dataset-fashion-mnist' (31 MB Debian package) and run the tests again"
        )
    return FASHION_MNIST_DIR


# --------------------------------------------------------------------------- recipe files


def test_the_five_seed_recipes_are_bundled_and_valid_full_and_quick() -> None:
    assert list_recipes() == list(RECIPES)
    for name in RECIPES:
        for quick in (False, True):
            recipe = load_recipe(name, quick=quick)
            _validate(recipe, RUN_SETTINGS)  # every config and model name, every space with its fixed keys
            assert recipe.published is not None and recipe.published.figures and recipe.published.data
            assert recipe.standin is not None and recipe.standin.kind in STANDINS
            assert recipe.baseline == "linear"
            assert (recipe.prepare.limit is not None) == quick  # CI never prepares a whole dataset


def test_protocol_settings_of_the_seeds() -> None:
    s0 = load_recipe("s0_faces_ladder")
    assert (s0.prepare.size, s0.prepare.grayscale, round(s0.prepare.test, 6)) == (64, False, round(1 / 6, 6))
    assert s0.base["normalize"] == "unit" and s0.base["single_logit"] is True and s0.base["epochs"] == 20
    assert [r.name for r in s0.steps[0].rungs] == ["linear", "mlp", "mlp_dropout", "s0_cnn"]  # type: ignore[union-attr]
    s1 = load_recipe("s1_grid_rounds")
    assert (s1.prepare.size, s1.prepare.grayscale) == (150, True) and s1.steps[1].space == "s1_grid"  # type: ignore[union-attr]
    s2 = load_recipe("s2_two_stage")
    assert s2.base["single_logit"] is False and s2.steps[1].space == "s2_two_stage"  # type: ignore[union-attr]
    s3 = load_recipe("s3_cifar10")
    vgg = {r.name: r.config for r in s3.steps[0].rungs}["vgg"]  # type: ignore[union-attr]
    assert vgg["augment"] == {"rotate": 15, "hflip": True, "translate": 0.1} and vgg["batch_size"] == 128
    s4 = load_recipe("s4_imagenette")
    fine_tune = s4.steps[1].config  # type: ignore[union-attr]
    assert fine_tune["fine_tune"] == {"freeze_epochs": 3, "unfreeze": 3, "lr_factor": 0.1} and fine_tune["epochs"] == 6


def test_quick_overrides_merge_per_step_and_per_rung() -> None:
    data = {
        "prepare": {"size": 64, "test": "1/6"},
        "base": {"epochs": 20, "normalize": "unit"},
        "steps": [
            {"ladder": {"rungs": [{"name": "linear", "config": {"model": {"name": "linear"}, "batch_size": 8}}, {"name": "mlp", "config": {"model": {"name": "mlp"}}}]}},
            {"train": {"name": "big", "config": {"model": {"name": "cnn"}, "epochs": 9}}},
        ],
        "quick": {"prepare": {"size": 16, "limit": 50}, "base": {"epochs": 2}, "steps": {"ladder": {"rungs": {"linear": {"batch_size": 4}}}, "big": {"config": {"epochs": 1}}}},
    }
    full, quick = recipe_from_dict("t", data), recipe_from_dict("t", data, quick=True)
    assert (full.prepare.size, full.prepare.limit, full.base["epochs"]) == (64, None, 20)
    assert abs(full.prepare.test - 1 / 6) < 1e-12
    assert (quick.prepare.size, quick.prepare.limit, quick.base) == (16, 50, {"epochs": 2, "normalize": "unit"})
    rungs = {r.name: r.config for r in quick.steps[0].rungs}  # type: ignore[union-attr]
    assert rungs == {"linear": {"model": {"name": "linear"}, "batch_size": 4}, "mlp": {"model": {"name": "mlp"}}}
    assert quick.steps[1].config == {"model": {"name": "cnn"}, "epochs": 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"epoch": 3}, r"recipe t: unknown key\(s\) epoch \(expected some of: base, baseline, description"),
        ({"prepare": {"size": 64, "colour": True}}, r"prepare: unknown key\(s\) colour \(expected some of: fit, grayscale"),
        ({"prepare": {"size": "big"}}, "prepare: size must be an integer, got 'big'"),
        ({"source": {"pair_dirs": ["a"]}}, "source.pair_dirs"),
        ({"steps": [{"tune": {"space": "s1_grid", "trials": 0}}]}, r"step 1 \(tune\): trials must be a positive integer"),
        ({"steps": [{"train": {"config": {}, "epochs": 3}}]}, r"step 1 \(train\): unknown key\(s\) epochs"),
        ({"steps": [{"ladder": {"rungs": [{"name": "a", "confg": {}}]}}]}, r"unknown key\(s\) rungs\[1\].confg"),
        ({"prepare": {"test": "a sixth"}}, "prepare.test must be a share"),
        ({"steps": [{"fit": {}}]}, "must be one of ladder:, tune: or train:"),
        ({"baseline": "nope"}, "baseline 'nope' is no rung or step"),
        ({"quick": {"steps": {"nope": {}}}}, r"quick: steps \['nope'\] name no step"),
        ({"quick": {"steps": {"ladder": {"rungs": {"nope": {}}}}}}, r"rungs \['nope'\] name no rung"),
    ],
)
def test_malformed_recipes_name_the_key(patch: dict, message: str) -> None:  # type: ignore[type-arg]
    data = {"steps": [{"ladder": {"rungs": [{"name": "linear", "config": {"model": {"name": "linear"}}}]}}], **patch}
    with pytest.raises(UserError, match=message):
        recipe_from_dict("t", data, quick="quick" in patch)


def test_a_misspelt_model_fails_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("steps:\n  - train: {config: {model: {name: resnet_9000}}}\n")
    faces = synthetic_faces(tmp_path / "faces", pairs=4, size=32, progress=False)
    with pytest.raises(UserError, match="step train: .*resnet_9000"):
        run_recipe(path, faces, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_subset_keeps_groups_whole_and_every_split_and_class() -> None:
    items = [Item(f"{c}/{k}", c, group=str(k), split=None) for c in ("face", "comics") for k in range(100)]
    items += [Item(f"x/{k}", "x" if k % 2 else "y", split="test") for k in range(50)]
    chosen = subset_items(items, 50, seed=1)
    assert 45 <= len(chosen) <= 55
    groups = [i.group for i in chosen if i.group is not None]
    assert all(groups.count(g) == 2 for g in groups)  # a face never without its comic
    assert {i.label for i in chosen} == {"face", "comics", "x", "y"}
    assert sum(i.split == "test" for i in chosen) in range(8, 13)  # the test split keeps its share
    assert chosen == subset_items(items, 50, seed=1) and chosen != subset_items(items, 50, seed=2)
    assert [items.index(i) for i in chosen] == sorted(items.index(i) for i in chosen)


# --------------------------------------------------------------------------- stand-ins


def test_cifar_batches_are_the_cifar_python_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 23))
    test = (rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 7))
    write_cifar_batches(tmp_path / "c", train, test, ["cat", "dog", "frog"])
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["batches.meta", *[f"data_batch_{k}" for k in range(1, 6)], "test_batch"]
    with open(tmp_path / "c" / "data_batch_1", "rb") as f:  # as the CIFAR page says to read them
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (5, 3072)
    assert np.array_equal(batch[b"data"][0, :1024].reshape(32, 32), train[0][0, :, :, 0])  # the red plane first
    with open(tmp_path / "c" / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"] == [b"cat", b"dog", b"frog"]
    source = CifarSource.open(tmp_path / "c")
    items = source.items()
    assert [i.split for i in items] == ["train"] * 23 + ["test"] * 7
    assert [i.label for i in items] == [["cat", "dog", "frog"][k] for k in [*train[1], *test[1]]]
    pixels = list(source.payloads(items))
    assert np.array_equal(np.stack(pixels[:23]), train[0]) and np.array_equal(np.stack(pixels[23:]), test[0])


def test_fashion_mnist_as_cifar_reads_back_as_cifar(tmp_path: Path, fashion_dir: Path) -> None:
    out = fashion_mnist_as_cifar(tmp_path / "fc", train=100, test=30, fashion_mnist=fashion_dir, progress=False)
    source = open_source(out)
    assert source.kind == "cifar"
    items = source.items()
    train_labels = [i.label for i in items if i.split == "train"]
    assert len(train_labels) == 100 and sum(i.split == "test" for i in items) == 30
    assert {train_labels.count(n) for n in set(train_labels)} == {10} and "Ankle boot" in train_labels
    image = next(iter(source.payloads(items[:1])))
    assert image.shape == (32, 32, 3) and (image[:2] == 0).all() and (image[..., 0] == image[..., 2]).all()
    assert "Fashion-MNIST" in read_marker(out)["label"]  # type: ignore[index]
    assert fashion_mnist_as_cifar(out, train=100, test=30, fashion_mnist=fashion_dir, progress=False) == out  # reused
    with pytest.raises(UserError, match="not empty"):
        fashion_mnist_as_cifar(out, train=50, test=30, fashion_mnist=fashion_dir, progress=False)


def test_fashion_mnist_as_imagenette_reads_with_its_class_map(tmp_path: Path, fashion_dir: Path) -> None:
    out = fashion_mnist_as_imagenette(tmp_path / "fi", train=40, val=20, size=32, fashion_mnist=fashion_dir, progress=False)
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"fm{k:02d}" for k in range(10)]
    source = open_source(out, class_map=out / "class_map.txt")
    assert source.kind == "folder"
    items = source.items()
    assert {i.split for i in items} == {"train", "val"} and len(items) == 60
    assert {i.label for i in items} == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert {i.label for i in open_source(out).items()} == {f"fm{k:02d}" for k in range(10)}  # without the map: the ids


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist_as_cifar(tmp_path / "x", fashion_mnist=tmp_path / "nothing", progress=False)


def test_cli_lists_shows_and_writes_stand_ins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RECIPES)
    assert main(["recipe", "show", "s1_grid_rounds"]) == 0
    assert "limit:" not in capsys.readouterr().out
    assert main(["recipe", "show", "s1_grid_rounds", "--quick"]) == 0
    assert f"limit: {load_recipe('s1_grid_rounds', quick=True).prepare.limit}" in capsys.readouterr().out
    assert main(["recipe", "standin", "s0_faces_ladder", "--out", str(tmp_path / "faces"), "--quick", "--quiet"]) == 0
    assert "synthetic stand-in" in capsys.readouterr().out
    pairs = load_recipe("s0_faces_ladder", quick=True).standin.args["pairs"]  # type: ignore[union-attr]
    assert len(list((tmp_path / "faces" / "face").iterdir())) == pairs
    assert main(["recipe", "run", "s0_faces_ladder", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "recipe standin s0_faces_ladder" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end, --quick


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``standin(recipe name)``: its quick stand-in, each made once (S0-S2 share the synthetic faces)."""
    root = tmp_path_factory.mktemp("standins")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        spec = load_recipe(name, quick=True).standin
        assert spec is not None
        key = json.dumps([spec.kind, dict(spec.args)], sort_keys=True)
        if key not in made:
            made[key] = write_standin(name, root / f"{len(made)}-{spec.kind}", quick=True, progress=False)
        return made[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_quick_on_its_stand_in_and_beats_its_baseline(name: str, standin, tmp_path: Path, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    if name in ("s3_cifar10", "s4_imagenette"):
        request.getfixturevalue("fashion_dir")  # fails with the install command when it is missing
    data = standin(name)
    out = tmp_path / name
    summary = run_recipe(name, data, out, quick=True, overrides=RUN_SETTINGS, progress=False)

    assert (out / "report.html").is_file() and (out / "metrics.json").is_file() and (out / "leaderboard.csv").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] == summary["test"]["n"] > 0
    best, baseline = summary["best"], summary["baseline"]
    assert baseline["rung"] == "linear"
    assert best["rung"] != "linear" and best["val_acc"] > baseline["val_acc"], summary["candidates"]
    html = (out / "report.html").read_text()
    assert "seed published" in html and "this run&#x27;s data" in html
    assert read_marker(data)["label"].split(":")[0] in html  # type: ignore[index]
    assert summary == json.loads((out / "summary.json").read_text())

    if name == "s0_faces_ladder":  # re-running resumes everything and reads the test split no second time
        again = run_recipe(name, data, out, quick=True, overrides=RUN_SETTINGS, progress=False)
        assert again["test"] == summary["test"]
        assert len(json.loads((Path(best["run"]) / "test_reads.json").read_text())) == 1
        with pytest.raises(UserError, match="another recipe, data or settings"):
            run_recipe(name, data, out, quick=False, progress=False)
