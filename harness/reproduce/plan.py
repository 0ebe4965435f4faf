"""Turn experiments + a profile into an ordered, validated list of runs with their state in the run store.

Every run's config is built exactly as ``harness train`` will build it -- ``load_config(recipe, overrides)`` --
so a wrong key, method or backbone name in an experiment file fails here, before anything trains. Its
``config_hash`` is compared with the run folder:

* ``done``     ``metrics.json`` exists with the same hash: skipped;
* ``resume``   ``config.yaml`` with the same hash and ``checkpoints/last.pt``: continued with ``--resume``;
* ``restart``  ``config.yaml`` with the same hash but no checkpoint yet (killed in its first epoch): the folder's
               small files are cleared and the run starts again;
* ``stale``    the folder holds a finished or unfinished run of *another* config, or a finished student whose
               teacher is unfinished or finished after it (distilled from other weights): left alone and reported
               (``--replace-stale`` moves it aside to ``seedK.replaced-<hash>`` and retrains);
* ``new``      nothing there yet.

Order: teachers before their students (a topological order of the ``teacher:`` links, file order otherwise).
Runs with the same folder in several experiments (e.g. ``main``'s PVD run is Table 2's last row) are planned
once; the same folder with two different configs is an error.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.errors import InputError
from harness.config.experiment import Experiment, Profile, RunSpec, override_args
from harness.runs.store import SEED_DIR

STATUSES = ("done", "resume", "restart", "new", "stale")


@dataclass
class PlannedRun:
    table: str
    spec: RunSpec
    seed: int
    run_dir: Path
    overrides: list[str]
    config_hash: str
    backbone: str
    dataset: str
    method: str | None
    tree: dict = field(default_factory=dict)  # the resolved config (config_to_dict)
    teacher: str | None = None           # key (run folder) of the teacher run
    status: str = "new"
    detail: str = ""
    also_in: list[str] = field(default_factory=list)  # other experiments that plan the same folder

    @property
    def key(self) -> str:
        return str(self.run_dir)

    @property
    def display(self) -> str:
        return f"{self.table}:{self.spec.id}"

    def train_command(self, python: str, device: str | None = None, gpus: int = 1) -> list[str]:
        launcher = [python, "-m", "harness"] if gpus <= 1 else [
            python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "harness"]
        cmd = launcher + ["train", "--config", str(self.spec.recipe_path)] + self.overrides
        if self.status == "resume":
            cmd.append("--resume")
        if device:
            cmd += ["--device", device]
        return cmd


@dataclass
class Plan:
    profile: Profile
    experiments: list[Experiment]
    runs: list[PlannedRun]                               # unique folders, teachers first
    index: dict[tuple[str, str, int], str]               # (table, run id, seed) -> run key
    seeds: list[int]
    data_roots: dict[str, str]                           # dataset -> data.root as written into configs

    def by_key(self) -> dict[str, PlannedRun]:
        return {r.key: r for r in self.runs}

    def lookup(self, table: str, run_id: str, seed: int) -> PlannedRun | None:
        key = self.index.get((table, run_id, seed))
        return self.by_key().get(key) if key else None

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for r in self.runs:
            out[r.status] = out.get(r.status, 0) + 1
        return out


# ---------------------------------------------------------------------------------------------- data roots
def generated_root(profile: Profile, dataset: str) -> str | None:
    """Folder for a profile's generated dataset: named after the generator settings, so that changing them gives
    a new folder (and, through data.root, new config hashes)."""
    block = profile.data.get(dataset) or {}
    gen = block.get("generate")
    if not gen:
        return None
    digest = hashlib.sha256(json.dumps(gen, sort_keys=True).encode()).hexdigest()[:8]
    return str(Path(profile.data_dir or "results/demo/data") / f"{dataset}-{digest}")


def data_root(profile: Profile, dataset: str) -> str:
    block = profile.data.get(dataset)
    if block is None:
        raise InputError(profile.path, f"profile {profile.name!r} has no data settings for {dataset!r}",
                         f"add data: {{{dataset}: ...}} to the profile")
    root = generated_root(profile, dataset) or block.get("root")
    if not root:
        raise InputError(profile.path, f"data.{dataset} needs 'root' or 'generate'", "set one of them")
    return str(root)


def env_vars(text: str) -> list[str]:
    return re.findall(r"\$\{(\w+)\}", text)


# ---------------------------------------------------------------------------------------------- run state
def read_hash_line(config_file: Path) -> str | None:
    try:
        first = config_file.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    m = re.match(r"#\s*config_hash:\s*(\w+)", first)
    return m.group(1) if m else None


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) and key not in ("coefficients", "options"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def schema_compatible(run_dir: Path, tree: dict) -> list[str] | None:
    """Fields the current config has and the run's stored ``config.yaml`` lacks, when every other setting is equal and
    those fields sit at their defaults (the schema gained them after the run finished: same training); else None.

    ``config_hash`` covers every field of the schema, so adding a field with a backward-compatible default changes
    the hash of every finished run; this keeps such runs "done" instead of retraining them.
    """
    import yaml

    from harness.config.load import HASH_EXCLUDE, config_to_dict
    from harness.config.schema import RunConfig

    try:
        stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(stored, dict):
        return None
    old, new = _flatten(stored), _flatten(tree)
    defaults = _flatten(config_to_dict(RunConfig()))
    for key in HASH_EXCLUDE:
        old.pop(key, None)
        new.pop(key, None)
    if set(old) - set(new):
        return None                       # a field was removed or renamed: not the same config
    added = sorted(set(new) - set(old))
    if any(old[k] != new[k] for k in old) or any(k not in defaults or new[k] != defaults[k] for k in added):
        return None
    return added


def inspect_run(run_dir: Path, digest: str, tree: dict | None = None) -> tuple[str, str]:
    """State of a run folder for a config with hash ``digest`` (``tree``: its resolved dict, for schema changes)."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "stale", "metrics.json is unreadable"
        if not isinstance(data, dict):
            return "stale", "metrics.json is not a JSON object"
        found = data.get("config_hash")
        if found == digest:
            return "done", "finished"
        added = schema_compatible(run_dir, tree) if tree is not None else None
        if added:
            return "done", f"finished before the config gained {', '.join(added)} (at their defaults): same settings"
        return "stale", f"finished with another config (hash {found}, now {digest})"
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        found = read_hash_line(config_file)
        if found != digest:
            return "stale", f"unfinished run of another config (hash {found}, now {digest})"
        if (run_dir / "checkpoints" / "last.pt").is_file():
            return "resume", "interrupted: continues from checkpoints/last.pt"
        return "restart", "interrupted before its first checkpoint: starts again"
    return "new", ""


def finished_seeds(base: Path) -> list[int]:
    """Seeds with a finished metrics.json under ``<output_root>/<ds>/<bb>/<name>/``."""
    if not base.is_dir():
        return []
    return sorted(int(m.group(1)) for p in base.iterdir() if (m := SEED_DIR.match(p.name)) and (p / "metrics.json").is_file())


# ---------------------------------------------------------------------------------------------- planning
def _topological(exp: Experiment) -> list[RunSpec]:
    order: list[RunSpec] = []
    state: dict[str, int] = {}

    def visit(spec: RunSpec, chain: tuple[str, ...]) -> None:
        if state.get(spec.id) == 2:
            return
        if state.get(spec.id) == 1:
            raise InputError(exp.path, f"teacher links form a cycle: {' -> '.join(chain + (spec.id,))}", "fix the teacher: entries")
        state[spec.id] = 1
        if spec.teacher:
            visit(exp.run(spec.teacher), chain + (spec.id,))
        state[spec.id] = 2
        order.append(spec)

    for spec in exp.runs:
        visit(spec, ())
    return order


def build_plan(experiments: Iterable[Experiment], profile: Profile, seeds: Iterable[int] | None = None,
               discover_seeds: bool = False) -> Plan:
    """Plan every run of ``experiments`` under ``profile`` for ``seeds`` (default ``[0]``).

    ``discover_seeds``: use the seeds that have finished runs in the store (for ``harness tables`` / ``check``).
    Seed ``k`` of a student is distilled from seed ``k`` of its teacher (each seed is an independent replicate).
    """
    from harness.config.load import config_hash, config_to_dict, load_config
    from harness.runs.store import run_dir_for

    experiments = list(experiments)
    roots = {ds: data_root(profile, ds) for exp in experiments for ds in exp.datasets}
    recipe_backbone: dict[tuple[str, str], str] = {}

    def make(exp: Experiment, spec: RunSpec, seed: int, teacher_dir: str | None):
        if (spec.recipe, json.dumps(spec.overrides, sort_keys=True)) not in recipe_backbone:
            base_cfg = _load(load_config, spec, override_args({k: v for k, v in spec.overrides.items()
                                                               if k.startswith("model.")}), exp)
            recipe_backbone[(spec.recipe, json.dumps(spec.overrides, sort_keys=True))] = base_cfg.model.backbone
        backbone = recipe_backbone[(spec.recipe, json.dumps(spec.overrides, sort_keys=True))]
        ov: dict[str, Any] = {}
        ov.update(profile.overrides)
        ov.update((profile.data.get(spec.dataset) or {}).get("overrides") or {})
        ov.update(profile.backbones.get(backbone) or {})
        ov.update(profile.recipes.get(spec.recipe) or {})
        ov.update(spec.overrides)
        ov.update({"name": spec.name, "output_root": profile.output_root,
                   "profile": profile.name if profile.name in ("paper", "demo") else "demo",
                   "data.dataset": spec.dataset, "data.root": roots[spec.dataset], "train.seed": seed})
        if teacher_dir is not None:
            ov["distill.teacher_run"] = teacher_dir
        args = override_args(ov)
        cfg = _load(load_config, spec, args, exp)  # load_config validates coefficients and options too
        return cfg, args

    seed_list = sorted(set(seeds)) if seeds is not None else [0]
    if discover_seeds:
        found: set[int] = set()
        for exp in experiments:
            for spec in exp.runs:
                cfg, _ = make(exp, spec, 0, "(teacher)" if spec.teacher else None)  # the folder does not depend on it
                found.update(finished_seeds(run_dir_for(cfg).parent))
        seed_list = sorted(found) or [0]

    planned: dict[str, PlannedRun] = {}
    order: list[str] = []
    index: dict[tuple[str, str, int], str] = {}
    for exp in experiments:
        for seed in seed_list:
            for spec in _topological(exp):
                teacher_key = index[(exp.table, spec.teacher, seed)] if spec.teacher else None
                cfg, args = make(exp, spec, seed, teacher_key)
                run_dir = run_dir_for(cfg)
                digest = config_hash(cfg)
                key = str(run_dir)
                index[(exp.table, spec.id, seed)] = key
                if key in planned:
                    other = planned[key]
                    if other.config_hash != digest:
                        raise InputError(exp.path, f"run {spec.id} (seed {seed}) and {other.display} share the folder {run_dir} "
                                         f"with different configs", "give one of them another name:")
                    if exp.table != other.table and exp.table not in other.also_in:
                        other.also_in.append(exp.table)
                    continue
                if teacher_key is not None:
                    _check_teacher(exp, spec, cfg, planned[teacher_key])
                tree = config_to_dict(cfg)
                status, detail = inspect_run(run_dir, digest, tree)
                planned[key] = PlannedRun(table=exp.table, spec=spec, seed=seed, run_dir=run_dir, overrides=args,
                                          config_hash=digest, backbone=cfg.model.backbone, dataset=cfg.data.dataset,
                                          method=cfg.distill.method, tree=tree, teacher=teacher_key, status=status,
                                          detail=detail)
                order.append(key)
    for key in order:  # a finished student whose teacher is unfinished or was retrained after it: distilled from other weights
        run = planned[key]
        teacher = planned.get(run.teacher) if run.teacher else None
        if run.status != "done" or teacher is None:
            continue
        if teacher.status != "done":
            run.status, run.detail = "stale", f"its teacher {teacher.display} is {teacher.status}: distilled from other weights"
        elif _mtime(teacher.run_dir / "metrics.json") > _mtime(run.run_dir / "metrics.json"):
            run.status, run.detail = "stale", f"its teacher {teacher.display} finished after it: distilled from other weights"
    runs = [planned[k] for k in order]
    # teachers (runs something depends on) first, then the rest, each group in file order
    needed = {r.teacher for r in runs if r.teacher}
    runs = [r for r in runs if r.key in needed] + [r for r in runs if r.key not in needed]
    return Plan(profile=profile, experiments=experiments, runs=runs, index=index, seeds=seed_list, data_roots=roots)


def _check_teacher(exp: Experiment, spec: RunSpec, cfg: Any, teacher: PlannedRun) -> None:
    """A student distils from a teacher of its own backbone and dataset (else its taps and heads do not match)."""
    for what, ours, theirs in (("backbone", cfg.model.backbone, teacher.backbone), ("dataset", cfg.data.dataset, teacher.dataset)):
        if ours != theirs:
            raise InputError(f"{exp.path} run {spec.id}", f"its teacher {teacher.display} is a {theirs} {what}, "
                             f"the student a {ours} one", f"give it a teacher of the same {what}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _load(load_config, spec: RunSpec, args: list[str], exp: Experiment):
    try:
        return load_config(spec.recipe_path, args)
    except InputError as err:
        raise InputError(f"{exp.path} run {spec.id}", f"{err.path}: {err.problem}", err.fix) from None


# ---------------------------------------------------------------------------------------------- printing
def run_recipe(run: PlannedRun, gpus: int):
    """The run's batch and learning rate on ``gpus`` processes (:func:`harness.engine.recipe.resolve_recipe`)."""
    from harness.config.load import config_from_dict
    from harness.engine.recipe import resolve_recipe

    return resolve_recipe(config_from_dict(run.tree), gpus)


def format_plan(plan: Plan, header: str = "", gpus: int = 1) -> str:
    """The plan table; per run also the GPUs, per-GPU batch, global batch, learning rate and whether that is the
    recipe as written ("original"), rescaled for this GPU count ("scaled") or a per-process batch ("per-process")."""
    lines = [header] if header else []
    width = max([len(r.display) for r in plan.runs] + [10])
    lines.append(f"  {'#':>3}  {'run':<{width}}  {'seed':>4}  {'status':<8} {'config':<16}  {'gpus':>4} {'per-GPU':>7} "
                 f"{'global':>6} {'lr':>9}  {'recipe':<11}  folder")
    by_key = plan.by_key()
    for i, r in enumerate(plan.runs, 1):
        extra = f"  [teacher: {by_key[r.teacher].display}]" if r.teacher in by_key else ""
        shared = f"  [also in {', '.join(r.also_in)}]" if r.also_in else ""
        detail = f"  ({r.detail})" if r.detail and r.detail != "finished" else ""
        rc = run_recipe(r, gpus)
        lines.append(f"  {i:>3}  {r.display:<{width}}  {r.seed:>4}  {r.status:<8} {r.config_hash:<16}  {rc.world_size:>4} "
                     f"{rc.per_process_batch:>7} {rc.global_batch:>6} {rc.lr:>9.3g}  {rc.status:<11}  "
                     f"{r.run_dir}{extra}{shared}{detail}")
    c = plan.counts()
    todo = c["new"] + c["resume"] + c["restart"]
    lines.append(f"  {len(plan.runs)} runs: {c['done']} done (skipped), {todo} to train ({c['new']} new, {c['resume']} to resume, "
                 f"{c['restart']} to restart), {c['stale']} stale")
    return "\n".join(lines)


def missing_env(plan: Plan) -> list[tuple[str, str]]:
    """(dataset, variable) pairs whose ${VAR} in data.root is unset."""
    out = []
    for ds, root in plan.data_roots.items():
        for var in env_vars(root):
            if var not in os.environ:
                out.append((ds, var))
    return out
