"""tellapart.config: one way to read YAML, merge it, override it from the command line and load it strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from _fixtures_train import easy_cache, easy_images, easy_run  # noqa: F401 - fixtures

from tellapart import UserError
from tellapart.cli import main
from tellapart.config import (
    apply_assignments,
    deep_merge,
    load_dataclass,
    load_mapping,
    parse_assignments,
    resolve_bundled,
    set_dotted,
)
from tellapart.data import Cache
from tellapart.train import load_ladder


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Item:
    name: str
    size: int = 1


@dataclass(frozen=True)
class Outer:
    items: tuple[Item, ...]
    inner: Inner = field(default_factory=Inner)
    extra: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be positive, got {self.limit}")


def test_yaml_errors_name_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(UserError, match=r"bad.yaml is not valid YAML \(line \d+: "):
        load_mapping(path)
    with pytest.raises(UserError, match="config file not found: .*nope.yaml"):
        load_mapping(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(UserError, match="list.yaml: expected a mapping of config keys, got a list"):
        load_mapping(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_mapping(tmp_path / "empty.yaml") == {}


def test_exponent_floats_are_numbers() -> None:
    assert parse_assignments(["optim.lr=1e-3", "x=[32, 64]", "flag=true", "name=a:b"]) == {
        "optim.lr": 0.001, "x": [32, 64], "flag": True, "name": "a:b",
    }


def test_assignments_name_the_bad_item_and_the_form() -> None:
    with pytest.raises(UserError, match=r"--fix expects key=value \(e.g. --fix optim.lr=1e-3\), got 'width'"):
        parse_assignments(["width"], "--fix")
    with pytest.raises(UserError, match="--set: config key epochs.x: epochs is not a section"):
        apply_assignments({"epochs": 3}, ["epochs.x=1"])


def test_merge_and_dotted_set_leave_their_inputs_alone() -> None:
    base = {"optim": {"lr": 0.1, "name": "sgd"}, "epochs": 3}
    merged = deep_merge(base, {"optim": {"lr": 0.01}, "seed": 1})
    assert merged == {"optim": {"lr": 0.01, "name": "sgd"}, "epochs": 3, "seed": 1}
    assert base["optim"]["lr"] == 0.1
    data: dict[str, Any] = {}
    set_dotted(data, "model.args.width", 32)
    assert data == {"model": {"args": {"width": 32}}}
    assert apply_assignments(base, ["optim.lr=1e-2"])["optim"] == {"lr": 0.01, "name": "sgd"}


def test_bundled_names_or_paths(tmp_path: Path) -> None:
    folder = resources.files("tellapart.recipes")
    name, text = resolve_bundled("s3_cifar10", folder, "recipe")
    assert name == "s3_cifar10" and "steps:" in text
    mine = tmp_path / "mine.yaml"
    mine.write_text("steps: []\n")
    assert resolve_bundled(mine, folder, "recipe") == ("mine", "steps: []\n")
    with pytest.raises(UserError, match="recipe not found: s9 .*s0_faces_ladder, s1_grid_rounds"):
        resolve_bundled("s9", folder, "recipe")


def test_strict_loading_builds_nested_frozen_dataclasses() -> None:
    loaded = load_dataclass(Outer, {"items": [{"name": "a"}, {"name": "b", "size": 2}], "inner": {"rate": 1}}, where="f.yaml")
    assert loaded == Outer(items=(Item("a"), Item("b", 2)), inner=Inner(rate=1.0))
    assert isinstance(loaded.inner.rate, float)  # YAML's 1 for a float field


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"items": [], "bogus": 1}, r"f.yaml: unknown key\(s\) bogus \(expected some of: extra, inner, items, limit\)"),
        ({"items": [{"name": "a", "sise": 2}]}, r"unknown key\(s\) items\[1\].sise"),
        ({"items": [], "inner": {"rat": 2}}, r"unknown key\(s\) inner.rat"),
        ({"items": [{"name": "a", "size": "big"}]}, r"f.yaml: items\[1\].size must be an integer, got 'big'"),
        ({"items": [], "inner": {"rate": True}}, "inner.rate must be a number, got True"),
        ({"items": [], "inner": {"mode": "c"}}, "inner.mode must be one of a, b; got 'c'"),
        ({"items": 3}, "items must be a list, got 3"),
        ({"items": [], "inner": 3}, "inner must be a mapping of keys, got 3"),
        ({"items": [], "extra": [1]}, "extra must be a mapping of keys"),
        ({}, "f.yaml: items is required"),
        ({"items": [{"size": 2}]}, r"items\[1\].name is required"),
        ({"items": [], "limit": 0}, "f.yaml: limit must be positive, got 0"),  # a __post_init__ check, with the file named
    ],
)
def test_strict_loading_names_the_key_path_and_the_file(data: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_dataclass(Outer, data, where="f.yaml")


def test_a_ladder_file_is_loaded_strictly(tmp_path: Path) -> None:
    path = tmp_path / "ladder.yaml"
    path.write_text("base: {epochs: 2}\nrungs:\n  - {name: linear, config: {model: {name: linear}}}\n  - {name: mlp}\n")
    base, rungs = load_ladder(path)
    assert base == {"epochs": 2} and [(r.name, dict(r.config)) for r in rungs] == [("linear", {"model": {"name": "linear"}}), ("mlp", {})]
    path.write_text("rungs:\n  - {name: linear, confg: {}}\n")
    with pytest.raises(UserError, match=r"ladder.yaml: unknown key\(s\) rungs\[1\].confg"):
        load_ladder(path)
    path.write_text("rungs: []\n")
    with pytest.raises(UserError, match="ladder.yaml: a ladder needs at least one rung"):
        load_ladder(path)


def test_a_runs_own_config_trains_again(easy_run: Path, easy_cache: Cache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``RUN/config.yaml`` is enough to reproduce the run: ``train --config`` accepts it as written."""
    again = tmp_path / "again"
    assert main(["train", str(easy_cache.path), "--config", str(easy_run / "config.yaml"), "--out", str(again), "--quiet"]) == 0
    first, second = (yaml.safe_load((run / "config.yaml").read_text()) for run in (easy_run, again))
    assert second == first  # every key, the cache included
    assert (again / "summary.json").is_file() and (again / "checkpoints" / "best.pt").is_file()
    capsys.readouterr()
