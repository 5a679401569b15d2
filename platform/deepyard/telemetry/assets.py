"""The Grafana dashboards and Prometheus alert rules deepyard ships, and the PromQL in them.

Data flow: the exporter serves the series of `telemetry.catalog` → Prometheus scrapes
them → the dashboards and rules under `charts/deepyard/` (found here) query them. Tests
use this module to check every expression against the catalogue and a real PromQL
parser; the Helm chart packages the same files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# charts/ lives at the repository root, next to platform/ (platform/deepyard/telemetry/).
REPO_ROOT = Path(__file__).resolve().parents[3]
CHART_ENV = "DEEPYARD_CHART_DIR"
RULES_NAME = "deepyard-rules.yaml"
RULES_TEST_NAME = "deepyard-rules.test.yaml"

# Values for Grafana's built-in variables that make a dashboard query plain PromQL.
GRAFANA_DEFAULTS: Mapping[str, str] = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*["\'`]([a-zA-Z_:][\w:]*)["\'`]')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[a-zA-Z_:][\w:]*")
_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "atan2",
        "inf",
        "nan",
    ]
)


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (for messages)."""

    origin: str
    expr: str


def chart_dir() -> Path:
    """The Helm chart directory: $DEEPYARD_CHART_DIR, else charts/deepyard in the repo."""
    override = os.environ.get(CHART_ENV)
    path = Path(override) if override else REPO_ROOT / "charts" / "deepyard"
    if not path.is_dir():
        raise FileNotFoundError(
            f"deepyard chart directory {path} not found; run from a source checkout "
            f"or set {CHART_ENV} to the chart's path"
        )
    return path


def dashboard_paths() -> dict[str, Path]:
    """Every shipped dashboard by name (the file stem: training, fleet, sweep)."""
    return {p.stem: p for p in sorted((chart_dir() / "dashboards").glob("*.json"))}


def rules_path() -> Path:
    return chart_dir() / "alerts" / RULES_NAME


def rules_test_path() -> Path:
    return chart_dir() / "alerts" / RULES_TEST_NAME


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard = json.loads(path.read_text())
    if not isinstance(dashboard, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object, not {type(dashboard).__name__}")
    return dashboard


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


def dashboard_expressions(dashboard: Mapping[str, Any], name: str = "") -> list[Expression]:
    """Every PromQL expression of a dashboard: panel targets and annotation queries."""
    found = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"{name} panel {panel.get('id')} {panel.get('title', '')!r}"
                found.append(Expression(f"{where} target {target.get('refId')}", target["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            found.append(
                Expression(f"{name} annotation {annotation['name']!r}", annotation["expr"])
            )
    return found


def rule_expressions(path: Path | None = None) -> list[Expression]:
    """Every alerting and recording rule's expression in a Prometheus rule file."""
    path = path or rules_path()
    document = yaml.safe_load(path.read_text())
    return [
        Expression(f"{path.name} {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
    ]


def all_expressions() -> list[Expression]:
    """The PromQL of every shipped dashboard and of the alert rules."""
    found = []
    for name, path in dashboard_paths().items():
        found.extend(dashboard_expressions(load_dashboard(path), name))
    return found + rule_expressions()


def to_promql(expr: str, values: Mapping[str, str] = GRAFANA_DEFAULTS) -> str:
    """Replace Grafana variables ($job, ${run}, $__rate_interval) so a PromQL parser reads
    the query: built-ins get a duration, any other variable its own name (they sit inside
    label-matcher strings)."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values.get(name, name)

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str, prefix: str = "deepyard_") -> set[str]:
    """The series names an expression selects that start with `prefix` ("" for all).

    Strings, label matchers, range/subquery brackets and label lists (`by (...)`,
    `on (...)`) are removed first; a name followed by `(` is a function or aggregation.
    """
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = _BRACKETS.sub(" ", _BRACES.sub(" ", text))
    text = _LABEL_LIST.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return {name for name in names if name.startswith(prefix)}
