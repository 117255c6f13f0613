"""``fit``: labelled images in, the best model a wall-clock budget allows out, tested once.

Steps, all inside one budget (preparation and the report included)::

    profile     decode a sample: sizes, colour, class counts -> size, grey, class weights
    prepare     the cache (reused when nothing changed)
    baselines   classical models on the same split (scikit-learn), with their time
    throughput  a few real steps per candidate: images/s, to plan the rounds
    rounds      successive halving: every candidate briefly on part of train, the best third
                longer on all of it, ..., the best one with what is left, from scratch
                (``--seeds N``: N runs of it, seeds seed..seed+N-1, sharing the last round's time;
                fewer when each could not get 3 epochs, said in plan.json "seeds")
    select      the best on validation (networks and baselines alike)
    test        the chosen network once on test, paired against the baseline and the runner-up;
                with seeds, every seed's model once too (after the choice), mean ± std with a
                95% t-interval in chosen.json, plan.json and the report; the best seed on
                validation is the one model exported and served
    export      model.onnx of the chosen network

Output folder::

    plan.json          the request, the data's profile, every decision with its reason, each
                       step's and run's seconds, what was pruned and why; updated as it goes
    cache/             the prepared cache
    baselines/*.json   the classical baselines' validation scores
    runs/r<k>-<name>/  one training run per candidate per round (loadable by predict/export/evaluate)
    leaderboard.csv    everything tried, ranked on validation
    chosen.json        {"run": "runs/...", ...}: the model predict, export and serve use
    metrics.json       the one test read; report.html: the report; model.onnx

Re-running the same command resumes: finished steps and runs are read back, a killed run
resumes from its last checkpoint, and the budget counts the time spent before the kill.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tellapart._log import say as _say
from tellapart._errors import UserError
from tellapart._files import atomic_write, rank_by_validation, write_table
from tellapart.data import Cache, PrepareConfig, Preprocess, Source, SplitConfig, open_source, prepare
from tellapart.runs import RunDir, RunState
from tellapart.train import (
    baseline_row, config_from_dict, fit_baseline, measure_inference, measure_throughput, train,
)

from ._plan import (
    ARCHITECTURES, PRESETS, Candidate, Decisions, FitConfig, candidates, decide, describe_candidates, pretrained_available,
    profile_source, round_sizes,
)

__all__ = ["FitResult", "fit"]

_PLAN = "plan.json"
_FINAL_SHARE = 0.5  # of the training time: the last round (one candidate, all of train)
_FRACTIONS = (1.0, 0.5, 1 / 3, 0.2, 0.1)  # of train, tried largest first for the first round
_RUN_OVERHEAD_S = 1.5  # seconds a training run costs besides its epochs (model, folder, checkpoints)
_EPOCH_OVERHEAD_S = 0.3  # seconds an epoch costs besides its images (checkpoint, metrics, hook)
_MIN_SEED_EPOCHS = 3  # epochs each seed of the last round needs at least, or fewer seeds are trained
_SEED_TEST_S = 3.0  # seconds a further seed's test read costs besides its images (model, metrics, its own report)
_LEADERBOARD_FIELDS = ("rank", "rung", "kind", "model", "round", "fraction", "params", "val_acc", "val_loss", "best_epoch",
                       "epochs", "train_seconds", "images_per_s", "run", "note")  # fmt: skip


@dataclass(frozen=True)
class FitResult:
    out: Path  # the fit folder
    chosen: dict[str, Any]  # leaderboard row of the chosen network
    best_on_validation: dict[str, Any]  # the top row (a baseline when one beat every network)
    test: dict[str, Any]  # metrics.json of the one test read (accuracy, accuracy_ci, n, report, comparisons)
    leaderboard: list[dict[str, Any]]  # everything tried, ranked on validation
    plan: dict[str, Any]  # plan.json


class _Clock:
    """The budget: seconds spent so far, including earlier (killed) invocations."""

    def __init__(self, budget: float, spent_before: float) -> None:
        self.budget, self.before, self.start = budget, spent_before, time.monotonic()

    def spent(self) -> float:
        return self.before + time.monotonic() - self.start

    def left(self) -> float:
        return self.budget - self.spent()


def _prepare_config(decisions: Decisions, cfg: FitConfig) -> PrepareConfig:
    """How fit prepares its cache: the decided size and colour, split by ``--seed`` (its help: "split and training seed")."""
    pre = Preprocess(size=decisions.size, grayscale=decisions.grayscale)
    return PrepareConfig(preprocess=pre, split=SplitConfig(seed=cfg.seed), workers=cfg.workers)


def fit(
    source: Source | str | Path,
    out: str | Path,
    cfg: FitConfig = FitConfig(),
    *,
    progress: bool = True,
) -> FitResult:
    """Runs check -> prepare -> search -> select -> test once -> report -> export within ``cfg.budget_s``.

    Args:
        source: a Source, or a path ``open_source`` understands (class folders, CSV, archive, IDX, CIFAR, paired).
        out: the fit folder; re-running with the same source and settings resumes it.
        cfg: budget, preset and overrides of the data-aware choices.
    """
    src = open_source(source) if isinstance(source, (str, Path)) else source
    out = Path(out)
    plan = _open_plan(out, src, cfg)
    clock = _Clock(cfg.budget_s, float(plan.get("spent_s", 0.0)))
    if plan.get("status") == "done" and RunDir(out).evaluation().is_file():
        _say(progress, f"[fit] {out} is complete (tested once); showing its result")
        return _result(out, plan)

    def step(name: str, started: float, **extra: Any) -> None:
        plan.setdefault("steps", {})[name] = {"seconds": round(time.monotonic() - started + plan.get("steps", {}).get(name, {}).get("seconds", 0.0), 2), **extra}
        _save(out, plan, clock)

    # profile: data-aware decisions
    started = time.monotonic()
    if "decisions" not in plan:
        _say(progress, f"[fit] budget {_duration(cfg.budget_s)}, preset {cfg.preset}; profiling {src.path}")
        profile = profile_source(src, seed=cfg.seed)
        decisions = decide(profile, cfg)
        plan["profile"], plan["decisions"] = profile.to_json(), decisions.to_json()
        step("profile", started)
    decisions = _decisions(plan["decisions"])
    for key, why in decisions.reasons.items():
        _say(progress, f"[fit]   {key}: {why}")

    # prepare
    started = time.monotonic()
    cache = prepare(src, out / "cache", _prepare_config(decisions, cfg), progress=progress)
    if len(cache.indices("val")) == 0:
        raise UserError(f"{src.path}: too few images for a validation split ({len(cache)} readable); fit selects on validation")
    step("prepare", started, images=len(cache), skipped=cache.info.skipped)

    # classical baselines
    started = time.monotonic()
    baselines = _baselines(cache, out, cfg, clock, progress)
    step("baselines", started)

    # successive halving over the candidates
    use_pretrained, why = _pretrained_choice(cfg, decisions)
    plan["pretrained"] = why
    _say(progress, f"[fit]   pretrained backbone: {why}")
    cands = candidates(decisions, train_images=len(cache.indices("train")), num_classes=cache.num_classes, seed=cfg.seed, pretrained=use_pretrained)
    plan["candidates"] = describe_candidates(cands)
    started = time.monotonic()
    deep_rows = _search(cache, cands, out, cfg, plan, clock, progress)
    step("search", started)

    # select on validation, test once
    rows = rank_by_validation([*deep_rows, *[baseline_row(b.result) for b in baselines.values()]])
    for r in rows:
        r.setdefault("kind", "network")
    write_table(out, "leaderboard", rows, _LEADERBOARD_FIELDS)
    networks = [r for r in rows if r["kind"] == "network" and r.get("run")]
    if not networks:
        raise UserError(f"no network finished within the budget ({_duration(cfg.budget_s)}); give a larger --budget")
    chosen = networks[0]
    choice = {"run": chosen["run"], "by": "fit", "name": chosen["rung"], "val_acc": chosen["val_acc"]}
    atomic_write(out / "chosen.json", json.dumps(choice, indent=2))  # selection is final before any test read
    seed_rows = _seed_rows(deep_rows, chosen) if cfg.seeds > 1 else []
    started = time.monotonic()
    test = _test_once(cache, out, rows, chosen, baselines, cfg, plan, clock, progress, seed_rows=seed_rows)
    if cfg.seeds > 1:
        seeds = _seed_summary(out, cfg, plan, chosen, seed_rows, test)
        plan["seeds"] = {**plan.get("seeds", {}), **seeds}
        atomic_write(out / "chosen.json", json.dumps({**choice, "seeds": seeds}, indent=2))
        _fill_seed_section(RunDir(out).report(), seeds)
        test = {**test, "seeds": seeds}
        _say(progress, f"[fit] over {seeds['used']} seed(s) of {chosen['candidate']}: val {seeds['val_text']}; test {seeds['test_text']}")
        _say(progress, f"[fit]   exported and served: {seeds['exported']['run']} ({seeds['exported']['why']})")
    step("test", started)

    started = time.monotonic()
    if cfg.export:
        plan["export"] = _export(out, chosen, progress)
    step("export", started)
    plan["status"] = "done"
    plan["within_budget"] = clock.spent() <= 1.1 * cfg.budget_s
    _save(out, plan, clock)
    if not plan["within_budget"]:
        _say(progress, f"[fit] over budget: {_duration(clock.spent())} of {_duration(cfg.budget_s)} (see plan.json 'steps' for where it went)")
    return _result(out, plan, test=test)


def _pretrained_choice(cfg: FitConfig, decisions: Decisions) -> tuple[bool, str]:
    """Whether the pretrained backbone is a candidate, and why (or why not)."""
    if cfg.pretrained == "off":
        return False, "off, as asked"
    if cfg.pretrained == "auto" and not PRESETS[cfg.preset].pretrained:
        return False, f"off in the {cfg.preset} preset (--pretrained on to try it)"
    if decisions.size < 8:
        return False, f"off: {decisions.size}-px images are too small for an ImageNet backbone"
    missing = pretrained_available()
    if missing is not None:
        if cfg.pretrained == "on":
            raise UserError(f"--pretrained on: {missing}")
        return False, f"off: {missing}"
    return True, f"{ARCHITECTURES['pretrained']}: a candidate when its features fit the budget"


# --------------------------------------------------------------------------- plan file


def _open_plan(out: Path, src: Source, cfg: FitConfig) -> dict[str, Any]:
    request = {"source": str(Path(src.path).resolve()), **cfg.request()}
    path = out / _PLAN
    if path.is_file():
        try:
            plan = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{path} is damaged (not JSON); choose a new --out, or delete {out} to start over") from None
        if plan.get("request") != request:
            changed = sorted(k for k in request if plan.get("request", {}).get(k) != request[k])
            raise UserError(f"{out} holds a fit of another command (differs in {', '.join(changed)}); use a new --out, or the same options to resume it")
        return plan
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not a fit folder (no {_PLAN}); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    plan = {"request": request, "budget_s": cfg.budget_s, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write(path, json.dumps(plan, indent=2))
    return plan


def _save(out: Path, plan: dict[str, Any], clock: _Clock) -> None:
    plan["spent_s"] = round(clock.spent(), 2)
    atomic_write(out / _PLAN, json.dumps(plan, indent=2, default=str))


def _decisions(data: Mapping[str, Any]) -> Decisions:
    return Decisions(
        size=int(data["size"]), grayscale=bool(data["grayscale"]), class_weights=data["class_weights"],
        architectures=tuple(data["architectures"]), augment=tuple(data["augment"]), reasons=dict(data["reasons"]),
    )


def _result(out: Path, plan: dict[str, Any], test: dict[str, Any] | None = None) -> FitResult:
    rows = json.loads((out / "leaderboard.json").read_text())
    chosen_run = json.loads((out / "chosen.json").read_text())["run"]
    chosen = next(r for r in rows if r.get("run") == chosen_run)
    from tellapart.evaluate import TestLedger

    test = test or TestLedger.first_result(out) or {}
    return FitResult(out, chosen, rows[0], test, rows, plan)


# --------------------------------------------------------------------------- baselines


def _baselines(cache: Cache, out: Path, cfg: FitConfig, clock: _Clock, progress: bool) -> dict[str, Any]:
    """Fits (or refits: seconds, deterministic) each classical baseline; scores are kept in baselines/."""
    folder = out / "baselines"
    folder.mkdir(exist_ok=True)
    cap = _baseline_rows(cfg)
    fitted = {}
    for name in cfg.baselines:
        if clock.left() < 0.6 * cfg.budget_s and not (folder / f"{name}.json").is_file():
            _say(progress, f"[fit] baseline {name} skipped: {_duration(clock.left())} left, kept for the networks")
            continue
        model = fit_baseline(cache, name, max_train_rows=cap, seed=cfg.seed)
        atomic_write(folder / f"{name}.json", json.dumps(model.result.to_json(), indent=2))
        fitted[name] = model
        r = model.result
        _say(progress, f"[fit] baseline {name}: val {r.val_acc:.4f} ({r.train_seconds:.1f}s, {r.train_rows:,} train images)")
    return fitted


def _baseline_rows(cfg: FitConfig) -> int:
    """Train images a baseline fits on: an RBF SVM costs O(n^2) to fit and O(n) per prediction, and
    on all of Fashion-MNIST 10,000 rows took a third of a 5-minute budget (fit, val and test scoring)."""
    return 10_000 if cfg.budget_s >= 900 else 5_000 if cfg.budget_s >= 300 else 2_500


# --------------------------------------------------------------------------- search


def _search(cache: Cache, cands: list[Candidate], out: Path, cfg: FitConfig, plan: dict[str, Any], clock: _Clock, progress: bool) -> list[dict[str, Any]]:
    """Synchronous successive halving: whole rounds, the best third of each going on; returns every run's row.

    Round 0 keeps as many candidates (in priority order) as can each train a few epochs in its
    share of the time; the last round trains the winner from scratch with what is left.
    """
    by_name = {c.name: c for c in cands}
    n_train, n_val = len(cache.indices("train")), len(cache.indices("val"))
    reserve = _reserve(cfg, n_val + len(cache.indices("test")), len(cache.indices("test")))
    max_epochs = PRESETS[cfg.preset].max_epochs
    rounds = plan.setdefault("rounds", [])
    throughput = plan.setdefault("throughput", {})
    rows: list[dict[str, Any]] = []
    if not rounds:  # plan round 0: measure, then keep what fits
        for c in cands:
            if c.name not in throughput:
                tcfg = config_from_dict({**c.config, "device": cfg.device})
                # the pretrained backbone runs forward once per image (its features are cached); CNNs train
                throughput[c.name] = round((measure_inference if _is_pretrained(c) else measure_throughput)(cache, tcfg), 1)
        _save(out, plan, clock)
        time_left = clock.left() - reserve
        fraction0 = min((f for f in _FRACTIONS if f == 1.0 or f * n_train >= 500), default=1.0)
        per_run = [
            _RUN_OVERHEAD_S + (_feature_seconds(throughput[c.name], n_train, n_val) if _is_pretrained(c)
                               else 2 * _epoch_cost(fraction0, throughput[c.name], n_train, n_val))
            for c in cands
        ]
        share0 = (1 - _FINAL_SHARE) / 2
        keep = len(cands)
        while keep > 1 and sum(per_run[:keep]) > share0 * time_left:
            keep -= 1
        if keep < len(cands):
            plan.setdefault("pruned", []).extend(
                {"candidate": c.name, "round": None, "why": f"not started: {_duration(time_left)} left after preparing, fewer runs fit than candidates"}
                for c in cands[keep:]
            )
        plan["sizes"] = round_sizes(keep) if keep > 1 else [1]
    sizes: list[int] = plan["sizes"]
    weights = [(1 - _FINAL_SHARE) / (len(sizes) - 1)] * (len(sizes) - 1) + [_FINAL_SHARE] if len(sizes) > 1 else [1.0]
    members = [c.name for c in cands][: sizes[0]]
    for k, size in enumerate(sizes):
        final = k == len(sizes) - 1
        if k < len(rounds):
            spec = rounds[k]
        else:
            if k > 0:
                members = _promote(rows, rounds[k - 1], size, plan)
            time_left = clock.left() - reserve
            total = max(0.0, weights[k] / sum(weights[k:]) * time_left)
            ips = {name: _measured_ips(rows, name) or throughput[name] for name in members}
            fixed = {n: _RUN_OVERHEAD_S + (_feature_seconds(throughput[n], n_train, n_val) if _is_pretrained(by_name[n]) and not cache.features_dir.is_dir() else 0.0)
                     for n in members}
            cnn_ips = {n: v for n, v in ips.items() if not _is_pretrained(by_name[n])}
            seeds = _seeds_that_fit(cfg.seeds if final else 1, total, fixed, cnn_ips, n_train, n_val, max_epochs=max_epochs)
            per_seed = total / seeds  # the seeds of the last round share its time
            fraction, epochs = _fidelity(per_seed - sum(fixed.values()), cnn_ips, n_train, n_val, first=(k == 0 and not final), max_epochs=max_epochs)
            allowance = {n: round(fixed[n] + (epochs * _epoch_cost(fraction, cnn_ips[n], n_train, n_val) if n in cnn_ips else 0.0), 1) for n in members}
            spec = {"round": k, "members": members, "fraction": round(fraction, 4), "epochs": epochs, "round_s": round(total, 1),
                    "allowance_s": allowance, "planned_with_images_per_s": {n: round(v, 1) for n, v in ips.items()}}
            if final and cfg.seeds > 1:
                spec["seeds"] = seeds
                plan["seeds"] = {"asked": cfg.seeds, "planned": seeds, "epochs_each": epochs, "round_s": round(total, 1)}
                if seeds < cfg.seeds:
                    plan["seeds"]["why_reduced"] = (
                        f"reduced from {cfg.seeds} to {seeds}: the last round's {_duration(total)} allow at least "
                        f"{_MIN_SEED_EPOCHS} epochs on all of train for only {seeds} run(s) of {members[0]}"
                    )
            earlier = _best_full_run(rows, members[0]) if final and k > 0 and seeds == 1 else None  # seeds > 1: the spread is the point
            if k > 0 and cnn_ips and per_seed < sum(fixed.values()) + sum(_epoch_cost(fraction, v, n_train, n_val) for v in cnn_ips.values()):
                spec["skipped"] = f"{_duration(time_left)} left: not enough for one epoch each"
            elif earlier is not None and (earlier.get("epochs") or 0) >= epochs:
                spec["skipped"] = f"{members[0]} already trained {earlier['epochs']} epochs on all of train in round {earlier['round']}; the time left allows {epochs}"
            rounds.append(spec)
            _save(out, plan, clock)
        if spec.get("skipped"):  # the rounds so far have chosen
            _say(progress, f"[fit] round {k}: skipped ({spec['skipped']})")
            break
        _say(progress, f"[fit] round {k}: {len(spec['members'])} candidate(s), {spec['epochs']} epoch(s) on {100 * spec['fraction']:.0f}% of train, "
             f"~{_duration(spec['round_s'])} in all; {_duration(clock.left())} left")
        for name in spec["members"]:
            for seed_index in range(int(spec.get("seeds", 1))):
                if clock.left() - reserve < _RUN_OVERHEAD_S and RunDir(out / "runs" / _run_name(k, name, seed_index)).state() is not RunState.FINISHED:
                    plan.setdefault("pruned", []).append({"candidate": name, "round": k, "why": "not started: the budget was spent",
                                                          **({"seed_index": seed_index} if "seeds" in spec else {})})
                    continue
                rows.append(_train_candidate(cache, by_name[name], spec, out, cfg, plan, clock, progress, final_round=final, seed_index=seed_index))
                _save(out, plan, clock)
    return rows


def _run_name(round_index: int, candidate: str, seed_index: int = 0) -> str:
    """``r2-cnn_s+none``; further seeds of the last round ``r2-cnn_s+none-seed1``, ..."""
    return f"r{round_index}-{candidate}" + (f"-seed{seed_index}" if seed_index else "")


def _seeds_that_fit(asked: int, total: float, fixed: Mapping[str, float], ips: Mapping[str, float], n_train: int, n_val: int, *, max_epochs: int) -> int:
    """The most seeds, up to ``asked``, whose runs each get ``_MIN_SEED_EPOCHS`` epochs on all of train in ``total`` seconds.

    One seed always remains (it is the run fit would train anyway); a frozen backbone's head
    trains in seconds, so its seeds always fit.
    """
    seeds = asked
    while seeds > 1 and ips:
        epoch_s = sum(_epoch_cost(1.0, v, n_train, n_val) for v in ips.values())
        if total / seeds - sum(fixed.values()) >= min(_MIN_SEED_EPOCHS, max_epochs) * epoch_s:
            break
        seeds -= 1
    return seeds


def _is_pretrained(cand: Candidate) -> bool:
    return cand.architecture == "pretrained"


def _feature_seconds(forward_ips: float, n_train: int, n_val: int) -> float:
    """Seconds to compute and cache a frozen backbone's features for train and val once."""
    return (n_train + n_val) / max(forward_ips, 1e-6)


def _reserve(cfg: FitConfig, eval_images: int, test_images: int = 0) -> float:
    """Seconds kept back for the test read(s), the report and the export (each further seed is tested too)."""
    return max(15.0, 0.05 * cfg.budget_s) + eval_images / 2000.0 + (cfg.seeds - 1) * (test_images / 2000.0 + _SEED_TEST_S)


def _epoch_cost(fraction: float, ips: float, n_train: int, n_val: int) -> float:
    """Seconds of one epoch: training on ``fraction`` of train, then scoring val (about 3x faster than training)."""
    return (fraction * n_train + n_val / 3.0) / max(ips, 1e-6) + _EPOCH_OVERHEAD_S


def _fidelity(seconds: float, ips: Mapping[str, float], n_train: int, n_val: int, *, first: bool, max_epochs: int) -> tuple[float, int]:
    """(fraction of train, epochs), the same for every member, so that the round's CNN runs fit ``seconds``.

    A first round prefers 3+ epochs on part of train (at least 500 images) to one epoch on all
    of it; later rounds train on all of it. Members train the same amount, so they compare fairly.
    """
    if not ips:  # only the pretrained candidate: its epochs are set per run
        return 1.0, 1
    fractions = [f for f in _FRACTIONS if f == 1.0 or f * n_train >= 500] if first else [1.0]

    def epochs(fraction: float) -> int:
        return math.floor(seconds / sum(_epoch_cost(fraction, v, n_train, n_val) for v in ips.values()))

    for fraction in fractions:
        if epochs(fraction) >= 3:
            return fraction, min(epochs(fraction), max_epochs)
    return fractions[-1], max(1, min(max_epochs, epochs(fractions[-1])))


def _measured_ips(rows: Sequence[Mapping[str, Any]], name: str) -> float | None:
    done = [r["images_per_s"] for r in rows if r.get("candidate") == name and r.get("images_per_s")]
    return float(done[-1]) if done else None


def _best_full_run(rows: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    full = [r for r in rows if r.get("candidate") == name and (r.get("fraction") or 0) >= 1.0]
    return max(full, key=lambda r: r.get("epochs") or 0) if full else None


def _promote(rows: list[dict[str, Any]], previous: Mapping[str, Any], size: int, plan: dict[str, Any]) -> list[str]:
    """The best ``size`` of the previous round on validation; the rest are recorded as pruned, with why."""
    last = [r for r in rows if r.get("round") == previous["round"]]
    ranked = rank_by_validation(last)
    keep = [r["candidate"] for r in ranked[:size]]
    if not keep:
        raise UserError(f"round {previous['round']} finished no candidate; give a larger --budget")
    cut = ranked[size - 1]["val_acc"] if len(ranked) >= size else None
    pruned = plan.setdefault("pruned", [])
    for r in ranked[size:]:
        pruned.append({"candidate": r["candidate"], "round": previous["round"], "val_acc": r["val_acc"],
                       "why": f"val {r['val_acc']} below the round's top {size} (cut at {cut})"})
    return keep


def _train_candidate(cache: Cache, cand: Candidate, spec: Mapping[str, Any], out: Path, cfg: FitConfig, plan: dict[str, Any],
                     clock: _Clock, progress: bool, *, final_round: bool, seed_index: int = 0) -> dict[str, Any]:
    name = _run_name(int(spec["round"]), cand.name, seed_index)
    run = out / "runs" / name
    config = {**cand.config, "epochs": int(spec["epochs"]), "train_fraction": float(spec["fraction"]), "device": cfg.device,
              "seed": int(cand.config["seed"]) + seed_index}
    extra_s = 0.0
    if _is_pretrained(cand):  # all of train (its features are computed once), and head epochs are cheap
        config.update(train_fraction=1.0, epochs=max(int(spec["epochs"]), 15 * (int(spec["round"]) + 1)))
        if not cache.features_dir.is_dir():
            extra_s = _feature_seconds(float(plan["throughput"][cand.name]), len(cache.indices("train")), len(cache.indices("val")))
    if final_round and int(spec["epochs"]) >= 12:  # a long last run stops once validation loss has stalled for a third of it
        config["early_stopping"] = {**config["early_stopping"], "patience": int(spec["epochs"]) // 3}
    tcfg = config_from_dict(config, f"candidate {cand.name}")
    run_dir = RunDir(run)
    allowance = float(spec["allowance_s"][cand.name])
    record = plan.setdefault("runs", {}).setdefault(name, {"allowance_s": allowance})
    if run_dir.state() is RunState.FINISHED:
        summary = run_dir.read_summary() or {}
    else:
        started = time.monotonic()
        reserve = _reserve(cfg, len(cache.indices("val")) + len(cache.indices("test")), len(cache.indices("test")))
        deadline = started + extra_s + max(1.25 * allowance, 5.0)
        hard = time.monotonic() + clock.left() - reserve
        # one line per run, and per epoch of the last round; train's own bars would print every batch of every run
        say = (lambda text: _say(progress, f"[fit]     {name} {text}")) if final_round else None
        shared = final_round and int(spec.get("seeds", 1)) > 1  # one seed must not eat the others' share
        guard = _DeadlineGuard(min(deadline, hard) if not final_round or shared else hard, say=say, epochs=tcfg.epochs)
        _say(progress, f"[fit]   {name}: up to {tcfg.epochs} epoch(s)")
        summary = train(cache, tcfg, run, resume=None, on_epoch_end=guard, progress=False, tensorboard=final_round).summary
        record["seconds"] = round(record.get("seconds", 0.0) + time.monotonic() - started, 2)
        if guard.stopped_at is not None:
            record["stopped_by_budget"] = f"after epoch {guard.stopped_at} of {tcfg.epochs}: the next epoch would pass the run's time"
    record["val_acc"] = summary.get("val_acc")
    val = summary.get("val_acc")
    _say(progress, f"[fit]   {name}: val {val:.4f} after {summary['epochs']} epoch(s), {summary['train_seconds']:.1f}s of training" if val is not None else f"[fit]   {name}: no validation score")
    return {
        "rung": name, "kind": "network", "candidate": cand.name, "model": cand.architecture, "round": spec["round"],
        "fraction": config["train_fraction"], "params": summary["params"], "val_acc": val, "val_loss": summary.get("val_loss"),
        "best_epoch": summary.get("best_epoch"), "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
        "images_per_s": summary["images_per_s"], "run": str(run.relative_to(out)), "note": f"augment {cand.augment}",
        **({"seed": config["seed"]} if "seeds" in spec else {}),
    }


class _DeadlineGuard:
    """``on_epoch_end``: stops a run when its next epoch (timed like the last) would pass ``deadline``."""

    def __init__(self, deadline: float, *, say: Callable[[str], None] | None = None, epochs: int = 0) -> None:
        self.deadline, self.last, self.stopped_at = deadline, time.monotonic(), None  # type: ignore[var-annotated]
        self.say, self.epochs = say, epochs

    def __call__(self, epoch: int, row: Mapping[str, Any]) -> bool:
        now = time.monotonic()
        took, self.last = now - self.last, now
        if self.say is not None and row.get("val_acc") is not None:
            self.say(f"epoch {epoch}/{self.epochs}: val acc {row['val_acc']:.4f}, loss {row['val_loss']:.4f} ({took:.1f} s)")
        if now + took > self.deadline:
            self.stopped_at = epoch
            return True
        return False


# --------------------------------------------------------------------------- test once


def _test_once(cache: Cache, out: Path, rows: list[dict[str, Any]], chosen: dict[str, Any], baselines: Mapping[str, Any],
               cfg: FitConfig, plan: dict[str, Any], clock: _Clock, progress: bool, *,
               seed_rows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Evaluates the chosen network on test once; a second call reads the first result back.

    The chosen configuration's other seeds (``seed_rows``) are each tested once too, first, each
    read recorded in its own run folder; the chosen run is the one exported.
    """
    from tellapart.evaluate import TestLedger, evaluate_run

    tested = TestLedger.first_result(out)
    if tested is not None:
        _say(progress, f"[fit] already tested once: {out / 'metrics.json'} (the test split is read only once)")
        return tested
    for r in seed_rows:
        if r["run"] != chosen["run"] and TestLedger.first_result(out / r["run"]) is None:
            seed_metrics = evaluate_run(out / r["run"], split="test", cache=cache.path,
                                        title=f"tellapart fit · {r['rung']} (seed {r['seed']} of the chosen configuration)")
            _say(progress, f"[fit] {r['rung']} (seed {r['seed']}) on test, once: accuracy {seed_metrics['accuracy']:.4f}")
    test_rows = TestLedger(cache, RunDir(out / chosen["run"])).rows("test")  # the rows every compared model predicts
    compare: dict[str, np.ndarray] = {}
    best_baseline = next((r for r in rows if r["kind"] == "classical"), None)
    if best_baseline is not None:
        name = best_baseline["model"]
        model = baselines.get(name) or fit_baseline(cache, name, max_train_rows=_baseline_rows(cfg), seed=cfg.seed)
        compare[f"{name} (classical baseline)"] = model.predict(test_rows)
    runner_up = next((r for r in rows if r["kind"] == "network" and r.get("run") and r["candidate"] != chosen["candidate"]), None)
    if runner_up is not None:
        compare[f"{runner_up['rung']} (runner-up network)"] = _network_predictions(cache, out / runner_up["run"], test_rows)
    warnings = []
    top = rows[0]
    if top["kind"] == "classical":
        warnings.append(
            f"a classical baseline, {top['model']} (val {top['val_acc']:.4f}), beat every network on validation "
            f"(best network {chosen['rung']}: val {chosen['val_acc']:.4f}); the network is tested and exported because "
            "it is what predict/serve/export can load: give fit a larger --budget, or use the baseline"
        )
    plan["test"] = {"run": chosen["run"], "compared_with": list(compare)}
    _save(out, plan, clock)
    metrics = evaluate_run(
        out / chosen["run"], split="test", cache=cache.path, leaderboard=rows, report_dir=out,
        title=f"tellapart fit · {Path(plan['request']['source']).name} · {chosen['rung']}",
        notes={**_report_notes(plan, chosen, cfg, clock), **_seed_note(seed_rows)}, compare=compare,
        extra_sections=[*([(_SEEDS_TITLE, _SEEDS_MARKER)] if seed_rows else []), _budget_section(plan, clock)],
        warnings=warnings,
    )
    lo, hi = metrics["accuracy_ci"]
    _say(progress, f"[fit] {chosen['rung']} on test, once: accuracy {metrics['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={metrics['n']})")
    for c in metrics.get("comparisons", []):
        _say(progress, f"[fit]   vs {c['other']}: {100 * c['difference']:+.2f} pp; {c['verdict']}")
    return metrics


_SEEDS_TITLE = "Seeds of the chosen configuration"
_SEEDS_MARKER = "<!-- seed summary: filled in once every seed is tested -->"


def _seed_rows(rows: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The last round's runs of the chosen configuration, one per seed, in seed order."""
    seeded = [dict(r) for r in rows if "seed" in r and r.get("candidate") == chosen.get("candidate") and r.get("run")]
    return sorted(seeded, key=lambda r: int(r["seed"]))


def _seed_note(seed_rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The summary's line on the seeds (validation is known before the test reads; test is in its section)."""
    from tellapart.train import seed_spread

    vals = [float(r["val_acc"]) for r in seed_rows if r.get("val_acc") is not None]
    if not vals:
        return {}
    return {"seeds": f"validation {seed_spread(vals).text()} over the chosen configuration's seeds; test: see '{_SEEDS_TITLE}'"}


def _seed_summary(out: Path, cfg: FitConfig, plan: Mapping[str, Any], chosen: Mapping[str, Any],
                  seed_rows: Sequence[Mapping[str, Any]], test: Mapping[str, Any]) -> dict[str, Any]:
    """Validation and test accuracy over the chosen configuration's seeds (mean ± std, 95% t-interval), and which one is exported."""
    from tellapart.evaluate import TestLedger

    from tellapart.train import seed_spread

    runs = []
    for r in seed_rows:
        if r["run"] == chosen["run"]:
            test_acc = test.get("accuracy")
        else:
            tested = TestLedger.first_result(out / r["run"])
            test_acc = tested.get("accuracy") if tested else None
        runs.append({"run": r["run"], "seed": r["seed"], "val_acc": r.get("val_acc"), "test_acc": test_acc})
    vals = [float(r["val_acc"]) for r in runs if r["val_acc"] is not None]
    tests = [float(r["test_acc"]) for r in runs if r["test_acc"] is not None]
    val, tst = (seed_spread(vals) if vals else None), (seed_spread(tests) if tests else None)
    exported = next((r for r in runs if r["run"] == chosen["run"]), None)
    if exported is not None:
        why = f"seed {exported['seed']}, the best of the seeds on validation"
    elif runs:
        why = "a run of an earlier round, which scored higher on validation than every seed"
    else:
        why = "a run of an earlier round: no seed of the last round ran (see plan.json 'rounds' and 'pruned')"
    summary: dict[str, Any] = {
        "asked": cfg.seeds, "used": len(runs), "candidate": chosen.get("candidate"), "runs": runs,
        "val_acc": val.to_json() if val else None, "test_acc": tst.to_json() if tst else None,
        "val_text": val.text() if val else "none finished", "test_text": tst.text() if tst else "none tested",
        "exported": {"run": chosen["run"], "why": why},
    }
    if plan.get("seeds", {}).get("why_reduced"):
        summary["why_reduced"] = plan["seeds"]["why_reduced"]
    if len(runs) < int(plan.get("seeds", {}).get("planned", cfg.seeds)):
        summary["why_fewer"] = f"{len(runs)} of the planned seeds finished within the budget (see 'pruned')"
    return summary


def _seed_section_body(seeds: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['run'])}</td><td class='num'>{r['seed']}</td><td class='num'>{_acc(r['val_acc'])}</td>"
        f"<td class='num'>{_acc(r['test_acc'])}</td><td>{'exported' if r['run'] == seeds['exported']['run'] else ''}</td></tr>"
        for r in seeds["runs"]
    )
    reduced = plan_note = ""
    if seeds.get("why_reduced"):
        reduced = f"<p>{html.escape(seeds['why_reduced'])}.</p>"
    if seeds.get("why_fewer"):
        plan_note = f"<p>{html.escape(seeds['why_fewer'])}.</p>"
    return (
        f"<p>The configuration chosen on validation, {html.escape(str(seeds['candidate']))}, was trained from scratch with "
        f"{seeds['used']} seed(s) (of {seeds['asked']} asked); every seed's model was tested once, after the choice was made.</p>"
        f"<p class='seed-val'>Validation accuracy: {html.escape(seeds['val_text'])}</p>"
        f"<p class='seed-test'>Test accuracy: {html.escape(seeds['test_text'])}</p>"
        f"<p>The exported and served model is one model: {html.escape(seeds['exported']['run'])} "
        f"({html.escape(seeds['exported']['why'])}).</p>{reduced}{plan_note}"
        "<div class='table-wrap'><table><tr><th>run</th><th>seed</th><th>val acc</th><th>test acc</th><th></th></tr>"
        f"{rows}</table></div>"
    )


def _fill_seed_section(report: Path, seeds: Mapping[str, Any]) -> None:
    """Writes the seed summary into the report, whose section was left as a marker until every seed was tested."""
    if not report.is_file():
        return
    text = report.read_text(encoding="utf-8")
    if _SEEDS_MARKER in text:
        atomic_write(report, text.replace(_SEEDS_MARKER, _seed_section_body(seeds), 1))


def _network_predictions(cache: Cache, run: Path, rows: np.ndarray) -> np.ndarray:
    from tellapart.train import Feeder, evaluate, load_model, resolve_runtime

    loaded = load_model(run)
    pre = loaded.preprocess
    runtime = resolve_runtime("cpu", "fp32", "on" if pre.get("channels_last") else "off", 0, is_conv=True)
    result = evaluate(loaded.model, Feeder(cache.pixels, cache.labels, tuple(pre["mean"]), tuple(pre["std"]), runtime), rows)
    return result.probs.argmax(1)


def _report_notes(plan: Mapping[str, Any], chosen: Mapping[str, Any], cfg: FitConfig, clock: _Clock) -> dict[str, str]:
    d = plan["decisions"]
    return {
        "chosen": f"{chosen['rung']} ({chosen['note']}), val {chosen['val_acc']:.4f}, selected on validation",
        "budget": f"{_duration(cfg.budget_s)} ({cfg.preset} preset); {_duration(clock.spent())} spent before this report",
        **{f"decision: {k}": v for k, v in d["reasons"].items()},
    }


def _budget_section(plan: Mapping[str, Any], clock: _Clock) -> tuple[str, str]:
    """How the budget was spent: steps, rounds, runs (allowance vs used), what was pruned and why."""
    steps = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['seconds']:.1f}</td></tr>" for k, v in plan.get("steps", {}).items())
    runs = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{r.get('allowance_s', 0):.0f}</td><td>{r.get('seconds', 0):.1f}</td>"
        f"<td>{_acc(r.get('val_acc'))}</td><td>{html.escape(r.get('stopped_by_budget', ''))}</td></tr>"
        for name, r in plan.get("runs", {}).items()
    )
    rounds = "".join(
        f"<li>round {r['round']}: {len(r['members'])} candidate(s), {r['epochs']} epoch(s) on {100 * r['fraction']:.0f}% of train, "
        f"{r.get('round_s', 0):.0f} s planned in all{html.escape(' — ' + r['skipped']) if r.get('skipped') else ''}</li>"
        for r in plan.get("rounds", [])
    )
    pruned = "".join(f"<li>{html.escape(p['candidate'])} after round {p['round']}: {html.escape(p['why'])}</li>" for p in plan.get("pruned", []))
    body = (
        f"<p>Budget {_duration(plan['budget_s'])}; {_duration(clock.spent())} spent up to the test read "
        "(this includes time spent before an interruption). Successive halving in whole rounds: every candidate "
        "briefly, the best third of each round going on, the last one trained from scratch with what was left.</p>"
        f"<h3>Steps (seconds)</h3><table><tr><th>step</th><th>seconds</th></tr>{steps}</table>"
        f"<h3>Rounds</h3><ul>{rounds}</ul>"
        f"<h3>Runs</h3><div style='overflow-x:auto'><table><tr><th>run</th><th>planned s</th><th>used s</th><th>val acc</th><th>stopped by the budget</th></tr>{runs}</table></div>"
        f"<h3>Pruned</h3><ul>{pruned or '<li>nothing</li>'}</ul>"
    )
    return "How the budget was spent", body


def _export(out: Path, chosen: Mapping[str, Any], progress: bool) -> dict[str, Any]:
    try:
        from tellapart.export import export_onnx

        result = export_onnx(out / chosen["run"], out / "model.onnx")
    except ImportError as exc:
        _say(progress, f"[fit] export skipped: {exc} (pip install 'tellapart[export]')")
        return {"skipped": str(exc)}
    except UserError as exc:
        _say(progress, f"[fit] export failed: {exc}")
        return {"failed": str(exc)}
    _say(progress, f"[fit] exported {result.path} (parity {'ok' if result.ok else 'FAILED'}, max |diff| {result.max_abs_diff:.1e})")
    return {"path": str(result.path), "parity_ok": bool(result.ok), "max_abs_diff": float(result.max_abs_diff)}


def _acc(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
