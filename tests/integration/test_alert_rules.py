"""The alert rules and every dashboard query through Prometheus's own parser and rule
engine (`promtool`): the rules load, their unit tests fire and stay quiet as written, and
a broken rule or a weakened threshold is caught."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deepyard.telemetry import assets

PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMTOOL is None,
        reason="promtool not found: `apt-get install prometheus` (Debian) or put it on PATH",
    ),
]


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def copy_rules(tmp_path: Path) -> tuple[Path, Path]:
    rules = Path(shutil.copy(assets.rules_path(), tmp_path))
    tests = Path(shutil.copy(assets.rules_test_path(), tmp_path))
    return rules, tests


def test_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", assets.rules_path())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_alerts_fire_and_stay_quiet_as_the_rule_tests_say() -> None:
    done = promtool("test", "rules", assets.rules_test_path().name, cwd=assets.rules_path().parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_rule_fails_promtool_check(tmp_path: Path) -> None:
    rules, _ = copy_rules(tmp_path)
    good = "sum by (job, run) (increase(deepyard_job_restarts_total[1h])) >= 3"
    text = rules.read_text()
    assert good in text
    rules.write_text(text.replace(good, good.replace("[1h]))", "[1h])")))  # one ")" short
    done = promtool("check", "rules", rules)
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


def test_a_weakened_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    rules, tests = copy_rules(tmp_path)
    text = rules.read_text()
    assert "[1h])) >= 3" in text
    rules.write_text(text.replace("[1h])) >= 3", "[1h])) >= 4"))
    suite = yaml.safe_load(tests.read_text())  # only the restart tests, to keep this fast
    suite["tests"] = [t for t in suite["tests"] if t["name"] == "repeated restarts"]
    tests.write_text(yaml.safe_dump(suite))
    done = promtool("test", "rules", tests.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "DeepyardRepeatedRestarts" in done.stdout + done.stderr


def check_as_recording_rules(expressions: list[assets.Expression], path: Path) -> str:
    """Put each query in a recording rule so promtool parses it; return promtool's complaints
    with the dashboard panel each bad query came from."""
    rules = [
        {"record": f"deepyard_dashboard_query:{i}", "expr": assets.to_promql(e.expr)}
        for i, e in enumerate(expressions)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = promtool("check", "rules", path)
    if done.returncode == 0:
        return ""
    where = "\n".join(f"query:{i} = {e.origin}" for i, e in enumerate(expressions))
    return f"{done.stdout}{done.stderr}\n{where}"


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    expressions = [
        found
        for name, path in assets.dashboard_paths().items()
        for found in assets.dashboard_expressions(assets.load_dashboard(path), name)
    ]
    assert len(expressions) > 50
    problems = check_as_recording_rules(expressions, tmp_path / "dashboards.rules.yaml")
    assert not problems, problems


def test_a_dashboard_query_with_a_syntax_error_is_caught(tmp_path: Path) -> None:
    broken = assets.Expression(
        "panel 1", 'sum by (run (rate(deepyard_train_samples_total{job="$job"}[5m]))'
    )
    problems = check_as_recording_rules([broken], tmp_path / "broken.rules.yaml")
    assert "parse error" in problems and "query:0 = panel 1" in problems
