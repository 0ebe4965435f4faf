"""Build a :class:`RunConfig` from defaults + YAML differences + dotted overrides, and validate it.

* YAML files hold only differences; ``base: other.yaml`` (relative to the file) chains them.
* Overrides: ``section.key=value`` with the value parsed as YAML (``train.epochs=2``,
  ``data.train_sequences=[0,1]``, ``distill.coefficients.out_point=0.2``).
* Unknown keys and unknown registry names fail at build time with "did you mean" suggestions.
* :func:`config_hash` is the SHA-256 of the canonical resolved config (minus where outputs go); it is
  part of each run's identity.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from harness.config.schema import RunConfig
from harness.errors import InputError

CHOICES = {
    ("optim", "name"): ("adam", "sgd"),
    ("optim", "scheduler"): ("constant", "cosine_warmup"),
    ("model", "sparse_backend"): ("auto", "torchref", "spconv", "minkowski"),
    ("model", "width"): (1.0, 0.5),
    ("eval", "distance_bins"): ("harness", "official"),
    ("profile",): ("paper", "demo"),
    ("data", "dataset"): ("semantickitti", "nuscenes"),
    ("data", "fusion_align"): ("pose", "centroid"),
    ("data", "fusion_target"): ("model", "teacher"),
    ("data", "label_map"): ("official", "spvnas"),
    ("train", "lr_scaling"): ("linear", "sqrt", "none"),
    ("eval", "checkpoint"): ("best", "last"),
}
HASH_EXCLUDE = ("output_root",)
# a number as people write it: 1e-3, -2, .5, 3., 1_000.0 (YAML 1.1 reads the exponent forms without a dot as text)
FLOAT_TEXT = re.compile(r"^[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?$")


def _suggest(name: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise InputError(path, "config 'base:' chain is circular", "remove the cycle")
    if not path.is_file():
        raise InputError(path, "config file not found", "check the path")
    data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise InputError(path, "top level must be a mapping", "write 'section: {key: value}' entries")
    base = data.pop("base", None)
    if base is None:
        return data
    return _deep_merge(_read_yaml_chain(path.parent / base, seen + (path,)), data)


def read_yaml_file(path: str | Path) -> Any:
    """``yaml.safe_load`` of a UTF-8 file; unreadable bytes or bad syntax are one error naming the file."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 text (byte {err.start}: {err.reason})",
                         "save the file as UTF-8") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a YAML file", "point at the .yaml file") from None
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML ({err.__class__.__name__})", "fix the YAML syntax") from None


def _deep_merge(base: dict, diff: dict) -> dict:
    out = dict(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise InputError(text, "override must look like section.key=value", "e.g. train.epochs=2")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(".".join(path), f"{part!r} is not a section", "override a leaf key")
    node[path[-1]] = value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and FLOAT_TEXT.match(value.strip()):
        # YAML 1.1 (PyYAML) reads 1e-3 as a string (it wants 1.0e-3); users write 1e-3
        return float(value.strip())
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    if origin is list and isinstance(value, list):
        return [_coerce(v, args[0], where) for v in value] if args else value
    if origin is dict and isinstance(value, dict):
        if len(args) == 2:
            return {_coerce(k, args[0], f"{where}.{k}"): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if annotation is Any:
        return value
    raise InputError(where, f"expected {getattr(annotation, '__name__', annotation)}, got {value!r}", "fix the value's type")


def _build(cls: type, values: dict, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise InputError(where, f"unknown config key in section '{prefix.rstrip('.') or 'top level'}'.{_suggest(key, list(fields))}",
                             f"valid keys: {', '.join(fields)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise InputError(where, "expected a section (mapping)", f"write '{key}: {{...}}'")
            kwargs[key] = _build(hints[key], value, f"{where}.")
        else:
            kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def validate(cfg: RunConfig) -> RunConfig:
    """Check names against the registries and the fixed choices."""
    for path, options in CHOICES.items():
        node: Any = cfg
        for part in path:
            node = getattr(node, part)
        if node not in options:
            name = ".".join(path)
            raise InputError(name, f"{node!r} is not one of {list(options)}.{_suggest(str(node), [str(o) for o in options])}",
                             f"set {name} to one of the listed values")
    from harness.backbones.base import BACKBONES

    if cfg.model.backbone not in BACKBONES:
        raise InputError("model.backbone", BACKBONES.unknown_message(cfg.model.backbone), "pick a registered backbone")
    if cfg.distill.method is not None:
        from harness.distill.base import DISTILLERS

        if cfg.distill.method not in DISTILLERS:
            raise InputError("distill.method", DISTILLERS.unknown_message(cfg.distill.method), "pick a registered method")
        if not (cfg.distill.teacher_run or cfg.distill.teacher_checkpoint):
            raise InputError("distill.teacher_run", "a distilled run needs a teacher", "set distill.teacher_run to the teacher's run directory")
    if cfg.data.label_map != "official" and cfg.data.dataset != "semantickitti":
        raise InputError("data.label_map", f"{cfg.data.label_map!r} is a SemanticKITTI label mapping, the dataset is "
                         f"{cfg.data.dataset}", "set data.label_map=official")
    if cfg.model.backbone != "cylinder3d":
        for key, value, default in (("num_input_features", cfg.model.num_input_features, None),
                                    ("point_refinement", cfg.model.point_refinement, True)):
            if value != default:
                raise InputError(f"model.{key}", f"is a Cylinder3D setting; {cfg.model.backbone} has no such part",
                                 f"remove model.{key}")
    validate_distill(cfg.distill.method, cfg.distill.coefficients, cfg.distill.options)
    _check_ranges(cfg)
    _check_name(cfg.name)
    _check_store(cfg)
    return cfg


PAPER_STORE = "results/runs"  # the paper profile's run store (harness/configs/profiles/paper.yaml: output_root)


def _check_store(cfg: RunConfig) -> None:
    """Only paper-profile runs go into the paper run store: a demo run there would sit next to (and be
    collected like) real results."""
    if cfg.profile == "paper":
        return
    if Path(cfg.output_root).resolve() == Path(PAPER_STORE).resolve():
        raise InputError("output_root", f"a {cfg.profile}-profile run would be written into the paper run store "
                         f"{PAPER_STORE}", f"set output_root=results/{cfg.profile}/runs (or profile=paper)")


# (dotted key, lowest allowed value, whether the bound itself is allowed); None values (optional keys) are skipped
RANGES = (
    ("train.epochs", 1, True), ("train.batch_size", 1, True), ("train.global_batch_size", 1, True),
    ("train.log_every", 1, True), ("model.num_input_features", 1, True),
    ("train.eval_every", 1, True), ("train.checkpoint_steps", 1, True), ("train.max_steps_per_epoch", 1, True),
    ("data.num_workers", 0, True), ("data.max_points", 1, True), ("data.max_scans", 1, True),
    ("data.fusion_frames", 0, True),
    ("optim.lr", 0.0, False), ("optim.momentum", 0.0, True), ("optim.weight_decay", 0.0, True),
    ("optim.warmup_iters", 0, True), ("optim.grad_clip", 0.0, False),
    ("loss.cross_entropy", 0.0, True), ("loss.lovasz", 0.0, True),
)


def _check_ranges(cfg: RunConfig) -> None:
    """Reject values no training can use (epochs=0 would 'finish' a run that never trained)."""
    import math

    for key, low, inclusive in RANGES:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if node is None:
            continue
        ok = math.isfinite(node) and (node >= low if inclusive else node > low)
        if not ok:
            bound = f">= {low}" if inclusive else f"> {low}"
            raise InputError(key, f"{node!r} is out of range (must be a finite number {bound})", f"set {key} {bound}")


def _check_name(name: str) -> None:
    """A run name is one folder name: it must not leave ``output_root`` (``..``, ``/``, an absolute path)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("~"):
        raise InputError("name", f"{name!r} is not a plain folder name (runs live in "
                         "<output_root>/<dataset>/<backbone>/<name>/)", "use letters, digits, '_', '-', '.' only")


def validate_distill(method: str | None, coefficients: dict[str, float], options: dict[str, Any]) -> None:
    """``distill.coefficients`` and ``distill.options`` against the method: coefficient names must be its loss
    ``terms``, option names keyword parameters of its constructor, values finite numbers; neither without a method.
    Called when the config is built, so a typo fails before any folder or data is touched."""
    import inspect
    import math

    if method is None:
        for key, given in (("distill.coefficients", coefficients), ("distill.options", options)):
            if given:
                raise InputError(key, f"set ({sorted(given)}) on a run without distill.method: it would be ignored",
                                 "set distill.method, or remove them")
        return
    from harness.distill.base import DISTILLERS

    cls = DISTILLERS.get(method)
    terms = tuple(cls.terms)
    unknown = sorted(set(coefficients) - set(terms))
    if unknown:
        raise InputError("distill.coefficients", f"unknown {method} coefficient(s) {unknown}: not loss terms of {method}"
                         f"{_suggest(unknown[0], terms)}", f"the {method} terms are {list(terms)}")
    for term, value in coefficients.items():
        if not math.isfinite(value) or value < 0:
            raise InputError(f"distill.coefficients.{term}", f"{value!r} must be a finite number >= 0", "fix the value")
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if n not in ("self", "context", "coefficients")
               and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise InputError("distill.options", f"unknown {method} option(s) {bad}{_suggest(bad[0], allowed)}",
                         f"the {method} options are {allowed}")


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults <- YAML chain <- overrides, validated."""
    tree = _read_yaml_chain(Path(path)) if path else {}
    for text in overrides:
        keys, value = _parse_override(text)
        _set_path(tree, keys, value)
    return validate(_build(RunConfig, tree, ""))


def config_to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(tree: dict) -> RunConfig:
    return validate(_build(RunConfig, tree, ""))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def _non_default(tree: dict, default: dict) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict) and dataclass_section(key, default):
            sub = _non_default(value, default[key])
            if sub:
                out[key] = sub
        elif key not in default or default[key] != value:
            out[key] = value
    return out


def dataclass_section(key: str, default: dict) -> bool:
    """Sections are nested dataclasses; free-form dicts (coefficients, options) compare as values."""
    return key in {f.name for f in dataclasses.fields(RunConfig)} and isinstance(default[key], dict)


def config_hash(cfg: RunConfig) -> str:
    """SHA-256 of the values that differ from the schema defaults (minus where outputs go).

    Hashing differences rather than the whole tree keeps finished runs' identities stable when a new
    config field is added with a default value.
    """
    tree = _non_default(config_to_dict(cfg), config_to_dict(RunConfig()))
    for key in HASH_EXCLUDE:
        tree.pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand_env(value: str) -> str:
    """Expand ``${VAR}``; an unset variable is an error naming it."""
    def repl(match: re.Match) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise InputError(f"${{{var}}}", f"environment variable {var} is not set", f"export {var}=/path/to/dataset")
        return os.environ[var]
    return re.sub(r"\$\{(\w+)\}", repl, value)
