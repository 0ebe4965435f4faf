"""Back-ends of ``harness reproduce``, ``harness tables`` and ``harness check`` (argparse wiring in harness/cli.py)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from harness.errors import InputError
from harness.reproduce.plan import Plan, build_plan, env_vars, format_plan, missing_env
from harness.config.experiment import EXPERIMENT_DIR, Experiment, Profile, available, load_experiment, load_profile


def _experiments(names: list[str] | None) -> list[Experiment]:
    if not names or names == ["all"]:
        names = available(EXPERIMENT_DIR)
    return [load_experiment(n) for n in names]


def _store_has_runs(profile: Profile) -> bool:
    from harness.runs.store import SEED_DIR

    return any(SEED_DIR.match(p.parent.name) for p in Path(profile.output_root).glob("*/*/*/seed*/metrics.json"))


def resolve_profile(name: str | None, experiments: list[Experiment], prefer_store: bool = False) -> tuple[Profile, str]:
    """``--profile`` if given; else ``paper`` when every dataset root it needs is set in the environment, ``demo``
    otherwise. ``prefer_store`` (tables/check): the profile whose run store has finished runs, paper first."""
    if name:
        return load_profile(name), f"--profile {name}"
    paper, demo = load_profile("paper"), load_profile("demo")
    if prefer_store:
        if _store_has_runs(paper):
            return paper, f"paper-profile runs found under {paper.output_root}"
        if _store_has_runs(demo):
            return demo, f"no paper-profile runs; demo-profile runs found under {demo.output_root}"
    datasets = sorted({ds for e in experiments for ds in e.datasets}) or ["semantickitti"]
    needed = [v for ds in datasets for v in env_vars(str((paper.data.get(ds) or {}).get("root", "")))]
    unset = [v for v in needed if not os.environ.get(v)]
    if needed and not unset:
        return paper, "dataset roots set (" + ", ".join(f"${v}" for v in needed) + ")"
    return demo, "no dataset root set (" + ", ".join(f"${v}" for v in unset) + "): demo profile on generated data"


def _header(verb: str, experiments: list[Experiment], profile: Profile, why: str) -> str:
    names = ", ".join(e.table for e in experiments)
    lines = [f"{verb} {names} -- profile {profile.name} ({why})"]
    if profile.is_demo:
        lines.append("  DEMO PROFILE: generated data, minute-long schedules -- NOT comparable to the paper")
    return "\n".join(lines)


def render(plan: Plan, echo=print) -> list[Path]:
    """Collect finished runs of the plan and write tables + figures; returns the files written."""
    from harness.reproduce.collect import collect
    from harness.report.figures import write_figures
    from harness.report.reference import load_reference
    from harness.report.tables import build_tables, write_tables

    ref = load_reference()
    results = collect(plan)
    demo = plan.profile.is_demo
    written: list[Path] = []
    for exp in plan.experiments:
        models = build_tables(exp, results, ref, plan.profile.output_root, demo=demo, profile=plan.profile.name)
        written += write_tables(models, plan.profile.tables_dir)
        written += write_figures(exp, results, plan.profile.figures_dir, demo=demo, ref=ref, profile=plan.profile.name)
    return written


def real_eval_step(plan: Plan, echo=print) -> list[Path]:
    """Profiles with a regression baseline (cpu-bench): score their teachers on the real labelled scans
    (harness/reproduce/real_eval.py) unless the written result already covers them; skipped with the reason printed."""
    from harness.reproduce.real_eval import evaluate_real, up_to_date, write_real
    from harness.reproduce.regression import REGRESSION_PROFILES

    if plan.profile.name not in REGRESSION_PROFILES:
        return []
    if up_to_date(plan):
        echo(f"[real-eval] up to date: {plan.profile.tables_dir}/real_scans.json")
        return []
    try:
        result = evaluate_real(plan, echo=echo)
    except InputError as err:
        echo(f"[real-eval] skipped: {err}")
        return []
    return write_real(plan, result) if result is not None and result["teachers"] else []


def cmd_real_eval(args: argparse.Namespace) -> int:
    from harness.reproduce.real_eval import evaluate_real, write_real

    experiments = _experiments(args.table or ["table1"])
    profile, why = resolve_profile(args.profile, experiments)
    plan = build_plan(experiments, profile, discover_seeds=True)
    print(_header("real-eval", experiments, profile, why))
    root = Path(args.real) if args.real else None
    if root is not None and not root.is_dir():
        raise InputError(root, "real data folder not found", "pass the folder holding semantickitti/ (or set PVKD_REAL_DATA)")
    result = evaluate_real(plan, root, crop=args.crop)
    if result is None or not result["teachers"]:
        return 0
    for path in write_real(plan, result):
        print(f"  wrote {path}")
    return 0


def _check_roots(plan: Plan) -> None:
    from harness.config.load import expand_env

    unset = missing_env(plan)
    if unset:
        ds, var = unset[0]
        raise InputError(f"${var}", f"the {plan.profile.name} profile reads {ds} from ${var}, which is not set",
                         f"export {var}=/path/to/{ds} (or use --profile demo)")
    for ds, root in plan.data_roots.items():
        if (plan.profile.data.get(ds) or {}).get("generate"):
            continue
        path = Path(expand_env(root))
        if not path.is_dir():
            raise InputError(path, f"{ds} root does not exist", "point the environment variable at the dataset root")


def seed_count(asked: int | None, profile: Profile) -> int:
    """Seeds 0..N-1 per run: ``--seeds N`` if given, else the profile's ``seeds:`` (cpu-bench: >= 3 for the paired
    tests of harness/report/effects.py), else 1."""
    n = asked if asked is not None else (getattr(profile, "seeds", None) or 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        where = "--seeds" if asked is not None else f"{profile.path}: seeds"
        raise InputError(where, f"{n!r} is not a seed count", "ask for at least one seed (an integer >= 1)")
    return n


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.reproduce.execute import ensure_gitignored, execute, generate_data, store_lock

    t0 = time.monotonic()
    experiments = _experiments([args.table])
    profile, why = resolve_profile(args.profile, experiments)
    if args.gpus < 1:
        raise InputError("--gpus", f"{args.gpus}", "ask for at least one GPU (1 trains without torchrun)")
    plan = build_plan(experiments, profile, seeds=range(seed_count(args.seeds, profile)))
    print(_header("reproduce", experiments, profile, why))
    print(format_plan(plan, gpus=args.gpus))
    if args.dry_run:
        print("dry run: nothing generated, trained or rendered")
        return 0
    _check_roots(plan)
    ensure_gitignored(profile.gitignore)
    ensure_gitignored(profile.logs_dir)
    jobs = args.jobs if args.jobs is not None else profile.jobs
    device = args.device or profile.device
    with store_lock(profile.logs_dir):  # one reproduce per profile; the lock file sits in the git-ignored logs folder
        generate_data(plan)
        try:
            outcomes = execute(plan, jobs=jobs, gpus=args.gpus, device=device, replace_stale=args.replace_stale,
                               threads_per_job=profile.threads_per_job)
        except KeyboardInterrupt:
            return 130
    written = render(plan)
    written += real_eval_step(plan)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    print("")
    print("results: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    bad = [o for o in outcomes if o.status in ("failed", "blocked", "stale")]
    for o in bad:
        print(f"  {o.status}: {o.display} seed{o.seed} ({o.message})")
    print(f"tables:  {profile.tables_dir}/  ({', '.join(sorted({p.name for p in written if p.parent == Path(profile.tables_dir)}))})")
    print(f"figures: {profile.figures_dir}/  ({len([p for p in written if p.parent == Path(profile.figures_dir)])} files)")
    if profile.is_demo:
        print("DEMO PROFILE: not comparable to the paper (harness check says 'not applicable' for these runs)")
    print(f"wall time: {time.monotonic() - t0:.0f} s")
    return 1 if bad else 0


def cmd_tables(args: argparse.Namespace) -> int:
    experiments = _experiments(args.table)
    profile, why = resolve_profile(args.profile, experiments, prefer_store=True)
    plan = build_plan(experiments, profile, discover_seeds=True)
    print(_header("tables", experiments, profile, why))
    from harness.reproduce.execute import ensure_gitignored

    ensure_gitignored(profile.gitignore)
    written = render(plan)
    for p in written:
        print(f"  wrote {p}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.report.check import compare, format_report, not_applicable_message
    from harness.reproduce.collect import collect
    from harness.report.reference import load_claims, load_reference

    experiments = _experiments(args.table)
    experiments = [e for e in experiments if e.kind != "coefficient_table"] or experiments
    # the profile asked for, else the one `reproduce` would pick (never whichever store happens to hold runs:
    # falling back to the demo store would answer "not applicable" for a missing paper reproduction)
    profile, why = resolve_profile(args.profile, experiments)
    committed_root = profile.output_root
    if getattr(args, "store", None):
        import dataclasses

        if not Path(args.store).is_dir():
            raise InputError(args.store, "run store not found", "pass the folder that reproduce wrote its runs into")
        profile = dataclasses.replace(profile, output_root=str(args.store))
    from harness.reproduce.regression import REGRESSION_PROFILES

    for flag in ("write_expected", "store"):
        if getattr(args, flag, None) and profile.name not in REGRESSION_PROFILES:
            raise InputError(f"--{flag.replace('_', '-')}", f"profile {profile.name} has no committed regression baseline",
                             f"use it with --profile {' | '.join(REGRESSION_PROFILES)}")
    if profile.name in REGRESSION_PROFILES:
        return _check_regression(args, experiments, profile, why, committed_root)
    plan = build_plan(experiments, profile, discover_seeds=True)
    print(_header("check", experiments, profile, why))
    message = not_applicable_message(profile.name, why)
    if message is not None:
        print(message)
        return 0
    report = compare(experiments, collect(plan), load_reference(), load_claims(), args.tolerance,
                     profile=profile.name, allow_missing=args.allow_missing)
    print(format_report(report))
    return report.exit_code


def _check_regression(args: argparse.Namespace, experiments: list[Experiment], profile: Profile, why: str,
                      committed_root: str) -> int:
    """The profile's own regression check against its committed expected values (harness/reproduce/regression.py);
    ``--write-expected`` writes them from the finished run store instead. The expected values live next to the
    committed store (``results/<profile>/expected.json``) whatever ``--store`` points at."""
    from harness.reproduce.collect import collect
    from harness.reproduce.regression import EXPECTED_NAME, compare_expected, format_drifts, read_expected, write_expected

    path = Path(committed_root).parent / EXPECTED_NAME
    plan = build_plan(experiments, profile, discover_seeds=True)
    print(_header("check", experiments, profile, why))
    results = collect(plan)
    if args.write_expected:
        written = write_expected(plan, results, path)
        print(f"wrote {written}: the expected values of {len(read_expected(written)['runs'])} run(s), "
              f"seeds {plan.seeds}, from {profile.output_root}")
        return 0
    report, code = format_drifts(compare_expected(plan, results, read_expected(path)), path, profile.output_root,
                                 args.allow_missing)
    print(report)
    return code


def add_subcommands(sub) -> None:  # noqa: ANN001 - argparse's private subparsers type
    rep = sub.add_parser("reproduce", help="plan, train (resumably) and render a paper table",
                         description="Plan the runs of a table (teachers first), skip finished ones, resume interrupted ones, "
                                     "train the rest, then write results/tables and results/figures.")
    rep.add_argument("table", help=f"experiment: {', '.join(available(EXPERIMENT_DIR))} (or all)")
    rep.add_argument("--profile", help="paper | demo (default: paper when the dataset roots are set, else demo)")
    rep.add_argument("--seeds", type=int, default=None,
                     help="seeds 0..N-1 per run (students of seed k use teacher seed k); default: the profile's "
                          "seeds: (cpu-bench), else 1")
    rep.add_argument("--gpus", type=int, default=1, help="GPUs per run; > 1 launches each run with torchrun")
    rep.add_argument("--jobs", type=int, help="runs trained at once (default: the profile's; 2 for the CPU demo)")
    rep.add_argument("--device", help="cpu | cuda (default: the profile's, else cuda when available)")
    rep.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    rep.add_argument("--replace-stale", action="store_true",
                     help="move runs finished with another config aside (seedK.replaced-<hash>) and retrain them")
    rep.set_defaults(func=cmd_reproduce)

    tab = sub.add_parser("tables", help="re-render tables and figures from the run store alone")
    tab.add_argument("--table", action="append", help="experiment (repeatable; default: all)")
    tab.add_argument("--profile", help="paper | demo (default: the one with finished runs)")
    tab.set_defaults(func=cmd_tables)

    chk = sub.add_parser("check", help="compare our runs with the reported numbers and the paper's claims (exit 1 on failure)")
    chk.add_argument("--table", action="append", help="experiment (repeatable; default: all)")
    chk.add_argument("--tolerance", type=float, help="allowed |ours - paper| in mIoU points "
                     "(default: 1.0 for retrained runs, 0.1 for evaluated released checkpoints)")
    chk.add_argument("--profile", help="paper | demo (default: the profile `reproduce` would pick: paper when the "
                     "dataset roots are set, else demo, which is not applicable)")
    chk.add_argument("--allow-missing", action="store_true",
                     help="missing runs do not fail the check (stale and other-profile runs still do)")
    chk.add_argument("--write-expected", action="store_true",
                     help="cpu-bench: write results/cpu-bench/expected.json (the regression baseline) from the finished "
                          "run store instead of checking against it")
    chk.add_argument("--store", help="cpu-bench: check this run store (a re-run elsewhere) instead of the profile's "
                     "output_root")
    chk.set_defaults(func=cmd_check)

    real = sub.add_parser("real-eval", help="score a profile's teachers (trained on generated data) on the real labelled "
                          "SemanticKITTI scans in $PVKD_REAL_DATA; skipped with the reason when they are absent")
    real.add_argument("--table", action="append", help="experiment (repeatable; default: table1)")
    real.add_argument("--profile", default="cpu-bench", help="profile whose teachers to score (default: cpu-bench)")
    real.add_argument("--crop", default="train", choices=["train", "full"],
                      help="train: the nearest data.max_points points, as in training (default); full: the whole scan")
    real.add_argument("--real", help="folder holding semantickitti/ (default: $PVKD_REAL_DATA)")
    real.set_defaults(func=cmd_real_eval)
