"""``compile: true``: training the torch.compile'd model, checkpoints keyed like the plain module's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _fixtures_train import TINY_CNN, easy_cache, easy_images, easy_run, fast_config  # noqa: F401 - fixtures

from tellapart import UserError
from tellapart.data import Cache
from tellapart.predict import load
from tellapart.train import read_checkpoint, train


@pytest.mark.slow
def test_compiled_training_saves_plain_keys_and_predicts(easy_cache: Cache, easy_run: Path, easy_images: Path, tmp_path: Path) -> None:
    run = tmp_path / "compiled"
    result = train(easy_cache, fast_config(*TINY_CNN, "compile=true", epochs=1), run, progress=False)
    plain = read_checkpoint(easy_run / "checkpoints" / "best.pt")["state_dict"]
    for which in ("best", "last"):
        keys = list(read_checkpoint(run / "checkpoints" / f"{which}.pt")["state_dict"])
        assert keys == list(plain) and not any("_orig_mod" in k for k in keys)
    assert json.loads((run / "environment.json").read_text())["compiled"] is True
    assert json.loads((easy_run / "environment.json").read_text())["compiled"] is False
    # Inductor computes what eager PyTorch computes: the first epoch of the same seed matches the plain run's.
    eager = train(easy_cache, fast_config(*TINY_CNN, epochs=1), tmp_path / "eager", progress=False)
    assert result.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-4)

    images = sorted(easy_images.rglob("*.png"))[:4]
    labels = load(run).predict(images)
    assert len(labels) == 4 and set(labels) <= {"left", "right"}


def test_a_failing_compile_names_the_option_and_leaves_the_folder_reusable(easy_cache: Cache, tmp_path: Path) -> None:
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()  # nothing compiled earlier in this process may be reused
    try:
        with torch._inductor.config.patch({"cpp.cxx": (None, "/nonexistent/g++"), "fx_graph_cache": False}):
            with pytest.raises(UserError, match=r"compile.*--set compile=false"):
                train(easy_cache, fast_config(*TINY_CNN, "compile=true", epochs=1), tmp_path / "run", progress=False)
    finally:
        torch._dynamo.reset()
    assert not any((tmp_path / "run").iterdir())
    train(easy_cache, fast_config(*TINY_CNN, epochs=1), tmp_path / "run", progress=False)  # the fixed command
