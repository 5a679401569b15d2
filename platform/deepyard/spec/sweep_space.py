"""The sweep's search space: one parameter type per distribution, each validated at the
edge, and how a trial's values are applied to the base job (`job_with`). Problems are
located at their own field so the loader can point at the YAML line."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from deepyard.spec.base import SpecModel as _Spec
from deepyard.spec.job import JobSpec

Loc = tuple[str | int, ...]
PARAM_TYPES = ("uniform", "loguniform", "randint", "choice", "grid")
_NO_VALUE: Any = object()


def dotted(loc: Loc) -> str:
    """`("space", "optimizer.lr", "values", 1)` → `space.optimizer.lr.values[1]`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


@dataclass(frozen=True)
class Problem:
    """One mistake at `loc` (relative to the model that found it): what is wrong; the fix."""

    loc: Loc
    text: str
    value: Any = _NO_VALUE

    def render(self, where: Callable[[Loc], str], prefix: Loc = ()) -> str:
        loc = (*prefix, *self.loc)
        shown = "" if self.value is _NO_VALUE else f" = {_short(self.value)}"
        return f"{where(loc)}{dotted(loc)}{shown}: {self.text}"


class Problems(ValueError):
    """Every problem a validator found; pydantic keeps it in the error's ctx, where the
    loader finds each problem's location."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.render(lambda loc: "") for p in problems))


class _Range(_Spec):
    low: float = Field(description="The lower bound (included).")
    high: float = Field(description="The upper bound; above low.")

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.low >= self.high:
            why = "equals" if self.low == self.high else "is above"
            fix = (
                "for one value use type: choice with values: [v]"
                if self.low == self.high
                else "swap low and high"
            )
            raise Problems([Problem(("low",), f"{why} high = {self.high}; {fix}", self.low)])
        return self

    def samples(self) -> list[tuple[Loc, Any, bool]]:
        """(where, value, whether the user wrote it): bounds and a fractional midpoint, so
        a float range on an integer field is caught."""
        middle = (self.low + self.high) / 2
        if middle.is_integer():
            middle = middle + 0.5 if middle + 0.5 < self.high else math.nextafter(middle, self.high)
        return [(("low",), self.low, True), (("high",), self.high, True), ((), middle, False)]


class UniformParam(_Range):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"]


class LogUniformParam(_Range):
    """A float drawn uniformly on a log scale from [low, high]; both bounds > 0."""

    type: Literal["loguniform"]

    @model_validator(mode="before")
    @classmethod
    def _positive(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            bad = [
                Problem(
                    (bound,),
                    "a log scale has no zero or negative values; use a bound > 0 (e.g. "
                    "1.0e-6), or type: uniform",
                    data[bound],
                )
                for bound in ("low", "high")
                if isinstance(data.get(bound), int | float) and data[bound] <= 0
            ]
            if bad:
                raise Problems(bad)
        return data


class RandIntParam(_Spec):
    """An integer drawn uniformly from low, low+1, ..., high-1: high is EXCLUSIVE (as in
    Python's range and ray.tune.randint)."""

    type: Literal["randint"]
    low: int = Field(description="The smallest integer drawn.")
    high: int = Field(description="One above the largest integer drawn (exclusive).")

    @model_validator(mode="after")
    def _not_empty(self) -> RandIntParam:
        if self.high <= self.low:
            raise Problems(
                [
                    Problem(
                        ("high",),
                        f"leaves no value above low = {self.low} (high is exclusive: "
                        f"randint draws low to high-1); use high: {self.low + 1} or more",
                        self.high,
                    )
                ]
            )
        return self

    def samples(self) -> list[tuple[Loc, Any, bool]]:
        return [(("low",), self.low, True), (("high",), self.high - 1, False)]


class _Values(_Spec):
    values: list[Any] = Field(description="The values, e.g. [16, 32, 64].")

    @model_validator(mode="after")
    def _not_empty(self) -> _Values:
        if not self.values:
            raise Problems(
                [Problem(("values",), "is empty; list at least one value, e.g. [16, 32]", [])]
            )
        return self

    def samples(self) -> list[tuple[Loc, Any, bool]]:
        return [(("values", i), value, True) for i, value in enumerate(self.values)]


class ChoiceParam(_Values):
    """One of `values`, drawn uniformly for each trial."""

    type: Literal["choice"]


class GridParam(_Values):
    """Every one of `values`: the search runs each grid point (times each sample)."""

    type: Literal["grid"]

    @model_validator(mode="after")
    def _distinct(self) -> GridParam:
        seen: list[Any] = []
        for index, value in enumerate(self.values):
            if value in seen:
                raise Problems(
                    [
                        Problem(
                            ("values", index),
                            "is listed twice, which runs the same trials twice; remove it",
                            value,
                        )
                    ]
                )
            seen.append(value)
        return self


ParamSpec = Annotated[
    UniformParam | LogUniformParam | RandIntParam | ChoiceParam | GridParam,
    Field(discriminator="type"),
]


def job_with(job: JobSpec, values: Mapping[str, Any]) -> JobSpec:
    """The job with each dotted path set to its value, validated (pydantic's
    ValidationError, or ValueError for a path through a value)."""
    raw = job.model_dump(mode="json", exclude_unset=True, by_alias=True)
    for path, value in values.items():
        set_path(raw, path.split("."), value)
    return JobSpec.model_validate(raw)


def set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """raw[a][b][c] = value for parts [a, b, c], making missing sections; a ValueError
    when a part on the way holds a value."""
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            here = ".".join(parts[: depth + 1])
            raise ValueError(f"{here} is a value ({child!r}), not a section; use {here} itself")
        node = child
    node[parts[-1]] = value


def param_problem(exc: Exception, path: str) -> tuple[str, bool]:
    """Why setting `path` broke the job, in one line with the fix; and whether the path
    itself is wrong (not a job field), whatever the value."""
    from deepyard.spec.load import _fix_for, _suggest

    if not isinstance(exc, ValidationError):
        return str(exc), True  # a path through a value: `optimizer.lr.x`
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{dotted(loc)} is not a job field; {_suggest(loc)}", True
    if loc != tuple(path.split(".")):
        shown = "" if err["type"] == "value_error" else f"{dotted(loc)}: "
        return f"makes the job invalid: {shown}{msg}", False
    if err["type"] == "int_from_float":
        return f"{path} takes integers: {msg}; use type randint or choice", False
    return f"not a valid {path}: {msg}{_fix_for(err['type'], err.get('ctx') or {})}", False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
