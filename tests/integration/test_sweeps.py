"""Sweeps end to end, as a user runs them: `deepyard sweep run` in a subprocess with its own
embedded Ray, real 2-worker DeepSpeed trials on digits, real Ray Tune and Optuna.

- ASHA stops weak trials early; the best spec it writes reproduces its metric under
  `deepyard run`.
- The driver, SIGKILLed mid-sweep, is rerun: finished trials are not rerun, the running
  one resumes from its checkpoint, and the searcher's next suggestion is the one a
  searcher replaying the same history makes.
- A worker-hours budget stops the sweep from starting trials.
- PBT: the weaker trial continues from a copy of the better one's checkpoint, with an
  explored learning rate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs" / "examples"
# This interpreter's deepyard, whether or not its venv is on PATH (CI does not activate it).
DEEPYARD = [sys.executable, "-m", "deepyard.cli.main"]


def write_sweep(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    head = f"""\
        job: {EXAMPLES / "digits_cnn.yaml"}
        output_dir: {tmp_path / "runs"}
        metric: accuracy
    """
    path.write_text(dedent(head) + dedent(body))
    return path


def sweep(*args: str, timeout: int = 500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEEPYARD, "sweep", *args], capture_output=True, text=True, timeout=timeout
    )


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_asha_stops_weak_trials_and_the_best_spec_reproduces(tmp_path: Path) -> None:
    spec = write_sweep(
        tmp_path,
        """\
        name: asha
        job_overrides:
          training.epochs: null
          training.max_steps: 90
          training.eval_every_steps: 15
        space:
          optimizer.lr: {type: loguniform, low: 1.0e-5, high: 3.0e-2}
          model.args.width: {type: choice, values: [8, 16]}
          model.args.dropout: {type: uniform, low: 0.0, high: 0.3}
        scheduler: {name: asha, grace_period_steps: 15, reduction_factor: 2}
        seed: 1
        budget: {max_trials: 5, max_concurrent: 1}
        """,
    )
    summary = summary_of(sweep("run", str(spec), "--json"))
    states = summary["by_state"]
    assert states.get("stopped early", 0) >= 1, states
    assert states.get("finished", 0) >= 1, states
    assert summary["trials"] == 5 and summary["worker_hours"] > 0

    status = json.loads(sweep("status", str(spec), "--json").stdout)
    stopped = [r for r in status["trials"] if r["state"] == "stopped early"]
    assert all(r["step"] < 90 for r in stopped)
    best = summary["best"]
    assert best["state"] == "finished" and best["step"] == 90
    assert best["accuracy"] == max(
        r["accuracy"] for r in status["trials"] if r["state"] == "finished"
    )

    shown = sweep("status", str(tmp_path / "runs" / "asha"))  # by dir, from another shell
    assert shown.returncode == 0 and "stopped early" in shown.stdout
    assert all(row["id"] in shown.stdout for row in status["trials"])

    # The best spec is a job a user runs as is: same values, same result.
    best_spec = yaml.safe_load(Path(summary["best_spec"]).read_text())
    assert best_spec["optimizer"]["lr"] == best["config"]["optimizer.lr"]
    done = subprocess.run(
        [*DEEPYARD, "run", summary["best_spec"], "--json", "--set", f"output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rerun = json.loads(done.stdout.strip().splitlines()[-1])
    assert rerun["eval"]["accuracy"] == pytest.approx(best["accuracy"], abs=1e-9)


def test_a_killed_driver_resumes_the_sweep_where_it_stopped(tmp_path: Path) -> None:
    spec = write_sweep(
        tmp_path,
        """\
        name: killed
        job_overrides:
          training.epochs: null
          training.max_steps: 600
          training.eval_every_steps: 50
          checkpoint.every_steps: 50
        space:
          optimizer.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}
          model.args.width: {type: choice, values: [8, 16]}
        algorithm: tpe
        budget: {max_trials: 3, max_concurrent: 1}
        """,
    )
    home = tmp_path / "runs" / "killed"
    port = free_port()
    driver = subprocess.Popen(
        [*DEEPYARD, "sweep", "run", str(spec), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        second = wait_for_second_trials_checkpoint(home, driver)
        # One endpoint serves the sweep's own series and the running trial's (as the
        # PodMonitor scrapes the head pod on Kubernetes).
        running = 'deepyard_sweep_trials{job="killed",state="running"} 1.0'
        scraped = scrape_until(
            f"http://127.0.0.1:{port}/metrics", [running, "deepyard_train_step{"]
        )
        trial_steps = [
            line for line in scraped.splitlines() if line.startswith("deepyard_train_step{")
        ]
        assert trial_steps and all('job="digits-cnn"' in line for line in trial_steps)
        os.kill(driver.pid, signal.SIGKILL)  # no chance to clean up or save anything
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    stale = sweep("status", str(spec))
    assert f"the driver (pid {driver.pid}) is not running" in stale.stderr
    journal_at_kill = (home / "journal.jsonl").read_text()
    shutil.copy(home / "journal.jsonl", tmp_path / "journal-at-kill.jsonl")

    summary = summary_of(sweep("run", str(spec), "--json"))
    assert summary["by_state"] == {"finished": 3}

    records = [json.loads(line) for line in (home / "journal.jsonl").read_text().splitlines()]
    assert (home / "journal.jsonl").read_text().startswith(journal_at_kill)
    suggested = [r["trial"] for r in records if r["op"] == "suggest"]
    assert len(suggested) == 3 and suggested[1] == second
    first = suggested[0]
    assert len(run_dirs(home, first)) == 1  # finished before the kill: not rerun
    runs = run_dirs(home, second)
    assert len(runs) == 2
    resumed = [e for e in events(runs[-1]) if e["type"] == "resumed"]
    assert resumed and 0 < resumed[0]["step"] < 600

    # The third suggestion is what the searcher makes after the same history.
    from deepyard.spec.sweep_load import load_sweep
    from deepyard.sweep.journal import JournaledSearcher
    from deepyard.sweep.search import build_searcher

    replayed = JournaledSearcher(
        build_searcher(load_sweep(spec)), tmp_path / "journal-at-kill.jsonl"
    )
    told = [r for r in records if r["op"] == "complete"]
    replayed.replay({first, second})
    replayed.on_trial_complete(second, told[1]["result"])
    third = next(r for r in records if r["op"] == "suggest" and r["trial"] == suggested[2])
    assert replayed.suggest("check") == third["config"]


@pytest.mark.parametrize("on_exhausted", ["finish", "stop"])
def test_a_spent_budget_starts_no_more_trials(tmp_path: Path, on_exhausted: str) -> None:
    spec = write_sweep(
        tmp_path,
        f"""\
        name: budget
        job_overrides:
          training.epochs: null
          training.max_steps: 60
          training.eval_every_steps: 20
        space:
          optimizer.lr: {{type: loguniform, low: 1.0e-3, high: 1.0e-2}}
        budget: {{max_trials: 4, max_concurrent: 1, worker_hours: 0.001,
                  on_exhausted: {on_exhausted}}}
        """,
    )
    summary = summary_of(sweep("run", str(spec), "--json"))
    assert summary["state"] == "finished"
    assert summary["exhausted"].startswith("worker-hours budget spent")
    states = summary["by_state"]
    assert states.get("not run", 0) == summary["trials"] - 1, states  # none started after
    if on_exhausted == "finish":  # the running trial ran to its end
        assert states.get("finished") == 1 and summary["best"]["state"] == "finished"
        assert Path(summary["best_spec"]).exists()
    else:  # stopped where the budget ran out, and still reported as the best so far
        assert states.get("stopped early") == 1 and summary["best"]["step"] < 60


def test_pbt_exploits_by_continuing_from_the_better_trials_checkpoint(tmp_path: Path) -> None:
    spec = write_sweep(
        tmp_path,
        """\
        name: pbt
        job_overrides:
          training.epochs: null
          training.max_steps: 150   # the last interval (120) leaves steps to train
          training.eval_every_steps: 20
          checkpoint.every_steps: 20
          resources.num_workers: 1   # two trials at once on two cores: PBT needs a population
        space:
          optimizer.lr: {type: loguniform, low: 1.0e-6, high: 1.0e-2}
        # synch: the trials meet at every interval (a trial's ranks wait at each
        # evaluation for Tune's verdict, so they are judged, paused and copied there)
        scheduler: {name: pbt, perturbation_interval_steps: 40, synch: true}
        seed: 2                      # draws lr 1.1e-5 for one trial and 3.8e-3 for the other
        budget: {max_trials: 2, max_concurrent: 2}
        """,
    )
    summary = summary_of(sweep("run", str(spec), "--json"))
    assert summary["by_state"] == {"finished": 2}
    home = tmp_path / "runs" / "pbt"
    markers = sorted(home.glob("trials/*/adopted.json"))
    assert markers, "no trial exploited another"
    for adopted in markers:
        ref = json.loads(adopted.read_text())
        assert ref["trial"] != adopted.parent.name
        # synch: the donor was judged at the interval both trials had reached (not steps
        # later: its ranks waited there), and the weak trial went on from a copy of that
        # checkpoint, in its own store ...
        assert ref["step"] in (40, 80, 120)
        resumes = [
            e
            for run in run_dirs(home, adopted.parent.name)
            for e in events(run)
            if e["type"] == "resumed"
        ]
        assert any(
            e["step"] == ref["step"] and e["checkpoint"].startswith(str(adopted.parent))
            for e in resumes
        ), resumes
    weak = markers[0].parent
    donor = json.loads(markers[0].read_text())["trial"]
    # ... with the LR PBT explored from the donor's, which the schedule then follows.
    import pyarrow.parquet as pq

    # Its last run that trained (a run Tune stopped before its first step has none).
    finished = [r for r in run_dirs(home, weak.name) if (r / "history.parquet").exists()]
    last_run = [r for r in finished if pq.read_metadata(r / "history.parquet").num_rows][-1]
    [resumed] = [e for e in events(last_run) if e["type"] == "resumed"]
    assert 40 <= resumed["step"] < 150

    from deepyard.spec import load as load_job
    from deepyard.train.engine import lr_factor

    status = json.loads((home / "status.json").read_text())
    rows = {row["id"]: row for row in status["trials"]}
    lr = rows[weak.name]["config"]["optimizer.lr"]
    assert lr != rows[donor]["config"]["optimizer.lr"]
    job = load_job(last_run / "spec.yaml")
    assert job.optimizer.lr == lr
    history = pq.read_table(last_run / "history.parquet").to_pydict()
    assert history["step"][0] == resumed["step"] + 1 and history["step"][-1] == 150
    first = history["step"][0]
    assert history["lr"][0] == pytest.approx(lr * lr_factor(job, 150, first))


def wait_for_second_trials_checkpoint(home: Path, driver: subprocess.Popen[bytes]) -> str:
    """The second trial's id, once it has published a checkpoint and is still running."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        suggested = [
            json.loads(line)["trial"]
            for line in _lines(home / "journal.jsonl")
            if '"suggest"' in line
        ]
        if len(suggested) >= 2:
            manifests = list(
                (home / "trials" / suggested[1]).glob("*/checkpoints/*/*/manifest.json")
            )
            if manifests:
                return suggested[1]
        time.sleep(0.2)
    raise AssertionError("the second trial never checkpointed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape_until(url: str, needles: list[str], timeout_s: float = 60) -> str:
    """The endpoint's text once it contains every needle (a trial announces itself, and
    the sweep's monitor counts it, shortly after it starts)."""
    deadline, text = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        if all(needle in text for needle in needles):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{url} never showed {needles}; last scrape:\n{text[-3000:]}")


def run_dirs(home: Path, trial: str) -> list[Path]:
    return sorted(p.parent for p in (home / "trials" / trial).glob("*/*/spec.yaml"))


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
