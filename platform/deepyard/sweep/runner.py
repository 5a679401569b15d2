"""Run a sweep to its end on Ray Tune, from scratch or from where its driver stopped.

The sweep dir (`<output_dir>/<name>/`) holds everything needed to resume:

    sweep.yaml      the resolved sweep spec; sweep.json its hash (a resume must match)
    journal.jsonl   every suggestion and final result, in order (journal.py)
    tune/           Ray Tune's experiment state (trial list, snapshots every second)
    trials/<id>/    each trial's job: run records, checkpoints, usage.json
    status.json     the live table (`deepyard sweep status`)
    best.yaml       the best trial's job spec, ready for `deepyard run`
    summary.json    how the sweep ended

Running the same sweep again resumes it: finished trials stay finished, unfinished ones
resume from their own checkpoints, and the searcher replays its journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from deepyard.errors import DeepyardError, SpecError
from deepyard.spec import spec_hash, to_yaml
from deepyard.spec.sweep import PbtScheduler, SweepSpec
from deepyard.sweep.budget import BudgetDecision, BudgetPolicy, BudgetStopper, Ledger
from deepyard.sweep.journal import JournaledSearcher, set_gate
from deepyard.sweep.monitor import SweepMonitor, quiet_tune_progress
from deepyard.sweep.search import build_searcher, point
from deepyard.sweep.space import to_tune, trial_scheduler, trial_spec
from deepyard.sweep.status import count_states
from deepyard.sweep.trial import EXHAUSTED_FILE, TrialSetup, run_trial, trial_resources

JOURNAL = "journal.jsonl"
UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune trial states
TUNE_DIR = "tune"
# Tune snapshots its trial list this often (s); the journal covers the gap (journal.py).
SNAPSHOT_PERIOD_S = "1"


def sweep_dir(sweep: SweepSpec) -> Path:
    return Path(sweep.output_dir) / sweep.name


def sweep_hash(sweep: SweepSpec) -> str:
    """What a resume must match: everything but the budget, which a resume may raise."""
    return spec_hash(sweep, exclude={"budget"})


class SweepRunner:
    def __init__(
        self,
        sweep: SweepSpec,
        console: Console,
        address: str | None = None,
        trainable: Any = None,
        metrics_at: tuple[str, int] | None = None,
    ) -> None:
        """`trainable`: a Tune trainable to run instead of the job (bench/sweep.py times the
        sweep machinery itself with trivial trials). `metrics_at`: (address, port) of the
        sweep's own /metrics, which also carries every running trial's (sweep/metrics.py)."""
        self.sweep, self.console, self.address = sweep, console, address
        self.trainable = trainable
        self.metrics_at = metrics_at
        self.dir = sweep_dir(sweep).resolve()

    def run(self, resume_only: bool = False) -> dict[str, Any]:
        """Run (or resume) the sweep; returns summary.json's content."""
        resuming = self._claim_dir(resume_only)
        started = self._connect()
        try:
            self._check_fits()
            return self._tune(resuming)
        finally:
            if started:
                import ray

                ray.shutdown()

    def _claim_dir(self, resume_only: bool) -> bool:
        """Whether this is a resume; a sweep dir made by a different spec is refused."""
        meta_path = self.dir / "sweep.json"
        ours = sweep_hash(self.sweep)
        if meta_path.exists():
            theirs = json.loads(meta_path.read_text())["hash"]
            if theirs != ours:
                raise SpecError(
                    f"{self.dir} holds sweep {self.sweep.name} started from a different "
                    f"spec (hash {theirs}, this one {ours}); resume it with the spec it "
                    f"started with (its copy: {self.dir / 'sweep.yaml'}), or give this one "
                    "a new name: --set name=...",
                    "sweep",
                )
            return True
        if resume_only:
            raise SpecError(
                f"no sweep to resume at {self.dir}; start it with `deepyard sweep run`",
                "sweep",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sweep.yaml").write_text(
            yaml.safe_dump(self.sweep.model_dump(mode="json", exclude_unset=True), sort_keys=False)
        )
        meta_path.write_text(json.dumps({"hash": ours, "created": time.time()}))
        return False

    def _connect(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            return False
        res = self.sweep.job.resources
        ray.init(
            address="local",  # a new embedded Ray, never another one found on this machine
            num_cpus=max(os.cpu_count() or 1, res.num_workers * res.cpus_per_worker),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",  # secure by default: loopback only
            logging_level=logging.WARNING,
            log_to_driver=False,  # trials log to trials/<id>/trial.log, not over the table
        )
        return True

    def _check_fits(self) -> None:
        import ray

        res = self.sweep.job.resources
        have = ray.cluster_resources()
        need = {"CPU": res.num_workers * res.cpus_per_worker}
        if res.gpus_per_worker:
            need["GPU"] = res.num_workers * res.gpus_per_worker
        short = {k: v for k, v in need.items() if have.get(k, 0) < v}
        if short:
            shown = ", ".join(
                f"{v:g} {k} (cluster has {have.get(k, 0):g})" for k, v in short.items()
            )
            raise SpecError(
                f"job.resources: one trial needs {shown}, so no trial could ever start; "
                "lower job.resources.num_workers or cpus_per_worker, or use a bigger cluster",
                "sweep",
            )

    def _tune(self, resuming: bool) -> dict[str, Any]:
        from ray import tune

        logging.getLogger("ray.tune").setLevel(logging.WARNING)
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_PERIOD_S)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our table instead of Tune's
        # A trial queued when the budget ran out ends without a result (trial.py).
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        sweep = self.sweep
        journal = self.dir / JOURNAL
        fresh = not (self.dir / TUNE_DIR).exists()
        if fresh and journal.exists():  # died before Tune's first snapshot: nothing to resume
            journal.rename(journal.with_suffix(f".abandoned-{int(time.time())}"))
        exhausted = self.dir / EXHAUSTED_FILE
        exhausted.unlink(missing_ok=True)  # the budget is decided afresh (it may have grown)

        def mark_exhausted(decision: BudgetDecision) -> None:
            exhausted.write_text(json.dumps({"reason": decision.reason}))

        ledger = Ledger(BudgetPolicy(sweep.budget), mark_exhausted)
        set_gate(journal, ledger.may_start)
        scheduler = trial_scheduler(sweep)
        monitor = SweepMonitor(sweep, self.dir, ledger, scheduler, self.console)
        setup = TrialSetup(sweep, self.dir)
        trainable = self.trainable or tune.with_resources(
            tune.with_parameters(run_trial, setup=setup), trial_resources(setup)
        )
        if resuming and not fresh:
            self.console.print(f"resuming sweep {sweep.name} from {self.dir}")
        with self._serving_metrics(monitor):
            analysis = self._run_tune(trainable, journal, scheduler, ledger, monitor, resuming)
        unfinished = [t for t in analysis.trials if t.status in UNFINISHED]
        # Tune ends early on Ctrl-C (or a budget that stops trials): say which.
        state = "interrupted" if unfinished else "finished"
        return self._finish(monitor.refresh(analysis.trials, state=state))

    @contextlib.contextmanager
    def _serving_metrics(self, monitor: SweepMonitor) -> Iterator[None]:
        if self.metrics_at is None or not self.sweep.job.telemetry.metrics:
            yield
            return
        from deepyard.sweep.metrics import serve

        server, _actor, where = serve(self.sweep.name, lambda: monitor.status, *self.metrics_at)
        self.console.print(f"sweep metrics (and its trials'): http://{where}/metrics")
        try:
            yield
        finally:
            server.stop()

    def _run_tune(
        self,
        trainable: Any,
        journal: Path,
        scheduler: Any,
        ledger: Ledger,
        monitor: SweepMonitor,
        resuming: bool,
    ) -> Any:
        from ray import tune

        sweep = self.sweep
        return tune.run(
            trainable,
            name=TUNE_DIR,
            storage_path=str(self.dir),
            search_alg=self._search(journal),
            # PBT's fixed points must name their keys in the config (Tune looks them up).
            config=to_tune(sweep.space) if isinstance(sweep.scheduler, PbtScheduler) else None,
            scheduler=scheduler,
            num_samples=sweep.num_trials,
            max_concurrent_trials=sweep.budget.max_concurrent,
            metric=sweep.metric,
            mode=sweep.mode,
            stop=BudgetStopper(ledger),
            callbacks=[monitor, quiet_tune_progress()],
            resume="AUTO" if resuming else None,
            raise_on_failed_trial=False,
            verbose=0,
        )

    def _search(self, journal: Path) -> Any:
        """The journaled searcher; PBT, which Tune runs only without a searcher, gets the
        same seeded points as a fixed list (PBT itself then picks new values)."""
        sweep = self.sweep
        if isinstance(sweep.scheduler, PbtScheduler):
            from ray.tune.search import BasicVariantGenerator

            points = [point(sweep.space, sweep.seed, i) for i in range(sweep.num_trials)]
            at_once = sweep.budget.max_concurrent or 0
            return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=at_once)
        return JournaledSearcher(build_searcher(sweep), journal)

    def _finish(self, status: dict[str, Any]) -> dict[str, Any]:
        best = status["best"]
        summary = {
            "sweep": self.sweep.name,
            "state": status["state"],
            "dir": str(self.dir),
            "metric": self.sweep.metric,
            "mode": self.sweep.mode,
            "trials": len(status["trials"]),
            "by_state": count_states(status["trials"]),
            "worker_hours": round(status["worker_hours"], 5),
            "elapsed_s": round(status["elapsed_s"], 1),
            "exhausted": status["exhausted"],
            "best": best,
        }
        if best is None:
            summary["best_spec"] = None
        else:
            path = self.dir / "best.yaml"
            header = (
                f"best trial {best['id']} of sweep {self.sweep.name}: "
                f"{self.sweep.metric} {best[self.sweep.metric]:.4f} at step {best['step']}"
            )
            path.write_text(to_yaml(trial_spec(self.sweep.job, best["config"]), header))
            summary["best_spec"] = str(path)
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        if best is None and status["trials"]:
            raise DeepyardError(
                f"sweep {self.sweep.name}: no trial reported {self.sweep.metric}; see each "
                f"trial's log under {self.dir / 'trials'}"
            )
        return summary
