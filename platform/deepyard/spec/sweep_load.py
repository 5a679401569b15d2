"""sweep.yaml (+ `--set` overrides) → a validated SweepSpec, or one SpecError.

Same format as job specs (load.py): every problem is `FILE:LINE: field = value: what is
wrong; the fix`, all at once. A job given by path is loaded here, relative to the sweep
file, with `job_overrides` and `--set job.…` applied; its problems point into the job
file (or at the override that caused them).

`--set` reaches the space by its dotted keys: `--set space.optimizer.lr.low=1e-5` sets
`low` of parameter `optimizer.lr`; `--set 'space.data.batch_size={type: grid, values:
[16, 32]}'` adds or replaces a parameter.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from deepyard.errors import SpecError
from deepyard.spec.job import JobSpec
from deepyard.spec.load import (
    _fix_for,
    _line_of,
    _parse_yaml,
    _short,
    _where,
    apply_overrides,
    read_yaml,
)
from deepyard.spec.sweep import (
    PARAM_TYPES,
    SCHEDULERS,
    Loc,
    Problems,
    SweepSpec,
    dotted,
    set_path,
)

Where = Callable[[Loc], str]


class SweepSpecError(SpecError):
    """A sweep spec (or an override of it) is wrong; exit code 2 like every SpecError."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        super().__init__(problems, source)
        head = f"invalid sweep spec {source}" if source else "invalid sweep spec"
        self.args = (f"{head}:\n" + "\n".join(f"  - {p}" for p in self.problems),)


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read, override and validate a sweep spec file."""
    path = Path(path)
    if not path.is_file():
        raise SweepSpecError(f"{path}: no such file; pass the path of a sweep spec YAML file")
    return load_sweep_text(path.read_text(), str(path), overrides, base_dir=path.parent)


def load_sweep_text(
    text: str, source: str, overrides: Sequence[str] = (), *, base_dir: Path = Path(".")
) -> SweepSpec:
    raw, root = _parse(text, source)
    job_sets = [item for item in overrides if item.strip().startswith("job.")]
    set_paths = _apply_overrides(raw, [o for o in overrides if o not in job_sets], source)
    if isinstance(raw.get("job"), str):
        where = _where_in(source, root, set_paths)
        job_overrides = raw.get("job_overrides")
        raw["job"] = resolve_job_file(
            raw["job"],
            job_overrides if isinstance(job_overrides, Mapping) else {},
            base_dir,
            [item.strip().removeprefix("job.") for item in job_sets],
            where,
            source,
        )
    else:
        set_paths += apply_overrides(raw, job_sets, source)
    where = _where_in(source, root, set_paths)
    try:
        return SweepSpec.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        found = [pair for err in exc.errors() for pair in located(err, SweepSpec, where)]
        found.sort(key=lambda pair: _line_of(root, pair[0]) or 0)  # in file order
        raise SweepSpecError([line for _, line in found], source) from None


def resolve_job_file(
    job: str,
    job_overrides: Mapping[str, Any],
    base_dir: Path,
    cli_sets: Sequence[str] = (),
    where: Where = lambda loc: "",
    source: str = "<sweep>",
) -> JobSpec:
    """The base job at path `job` (relative to `base_dir`), with `job_overrides` (dotted
    path → value) and then `cli_sets` (`a.b=v` strings) applied, validated."""
    path = Path(job).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise SweepSpecError(
            f"{where(('job',))}job = {job!r}: no such file (looked for {path}); give the job "
            "spec's path relative to the sweep file",
            source,
        )
    job_source = str(path)
    raw, root = _parse_yaml(path.read_text(), job_source)
    for key, value in job_overrides.items():
        try:
            set_path(raw, str(key).split("."), value)
        except ValueError as exc:
            raise SweepSpecError(
                f"{where(('job_overrides', key))}job_overrides.{key}: {exc}", source
            ) from None
    cli_paths = set(apply_overrides(raw, cli_sets, source))
    override_paths = {tuple(str(key).split(".")): key for key in job_overrides}

    def job_where(loc: Loc) -> str:
        for parts, key in override_paths.items():
            if loc[: len(parts)] == parts:
                return where(("job_overrides", key)) + "job_overrides: "
        return _where(loc, job_source, root, cli_paths)

    owner = f"{job_source} (the job of {source})"
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(
            [line for err in exc.errors() for line in describe(err, JobSpec, job_where)], owner
        ) from None
    from deepyard.spec.checks import check_data_paths

    check_data_paths(spec, owner, job_where)
    return spec


def describe(err: Any, model: type[BaseModel], where: Where) -> list[str]:
    """One pydantic error as lines of `WHERE field = value: problem; fix`."""
    return [line for _, line in located(err, model, where)]


def located(err: Any, model: type[BaseModel], where: Where) -> list[tuple[Loc, str]]:
    """`describe`, each line with the field it is about."""
    tagged: Loc = tuple(err["loc"])
    loc = _untagged(tagged)
    found = (err.get("ctx") or {}).get("error")
    if isinstance(found, Problems):
        return [((*loc, *p.loc), p.render(where, loc)) for p in found.problems]
    return [(loc, _line(err, model, where, tagged, loc))]


def _line(err: Any, model: type[BaseModel], where: Where, tagged: Loc, loc: Loc) -> str:
    field, kind = dotted(loc) or "(top level)", err["type"]
    here = where(loc)
    if kind == "extra_forbidden":
        return f"{here}{field}: unknown key; {_suggest(model, tagged)}"
    if kind == "missing":
        return f"{here}{field}: required but missing; add it ({_field_help(model, tagged)})"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _bad_tag(err, loc, here)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{here}{msg}" if not loc or msg.startswith(field) else f"{here}{field}: {msg}"
    shown = _short(err.get("input"))
    return f"{here}{field} = {shown}: {msg}{_fix_for(kind, err.get('ctx') or {})}"


def _bad_tag(err: Any, loc: Loc, here: str) -> str:
    key, names = ("type", PARAM_TYPES) if loc[:1] == ("space",) else ("name", SCHEDULERS)
    field = dotted((*loc, key))
    tag = (err.get("ctx") or {}).get("tag")
    if tag is None:
        return f"{here}{field}: required but missing; add {key}: one of {', '.join(names)}"
    close = difflib.get_close_matches(str(tag), names, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{here}{field} = {tag!r}: unknown {key}; {hint}use one of: {', '.join(names)}"


def _untagged(loc: Loc) -> Loc:
    """Drop the tag pydantic adds after a discriminated union (`space.x.uniform.low`)."""
    if loc[:1] == ("space",) and len(loc) > 2 and loc[2] in PARAM_TYPES:
        return (*loc[:2], *loc[3:])
    if loc[:1] == ("scheduler",) and len(loc) > 1 and loc[1] in SCHEDULERS:
        return (*loc[:1], *loc[2:])
    return loc


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that holds the field at `loc` (following dict keys and union tags)."""
    parts = list(loc)
    current: type[BaseModel] | None = model
    while parts and current is not None:
        info = current.model_fields.get(str(parts.pop(0)))
        if info is None:
            return None
        annotation = info.annotation
        if typing.get_origin(annotation) is dict and parts:
            parts.pop(0)
            annotation = typing.get_args(annotation)[1]
        members = _models_in(annotation)
        tagged = [m for m in members if parts and _tag(m) == parts[0]]
        if tagged:
            parts.pop(0)
        current = (tagged or members)[0] if tagged or members else None
    return current


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _tag(model: type[BaseModel]) -> str | None:
    for key in ("type", "name"):
        info = model.model_fields.get(key)
        if info is not None and typing.get_origin(info.annotation) is typing.Literal:
            return str(typing.get_args(info.annotation)[0])
    return None


def _suggest(model: type[BaseModel], loc: Loc) -> str:
    holder = _model_at(model, loc[:-1])
    if holder is None:
        return "remove it"
    valid = list(holder.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}valid keys here: {', '.join(valid)}"


def _field_help(model: type[BaseModel], loc: Loc) -> str:
    holder = _model_at(model, loc[:-1])
    info = holder.model_fields.get(str(loc[-1])) if holder else None
    return info.description if info and info.description else "see the sweep spec docs"


def _parse(text: str, source: str) -> tuple[dict[str, Any], yaml.Node | None]:
    raw, root = read_yaml(text, source, SweepSpecError)
    if not isinstance(raw, dict):
        raise SweepSpecError(
            f"{source}: a sweep spec is a mapping of keys (name, job, space, metric, ...), "
            f"not {'an empty file' if raw is None else 'a ' + type(raw).__name__}; copy "
            "jobs/sweeps/digits_sweep.yaml to start"
        )
    return raw, root


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str) -> list[Loc]:
    """apply_overrides, except that `space.` keys are matched against the dotted
    parameter names: the longest existing name wins, else the rest names a new one."""
    paths: list[Loc] = []
    for item in overrides:
        key, sep, value_text = item.partition("=")
        rest = key.strip().removeprefix("space.")
        space = raw.get("space")
        if not sep or rest == key.strip() or not isinstance(space, dict):
            paths += apply_overrides(raw, [item], source)
            continue
        name = max(
            (n for n in space if rest == n or rest.startswith(n + ".")), key=len, default=rest
        )
        if name not in space and rest.rpartition(".")[2] in ("type", "low", "high", "values"):
            raise SweepSpecError(
                f"--set {item}: the space has no parameter {rest.rpartition('.')[0]} (it has "
                f"{', '.join(space) or 'none'}); add one whole: --set "
                f"'space.{rest.rpartition('.')[0]}={{type: choice, values: [...]}}'"
            )
        field = rest.removeprefix(name).removeprefix(".")
        holder: dict[str, Any] = {"value": space.get(name)} if field else {}
        apply_overrides(holder, [f"{'value.' + field if field else 'value'}={value_text}"], source)
        space[name] = holder["value"]
        paths.append(("space", name, *field.split(".")) if field else ("space", name))
    return paths


def _where_in(source: str, root: yaml.Node | None, set_paths: list[Loc]) -> Where:
    return lambda loc: _where(_untagged(loc), source, root, set(set_paths))
