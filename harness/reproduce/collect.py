"""Finished runs of a plan as :class:`harness.report.collect.RunResult` records (report reads records, not plans)."""
from __future__ import annotations

from harness.report.collect import RunResult, read_run
from harness.reproduce.plan import Plan, inspect_run


def collect(plan: Plan) -> list[RunResult]:
    """Finished runs of every (experiment, run, seed) in the plan (a shared folder appears once per experiment)."""
    by_key = plan.by_key()
    out = []
    for exp in plan.experiments:
        for spec in exp.runs:
            for seed in plan.seeds:
                key = plan.index.get((exp.table, spec.id, seed))
                if key is None:
                    continue
                run = by_key[key]
                result = read_run(exp.table, spec, seed, run.run_dir, run.config_hash)
                if result is not None and not result.current:
                    result.current = inspect_run(run.run_dir, run.config_hash, run.tree)[0] == "done"
                if result is not None:
                    result.planned_profile = run.tree.get("profile") if run.tree else None
                    out.append(result)
    return out
