"""Experiments and profiles as data: the YAML files under ``harness/configs/{experiments,profiles}/``.

An **experiment** (``experiments/<table>.yaml``) lists runs; each run is a recipe
(``configs/recipes/<recipe>.yaml``) plus dotted overrides, an optional ``teacher`` (another run id of the same
file, trained first; its folder becomes ``distill.teacher_run``) and an optional ``ref`` into
``results/reference/pvkd_reported.csv``::

    table: table1
    title: "..."
    kind: methods                 # methods | coefficients | components | coefficient_table (renderer)
    dataset: semantickitti        # default for runs without their own ``dataset``
    groups: {spvcnn: "SPVNAS (SPVCNN)"}   # display names of the id prefixes (``spvcnn/kd`` -> group spvcnn)
    runs:
      - {id: spvcnn/kd, recipe: spvcnn_student, name: student_kd, teacher: spvcnn/teacher,
         overrides: {distill.method: kd}, ref: t1.spvcnn.kd, label: "+ KD"}

A **profile** (``profiles/<name>.yaml``) says where data and outputs live and what every run of that profile
overrides (the demo profile shortens schedules and generates its data); see ``profiles/demo.yaml``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENT_DIR = CONFIG_DIR / "experiments"
PROFILE_DIR = CONFIG_DIR / "profiles"
RECIPE_DIR = CONFIG_DIR / "recipes"

SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
KINDS = ("methods", "coefficients", "components", "coefficient_table")
RUN_KEYS = {"id", "recipe", "name", "teacher", "overrides", "ref", "label", "dataset"}
EXPERIMENT_KEYS = {"table", "title", "kind", "dataset", "groups", "runs", "note", "highlight_classes", "table_notes",
                   "reference_only"}
PROFILE_KEYS = {"profile", "output_root", "tables_dir", "figures_dir", "logs_dir", "data_dir", "gitignore", "device",
                "jobs", "threads_per_job", "data", "overrides", "backbones", "recipes", "seeds"}


@dataclass(frozen=True)
class RunSpec:
    id: str
    recipe: str
    name: str
    dataset: str
    teacher: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None
    label: str = ""

    @property
    def group(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else ""

    @property
    def recipe_path(self) -> Path:
        return RECIPE_DIR / f"{self.recipe}.yaml"


@dataclass
class Experiment:
    table: str
    title: str
    kind: str
    runs: list[RunSpec]
    path: Path
    groups: dict[str, str] = field(default_factory=dict)
    note: str = ""
    highlight_classes: tuple[str, ...] = ()  # class names set in bold in the per-class tables
    table_notes: list[str] = field(default_factory=list)  # notes under the main table only (not the per-class ones)
    reference_only: dict[str, str] = field(default_factory=dict)  # reference key -> label: paper numbers listed, not run

    def run(self, run_id: str) -> RunSpec:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)

    @property
    def datasets(self) -> list[str]:
        return sorted({r.dataset for r in self.runs})


@dataclass
class Profile:
    name: str
    output_root: str
    tables_dir: str
    figures_dir: str
    logs_dir: str
    path: Path
    data_dir: str | None = None
    gitignore: str | None = None
    device: str | None = None
    jobs: int = 1
    threads_per_job: int | None = None
    data: dict[str, dict] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    backbones: dict[str, dict] = field(default_factory=dict)
    # per recipe (teacher vs student schedules of generated-data profiles), applied after ``backbones``
    recipes: dict[str, dict] = field(default_factory=dict)
    seeds: int = 1                       # seeds per run when ``reproduce --seeds`` is not given

    @property
    def is_demo(self) -> bool:
        return self.name == "demo"


def available(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "file not found", "check the name")
    from harness.config.load import read_yaml_file

    data = read_yaml_file(path)
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a mapping", "see harness/config/experiment.py for the format")
    return data


def _check_keys(where: Any, got: dict, allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise InputError(where, f"unknown key(s) {unknown}", f"valid keys: {', '.join(sorted(allowed))}")


def experiment_path(table: str, directory: Path | None = None) -> Path:
    directory = directory or EXPERIMENT_DIR
    path = Path(table)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = directory / f"{table}.yaml"
    if not path.is_file():
        raise InputError(path, f"no experiment {table!r}", f"choose one of: {', '.join(available(directory))}")
    return path


def load_experiment(table: str | Path, directory: Path | None = None) -> Experiment:
    path = experiment_path(str(table), directory)
    data = _read(path)
    _check_keys(path, data, EXPERIMENT_KEYS)
    kind = data.get("kind", "methods")
    if kind not in KINDS:
        raise InputError(path, f"kind {kind!r} is not one of {list(KINDS)}", "fix 'kind:'")
    default_ds = data.get("dataset", "semantickitti")
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("runs") or []):
        where = f"{path} runs[{i}]"
        if not isinstance(raw, dict):
            raise InputError(where, "a run must be a mapping", "write {id: ..., recipe: ..., name: ...}")
        _check_keys(where, raw, RUN_KEYS)
        for key in ("id", "recipe", "name"):
            if not raw.get(key):
                raise InputError(where, f"missing {key!r}", f"every run needs {key}:")
        if raw["id"] in seen:
            raise InputError(where, f"duplicate run id {raw['id']!r}", "give every run its own id")
        seen.add(raw["id"])
        overrides = raw.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise InputError(where, "overrides must be a mapping of dotted keys", "e.g. overrides: {distill.method: kd}")
        spec = RunSpec(id=str(raw["id"]), recipe=str(raw["recipe"]), name=str(raw["name"]),
                       dataset=str(raw.get("dataset", default_ds)), teacher=raw.get("teacher"),
                       overrides=dict(overrides), ref=raw.get("ref"), label=str(raw.get("label", raw["id"])))
        if spec.group and (not SAFE_NAME.match(spec.group) or spec.group in (".", "..")):
            raise InputError(where, f"run id {spec.id!r}: its group {spec.group!r} names figure files",
                             "use letters, digits, '_', '-', '.' before the '/'")
        if not SAFE_NAME.match(spec.recipe):
            raise InputError(where, f"recipe {spec.recipe!r} is not a plain name", f"choose one of: {', '.join(available(RECIPE_DIR))}")
        if not spec.recipe_path.is_file():
            raise InputError(where, f"recipe {spec.recipe!r} not found",
                             f"choose one of: {', '.join(available(RECIPE_DIR))}")
        runs.append(spec)
    ids = {r.id for r in runs}
    for r in runs:
        if r.teacher is not None and r.teacher not in ids:
            raise InputError(f"{path} run {r.id}", f"teacher {r.teacher!r} is not a run of this experiment",
                             f"use one of: {', '.join(sorted(ids))}")
    table = str(data.get("table", path.stem))
    if not SAFE_NAME.match(table) or table in (".", ".."):
        # the table name becomes file names under results/tables and results/figures
        raise InputError(path, f"table {table!r} is not a plain file name", "use letters, digits, '_', '-', '.' only")
    return Experiment(table=table, title=str(data.get("title", path.stem)), kind=kind,
                      runs=runs, path=path, groups=dict(data.get("groups") or {}), note=str(data.get("note", "")),
                      highlight_classes=tuple(data.get("highlight_classes") or ()),
                      table_notes=[str(n) for n in data.get("table_notes") or []],
                      reference_only={str(k): str(v) for k, v in (data.get("reference_only") or {}).items()})


def load_profile(name: str | Path, directory: Path | None = None) -> Profile:
    directory = directory or PROFILE_DIR
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        raise InputError(path, f"no profile {name!r}", f"choose one of: {', '.join(available(directory))}")
    data = _read(path)
    _check_keys(path, data, PROFILE_KEYS)
    for key in ("profile", "output_root", "tables_dir", "figures_dir", "logs_dir"):
        if not data.get(key):
            raise InputError(path, f"missing {key!r}", f"set {key}:")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(path, f"seeds: {seeds!r} is not a positive whole number", "write e.g. seeds: 3")
    for key in ("backbones", "recipes"):
        block = data.get(key) or {}
        if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
            raise InputError(path, f"{key}: must map names to mappings of dotted overrides",
                             f"write e.g. {key}: {{minkunet: {{optim.lr: 0.002}}}}")
    unknown = sorted(r for r in (data.get("recipes") or {}) if not (RECIPE_DIR / f"{r}.yaml").is_file())
    if unknown:
        raise InputError(path, f"recipes: unknown recipe(s) {unknown}", f"choose from: {', '.join(available(RECIPE_DIR))}")
    return Profile(name=str(data["profile"]), output_root=str(data["output_root"]), tables_dir=str(data["tables_dir"]),
                   figures_dir=str(data["figures_dir"]), logs_dir=str(data["logs_dir"]), path=path,
                   data_dir=data.get("data_dir"), gitignore=data.get("gitignore"), device=data.get("device"),
                   jobs=int(data.get("jobs") or 1), threads_per_job=data.get("threads_per_job"),
                   data=dict(data.get("data") or {}), overrides=dict(data.get("overrides") or {}),
                   backbones=dict(data.get("backbones") or {}), recipes=dict(data.get("recipes") or {}), seeds=seeds)


def override_args(mapping: dict[str, Any]) -> list[str]:
    """``{"train.epochs": 2, "distill.coefficients": {...}}`` -> ``["train.epochs=2", 'distill.coefficients={...}']``.

    Values are written as JSON (a subset of YAML), which :func:`harness.config.load.load_config` parses back
    exactly; strings stay bare when YAML reads them back unchanged (paths), else they are JSON-quoted
    (``"-"``, ``"null"``, ``"0.5"`` as text).
    """
    out = []
    for key, value in mapping.items():
        if isinstance(value, str):
            try:
                same = yaml.safe_load(value) == value
            except yaml.YAMLError:
                same = False
            text = value if same else json.dumps(value)
        else:
            text = json.dumps(value)
        out.append(f"{key}={text}")
    return out
