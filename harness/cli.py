"""Command line: ``harness <command>`` (also ``python -m harness``).

Commands import their back-ends lazily so ``harness --help`` stays fast and optional libraries
(nuscenes-devkit, spconv) are loaded only by the commands that need them.
Bad input (:class:`harness.errors.InputError`) prints one line naming the file and the fix and exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from harness.errors import InputError


def _cmd_gen_data(args: argparse.Namespace) -> int:
    """Generate into a temporary sibling folder and move it into place only when complete: an interrupted
    gen-data leaves no half dataset (its temp folder is removed by the next gen-data into the same place)."""
    from harness.data import generate
    from harness.io import staging_dir

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", "pass a folder path for --out (the dataset root to create)")
    sequences = [0, 8]
    if args.format == "semantickitti" and args.sequences:
        try:
            sequences = [int(s, 10) for s in args.sequences]
        except ValueError:
            raise InputError("--sequences", f"{args.sequences} are not sequence numbers", "e.g. --sequences 00 08") from None
        for seq in sequences:  # stale frames of an earlier, longer run would not match poses.txt
            velo = out / "sequences" / f"{seq:02d}" / "velodyne"
            if velo.is_dir() and any(velo.iterdir()):
                raise InputError(velo, "already holds scans", "generate into an empty folder (or delete this sequence first)")
    with staging_dir(out) as staging:
        if args.format == "semantickitti":
            summary = generate.generate_semantickitti(staging, scans_per_sequence=args.scans, sequences=sequences,
                                                      seed=args.seed, points_scale=args.points_scale,
                                                      coverage=args.coverage)
        else:
            summary = generate.generate_nuscenes(staging, scans=args.scans, seed=args.seed)
        _move_into_place(staging, out)
    summary["root"] = str(out)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _move_into_place(staging: Path, out: Path) -> None:
    """``staging`` becomes ``out`` (one rename), or, when ``out`` already holds data, its files join it (every
    target checked free first, so a conflict changes nothing)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        staging.rename(out)
        return
    files = [p for p in staging.rglob("*") if p.is_file()]
    taken = [out / p.relative_to(staging) for p in files if (out / p.relative_to(staging)).exists()]
    if taken:
        raise InputError(taken[0], f"already exists ({len(taken)} generated file(s) would overwrite data)",
                         "generate into an empty folder (or delete the existing one first)")
    for p in files:
        target = out / p.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        p.rename(target)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.evaluate import runner

    if args.out is not None and args.out.is_dir():  # checked first: never evaluate for minutes, then fail to write
        raise InputError(args.out, "is a directory", "pass a file path for --out (e.g. metrics.json)")
    if args.dataset == "semantickitti":
        from harness.data.semantickitti import resolve_sequences

        if not args.split and not args.sequences:
            raise InputError("--split/--sequences", "no sequences chosen", "pass --split val or --sequences 08 ...")
        sequences = resolve_sequences(args.split, args.sequences or None)
        from harness.engine.data import LABEL_MAPS

        result = runner.evaluate_semantickitti(args.root, args.predictions, sequences, LABEL_MAPS[args.label_map])
    else:
        result = runner.evaluate_nuscenes(args.root, args.predictions, version=args.version, eval_set=args.split or "val")
    print(runner.format_table(result))
    if args.out:
        from harness.io import write_json_atomic

        write_json_atomic(args.out, result)
        print(f"wrote {args.out}")
    return 0


def _cmd_timing(args: argparse.Namespace) -> int:
    from harness.backbones.base import BACKBONES

    if args.backbone not in BACKBONES:
        raise InputError("--backbone", BACKBONES.unknown_message(args.backbone), "pass a registered backbone name")
    if args.what == "data":
        from harness.profiling.data import profile_data

        result = profile_data(args.backbone, args.scan, args.label, repeat=args.repeat, augment=not args.no_augment)
    else:
        from harness.profiling.model import profile_model

        from harness.engine.device import resolve_device

        device = str(resolve_device(args.device))
        result = profile_model(args.backbone, float(args.width), args.scan, backend=args.backend, repeat=args.repeat,
                               device=device, warmup=args.warmup)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from harness.config.load import load_config
    from harness.engine.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, resume=args.resume, device=args.device)
    metrics = trainer.fit()
    if trainer.info.is_main:
        print(json.dumps({k: metrics[k] for k in ("run", "miou", "accuracy") if k in metrics}, indent=2))
        print(f"run folder: {trainer.store.path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from harness.engine.inference import run_eval

    result = run_eval(args.run, args.checkpoint, args.config, args.predictions_out, args.tta, args.split, args.device)
    if result.get("num_scans"):
        from harness.evaluate.runner import format_table

        print(format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="PVKD reproduction harness")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("gen-data", help="write synthetic LiDAR scans in the official on-disk formats")
    gen.add_argument("--format", choices=["semantickitti", "nuscenes"], required=True)
    gen.add_argument("--out", type=Path, required=True, help="dataset root to create")
    gen.add_argument("--scans", type=int, default=5, help="scans per sequence (nuScenes: key frames in total)")
    gen.add_argument("--sequences", nargs="*", help="SemanticKITTI sequence numbers (default: 00 08)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--points-scale", type=float, default=1.0, help="fraction of the full sensor's azimuth steps")
    gen.add_argument("--coverage", action="store_true",
                     help="semantickitti: class-coverage streets (all 19 classes near the sensor in every scan)")
    gen.set_defaults(func=_cmd_gen_data)

    ev = sub.add_parser("evaluate", help="score prediction files with the official metric semantics")
    from harness.data.datasets import DATASETS

    ev.add_argument("--dataset", choices=DATASETS.names(), required=True)
    ev.add_argument("--root", type=Path, required=True, help="dataset root")
    ev.add_argument("--split", help="semantickitti: train|val|test; nuscenes: eval set (val, mini_val, ...)")
    ev.add_argument("--sequences", nargs="*", help="SemanticKITTI sequences (instead of --split)")
    ev.add_argument("--predictions", type=Path, required=True,
                    help="semantickitti: PRED/sequences/NN/predictions/*.label; nuscenes: PRED/lidarseg/<set>/*.bin")
    ev.add_argument("--version", default="v1.0-trainval", help="nuScenes table version")
    ev.add_argument("--out", type=Path, help="write metrics JSON here")
    ev.add_argument("--label-map", choices=["official", "spvnas"], default="official",
                    help="SemanticKITTI ground-truth mapping (spvnas: the MinkUNet/SPVCNN recipes' data.label_map)")
    ev.set_defaults(func=_cmd_evaluate)

    tr = sub.add_parser("train", help="train a teacher, a student, or a distilled student")
    tr.add_argument("--config", type=Path, help="experiment YAML (differences from the defaults)")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=2 model.width=0.5")
    tr.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    tr.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    tr.set_defaults(func=_cmd_train)

    evl = sub.add_parser("predict", aliases=["eval"],
                         help="run a trained model on a split: scores + predictions (SemanticKITTI submission layout); "
                              "'eval' is the old name")
    evl.add_argument("--run", type=Path, help="run folder (config.yaml + the checkpoint eval.checkpoint names: best.pt by default)")
    evl.add_argument("--checkpoint", type=Path)
    evl.add_argument("--config", type=Path)
    evl.add_argument("--split", default="val")
    evl.add_argument("--predictions-out", type=Path, help="write OUT/sequences/NN/predictions/*.label")
    evl.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                     help="4-flip test-time augmentation (default: the run config's eval.tta)")
    evl.add_argument("--device")
    evl.set_defaults(func=_cmd_predict)

    prof = sub.add_parser("timing", aliases=["profile"],
                          help="time preprocessing (data) or a backbone (model); 'profile' is the old name "
                               "(a run profile is --profile of reproduce)")
    prof.add_argument("what", choices=["data", "model"])
    prof.add_argument("--backbone", required=True, help="a registered backbone (harness/backbones: BACKBONES)")
    prof.add_argument("--scan", type=Path, required=True, help="a SemanticKITTI .bin scan")
    prof.add_argument("--label", type=Path, help="its .label file (data profiling)")
    prof.add_argument("--repeat", type=int, default=20)
    prof.add_argument("--warmup", type=int, default=3, help="model: untimed forwards before timing")
    prof.add_argument("--no-augment", action="store_true", help="data: skip the training augmentations")
    prof.add_argument("--width", default="1.0", choices=["1.0", "0.5"], help="model: teacher 1.0 or student 0.5")
    from harness.config.load import CHOICES

    prof.add_argument("--backend", default="auto", choices=CHOICES[("model", "sparse_backend")],
                      help="model: auto|torchref|spconv|minkowski")
    prof.add_argument("--device", default="cpu", help="model: cpu or cuda")
    prof.set_defaults(func=_cmd_timing)

    dc = sub.add_parser("device-check", help="GPU readiness: CUDA vs CPU float64, AMP, latency, train step, DDP "
                        "(JSON report; CUDA parts skipped with a reason on CPU)")
    dc.add_argument("--scans", type=Path,
                    help="folder with real SemanticKITTI .bin scans (default $PVKD_REAL_DATA/semantickitti)")
    dc.add_argument("--out", type=Path, default=Path("results/device_check.json"), help="JSON report path")
    dc.add_argument("--quick", action="store_true", help="few samples, small crops (the CPU test)")
    dc.set_defaults(func=_cmd_device_check)

    # reproduce / tables / check: experiments as data, the run store, reported numbers (harness/reproduce, harness/report)
    from harness.reproduce.cli import add_subcommands

    add_subcommands(sub)
    return parser


def _cmd_device_check(args: argparse.Namespace) -> int:
    from harness.device_check import run_device_check

    scans = args.scans
    if scans is None:
        if not os.environ.get("PVKD_REAL_DATA"):
            raise InputError("--scans", "no real scans given",
                             "pass --scans DIR holding SemanticKITTI .bin scans, or set PVKD_REAL_DATA")
        scans = Path(os.environ["PVKD_REAL_DATA"]) / "semantickitti"
    report = run_device_check(scans, args.out, quick=args.quick)
    skipped = [f"{k} ({v['skipped']})" for k, v in report.items() if isinstance(v, dict) and "skipped" in v]
    verdict = "passed" if report["passed"] else "FAILED"
    print(f"device check on {report['device']}: {verdict} in {report['seconds']:.0f} s; report {args.out}"
          + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))
    return 0 if report["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
