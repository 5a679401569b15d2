"""job.yaml (+ `--set a.b=v` overrides) → a validated JobSpec, or one SpecError.

Every problem is reported as `FILE:LINE: field.path = value: what is wrong; the fix`,
all problems at once, so a user fixes a spec in one pass.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from deepyard.errors import SpecError
from deepyard.spec.job import JobSpec

Loc = tuple[str | int, ...]


def load(path: str | Path, overrides: Sequence[str] = (), *, check_paths: bool = True) -> JobSpec:
    """Read, override and validate a job spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file; pass the path of a job spec YAML file")
    text = path.read_text()
    return load_text(text, str(path), overrides, check_paths=check_paths)


def load_text(
    text: str, source: str, overrides: Sequence[str] = (), *, check_paths: bool = True
) -> JobSpec:
    raw, root = _parse_yaml(text, source)
    set_paths = apply_overrides(raw, overrides, source)
    spec = validate(raw, source, root, set_paths)
    if check_paths:
        from deepyard.spec.checks import check_data_paths

        check_data_paths(spec, source, lambda loc: _where(loc, source, root, set(set_paths)))
    return spec


def validate(
    raw: dict[str, Any],
    source: str = "<spec>",
    root: yaml.Node | None = None,
    set_paths: Iterable[Loc] = (),
) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(err, source, root, set(set_paths)) for err in exc.errors()]
        raise SpecError(problems, source) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2), as users expect in the
    free-form `deepspeed:` and `model.args` blocks that no schema converts."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def read_yaml(
    text: str, source: str, error: type[SpecError] = SpecError
) -> tuple[Any, yaml.Node | None]:
    """The parsed document and its node tree (for line numbers); a syntax error is `error`
    naming the line and column."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        raw = _yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise error(
            f"{where}: YAML syntax error: {exc.problem or exc}; check indentation and quoting"
        ) from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: YAML syntax error: {exc}") from None
    return raw, root


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], yaml.Node | None]:
    raw, root = read_yaml(text, source)
    if raw is None:
        raise SpecError(
            f"{source}: the file is empty; a job spec needs at least name, model, data and "
            "training (copy jobs/examples/digits_cnn.yaml to start)"
        )
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: a job spec is a mapping of keys (name, model, data, ...), "
            f"not a {type(raw).__name__}"
        )
    return raw, root


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str) -> list[Loc]:
    """Apply `--set a.b.c=value` in order; values are parsed as YAML (numbers, lists...)."""
    set_paths: list[Loc] = []
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write it as FIELD.PATH=VALUE, e.g. optimizer.lr=3e-4")
        parts = key.strip().split(".")
        try:
            value = _yaml(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        node: Any = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                here = ".".join(parts[: depth + 1])
                raise SpecError(
                    f"--set {item}: {here} is a value ({child!r}), not a section; "
                    f"set {here} itself instead"
                )
            node = child
        node[parts[-1]] = value
        set_paths.append(tuple(parts))
    return set_paths


def _describe(err: Any, source: str, root: yaml.Node | None, set_paths: set[Loc]) -> str:
    loc: Loc = tuple(err["loc"])
    field = ".".join(str(p) for p in loc) or "(top level)"
    where = _where(loc, source, root, set_paths)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{where}{field}: unknown key; {_suggest(loc)}"
    if kind == "missing":
        return f"{where}{field}: required but missing; add it ({_field_help(loc)})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return f"{where}{msg}" if not loc or msg.startswith(field) else f"{where}{field}: {msg}"
    shown = _short(err.get("input"))
    return f"{where}{field} = {shown}: {msg}{_fix_for(kind, err.get('ctx') or {})}"


def _where(loc: Loc, source: str, root: yaml.Node | None, set_paths: set[Loc]) -> str:
    if any(loc[: len(p)] == p for p in set_paths):
        return "--set: "
    line = _line_of(root, loc)
    return f"{source}:{line}: " if line else f"{source}: "


def _line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the deepest YAML node along `loc` that exists in the file."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _model_at(loc: Loc) -> type[BaseModel] | None:
    model: type[BaseModel] = JobSpec
    for part in loc:
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        sub = _model_class(info.annotation)
        if sub is None:
            return None
        model = sub
    return model


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _suggest(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "remove it"
    valid = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}valid keys here: {', '.join(valid)}"


def _field_help(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    info = model.model_fields.get(str(loc[-1])) if model else None
    return info.description if info and info.description else "see `deepyard spec schema`"


def _fix_for(kind: str, ctx: dict[str, Any]) -> str:
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return "; change it to a value in range"
    if kind == "literal_error":
        return f"; use one of {ctx.get('expected', 'the listed values')}"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        return "; fix the value's type"
    if kind == "string_pattern_mismatch":
        return "; use lower-case letters, digits, '.', '_' or '-' (at most 63)"
    return ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
