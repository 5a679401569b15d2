"""The shipped Grafana dashboards and alert rules: valid Grafana 11 JSON with working
variables, and PromQL that names only series the metric catalogue defines."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepyard.telemetry import assets
from deepyard.telemetry.catalog import CATALOGUE, series_names

SCHEMA = Path(
    os.environ.get(
        "DEEPYARD_GRAFANA_SCHEMA",
        assets.REPO_ROOT.parent / "shared/schemas/grafana/dashboard.v11.6.jsonschema.json",
    )
)
DASHBOARDS = {name: assets.load_dashboard(path) for name, path in assets.dashboard_paths().items()}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RANK_GAUGES = {m.name for m in CATALOGUE if m.kind == "gauge" and "attempt" in m.labels}
CURRENT_ATTEMPT = 'and on (job, run, attempt) count_values by (job, run) ("attempt", '


def panels(name: str) -> list[dict[str, Any]]:
    return list(assets.iter_panels(DASHBOARDS[name]))


def test_the_three_dashboards_and_the_rules_ship() -> None:
    assert set(DASHBOARDS) == {"training", "fleet", "sweep"}
    assert assets.rules_path().is_file() and assets.rules_test_path().is_file()


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_validates_against_the_grafana_11_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"Grafana dashboard schema not found at {SCHEMA}; set DEEPYARD_GRAFANA_SCHEMA")
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(DASHBOARDS[name])]
    assert not errors, "\n".join(errors[:20])


def test_every_expression_names_only_catalogue_series() -> None:
    known = series_names()
    expressions = assets.all_expressions()
    assert len(expressions) > 50
    problems = []
    for found in expressions:
        names = assets.metric_names(found.expr)
        others = assets.metric_names(found.expr, prefix="") - names
        if not names or names - known or others:
            problems.append(f"{found.origin}: unknown {sorted(names - known)}, other {others}")
    assert not problems, "\n".join(problems)


def test_rank_level_gauges_show_the_current_attempt_only() -> None:
    # After a restart the previous attempt's gauges keep their last loss, step or
    # throughput; averaging them in would show a wrong curve.
    checked = 0
    for found in assets.all_expressions():
        if assets.metric_names(found.expr) & RANK_GAUGES:
            checked += 1
            assert CURRENT_ATTEMPT in found.expr, found.origin
    assert checked > 10


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_has_datasource_job_and_run_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for label in ("job", "run"):
        variable = variables[label]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["query"].startswith("label_values(") and variable["query"].endswith(
            f", {label})"
        )
        assert assets.metric_names(variable["query"]) <= series_names()
    assert "$job" in variables["run"]["query"]  # runs of the chosen job only


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_filters_by_the_job_and_run_variables(name: str) -> None:
    for found in assets.dashboard_expressions(DASHBOARDS[name], name):
        assert '"$job"' in found.expr and '"$run"' in found.expr, found.origin


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_titles_datasources_and_unique_ids(name: str) -> None:
    ids = [panel["id"] for panel in panels(name)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"
    for panel in panels(name):
        assert panel.get("title"), f"{name} panel {panel['id']} has no title"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{name} panel {panel['id']} is wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{name} panel {panel['title']!r} has no description"
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"], panel["title"]


def test_panels_nested_in_collapsed_rows_are_found() -> None:
    rows = [p for p in DASHBOARDS["training"]["panels"] if p["type"] == "row" and p["collapsed"]]
    nested = [panel for row in rows for panel in row["panels"]]
    assert nested
    origins = {e.origin for e in assets.dashboard_expressions(DASHBOARDS["training"], "training")}
    assert any(f"panel {nested[0]['id']} " in origin for origin in origins)


def test_training_dashboard_covers_the_brief() -> None:
    exprs = " ".join(e.expr for e in assets.dashboard_expressions(DASHBOARDS["training"]))
    for needle in (
        "histogram_quantile(0.99, sum by (run, le) (rate(deepyard_train_step_duration_seconds",
        "rate(deepyard_data_wait_seconds_total",
        "deepyard_train_throughput_tokens_per_second",
        "deepyard_train_model_flops_utilization_ratio",
        "deepyard_checkpoint_blocked_duration_seconds_sum",
        "time() - max by (run) (deepyard_checkpoint_last_success_timestamp_seconds",
        "deepyard_job_steps_redone_total",
        "quantile by (run) (0.5, histogram_quantile(0.5, sum by (run, rank, le)",
        "avg by (run, name) (deepyard_train_step_metric",  # a GAN's loss_d, loss_g, ...
    ):
        assert needle in exprs, needle


def test_every_alert_rule_has_for_severity_and_what_to_check() -> None:
    rules = yaml.safe_load(assets.rules_path().read_text())["groups"]
    assert len(rules) == 1
    alerts = {rule["alert"]: rule for rule in rules[0]["rules"]}
    assert {
        "DeepyardTrainingStalled",
        "DeepyardThroughputDropped",
        "DeepyardRepeatedRestarts",
        "DeepyardCheckpointOverdue",
        "DeepyardCheckpointSaveFailing",
        "DeepyardRankStraggler",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["for"], name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert "{{ $labels.job }}" in rule["annotations"]["summary"], name
        assert re.search(r"\b(check|see)\b", rule["annotations"]["description"], re.I), name


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'rate(deepyard_train_steps_total{job="$job", rank="0"}[$__rate_interval])',
            {"deepyard_train_steps_total"},
        ),
        (
            "sum by (job, run) (a_total) / on (job) group_left (model) deepyard_job_info",
            {"deepyard_job_info"},
        ),
        ('{__name__="deepyard_train_loss", job="deepyard_not_a_metric"}', {"deepyard_train_loss"}),
        (
            "min_over_time((avg by (run) (deepyard_train_loss))[1h:1m] offset 10m) > 1e-3",
            {"deepyard_train_loss"},
        ),
        (
            "histogram_quantile(0.5, sum by (le) (rate(deepyard_x_bucket[5m])))",
            {"deepyard_x_bucket"},
        ),
        ("deepyard_count_values(deepyard_y)", {"deepyard_y"}),  # followed by "(": a function
        ("time() - deepyard_a and on (deepyard_label) deepyard_b", {"deepyard_a", "deepyard_b"}),
    ],
)
def test_metric_names_ignores_labels_functions_and_strings(expr: str, expected: set[str]) -> None:
    assert assets.metric_names(expr) == expected


def test_metric_names_without_prefix_finds_every_series() -> None:
    assert assets.metric_names("sum without (rank) (up) + on () bool foo", prefix="") == {
        "up",
        "foo",
    }


def test_to_promql_replaces_grafana_variables() -> None:
    expr = 'rate(x{job="$job", run=~"${run}"}[$__rate_interval]) [$__range:] $__interval'
    assert assets.to_promql(expr) == 'rate(x{job="job", run=~"run"}[5m]) [1h:] 1m'


def test_chart_dir_can_be_overridden_and_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(assets.CHART_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=assets.CHART_ENV):
        assets.chart_dir()
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "x.json").write_text("{}")
    monkeypatch.setenv(assets.CHART_ENV, str(tmp_path))
    assert list(assets.dashboard_paths()) == ["x"]
