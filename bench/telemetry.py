"""What the job's Prometheus metrics cost: the same job with `telemetry.metrics` on and off.

  (1) wall clock: `deepyard run` (embedded local Ray, 2 workers) with `telemetry.metrics=false`
      and `true`, interleaved (off/on, on/off, off/on, ...) so drift and order hit both; "on":
      this script scrapes the job's /metrics every second (the address read from the file_sd
      target file in `telemetry.targets_dir`, a temporary folder), as a Prometheus would.
      Figures: the median per-step time from history.parquet (rank 0's `step_time_s`, and the
      interval between consecutive step events, which also holds the loop's logging), warm-up
      steps left out, and the summary's samples/s; on/off ratios per adjacent pair, their
      median, and the spread between repeats of the same setting (is 1% resolvable here?).
  (2) driver CPU: the `deepyard run` process's CPU time (psutil, every 0.5 s) over its
      training span, in both settings: the exporter and its HTTP server live in that process.
  (3) in-process: `MetricsExporter.observe()` timed per step event and per `rank_step`
      event, and the CPU this process spends per scrape of its HTTP server (by a client in
      another process; rendering alone too), in microseconds; per step the driver observes
      one step event and (workers - 1) rank_step events. That CPU time over the job's median
      step time bounds the driver-side cost independent of wall-clock noise.

The switch turns off only the driver's exporter and HTTP server; what the workers measure
(forward time, grad norm, GPU stats) and send is the same in both settings, so it is in
none of the figures.

Usage: .venv/bin/python bench/telemetry.py [--quick] [--json] [--pairs N] [--steps N]
Writes bench/out/telemetry.json; subprocess logs go to bench/out/logs/telemetry-*.log.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
from prometheus_client import generate_latest
from rich.console import Console
from rich.table import Table

from deepyard import spec as specs
from deepyard.telemetry.exporter import MetricsExporter
from overhead import BIN, ROOT, launch  # bench/overhead.py: this folder is on sys.path

GOAL_RATIO = 1.01  # step time with metrics on over off, at most
WARMUP_STEPS = 20  # left out of the step-time medians (first step, allocator, caches)
SCRAPE_EVERY_S = 1.0
DOCS_SCRAPE_EVERY_S = 5.0  # the scrape_interval docs/user-guide.md suggests
SAMPLE_EVERY_S = 0.5  # driver CPU time
SIZES = {  # pairs of (off, on) runs, steps per run, events per micro-benchmark round
    False: {"pairs": 3, "steps": 150, "events": 3_000, "rounds": 5},
    True: {"pairs": 1, "steps": 120, "events": 2_000, "rounds": 3},
}
Result = dict[str, Any]


class Watch(threading.Thread):
    """While one run lasts: the driver's CPU time, and (metrics on) a scrape every second."""

    def __init__(self, targets: Path, scrape: bool) -> None:
        super().__init__(daemon=True)
        self.targets, self.scrape = targets, scrape
        self.done = threading.Event()
        self.cpu: list[tuple[float, float]] = []  # (time.time(), driver CPU seconds)
        self.scrapes: list[Result] = []
        self.errors: list[str] = []
        self.target_seen = False

    def run(self) -> None:
        driver, next_scrape = None, 0.0
        while not self.done.wait(SAMPLE_EVERY_S):
            driver = driver or _driver()
            if driver is not None:
                try:
                    times = driver.cpu_times()
                    self.cpu.append((time.time(), times.user + times.system))
                except psutil.Error:
                    driver = None
            address = self._address()
            if self.scrape and address and time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + SCRAPE_EVERY_S
                self._scrape(address)

    def _address(self) -> str | None:
        for path in self.targets.glob("*.json"):
            try:
                address = str(json.loads(path.read_text())[0]["targets"][0])
            except (OSError, ValueError, LookupError):
                continue
            self.target_seen = True
            return address
        return None

    def _scrape(self, address: str) -> None:
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as response:
                body = response.read()
        except OSError as exc:  # the job ended between reading the target and scraping
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.scrapes.append(
            {
                "t": time.time(),
                "seconds": time.perf_counter() - started,
                "bytes": len(body),
                "steps_series": body.count(b"deepyard_train_steps_total{"),
            }
        )


class RunFailed(Exception):
    """A run failed or ran past --timeout (its message names its log)."""


def job_run_retried(job: Path, metrics: bool, name: str, tmp: Path, args: Any) -> Result:
    """`job_run`, once more if the first try fails or hangs; the failure is kept."""
    try:
        return job_run(job, metrics, name, tmp, args)
    except RunFailed as exc:
        Console(stderr=True).print(f"[yellow]{exc}[/]; trying {name} once more")
        again = job_run(job, metrics, f"{name}-retry", tmp, args)
        return {**again, "failed_first_try": str(exc)}


def _driver() -> psutil.Process | None:
    """The `deepyard run` process: this script's only child while a run lasts."""
    for child in psutil.Process().children():
        try:
            if "run" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def job_run(job: Path, metrics: bool, name: str, tmp: Path, args: Any) -> Result:
    """One `deepyard run` of the job; its summary figures, step times and the watch's."""
    targets = tmp / f"targets-{name}"
    sets = [
        f"training.max_steps={args.steps}",
        "training.epochs=null",
        f"output_dir={tmp / 'runs'}",
        f"telemetry.metrics={'true' if metrics else 'false'}",
        f"telemetry.targets_dir={targets}",
    ]
    cmd = [str(BIN / "deepyard"), "run", str(job), "--json"]
    cmd += [a for s in sets for a in ("--set", s)]
    watch = Watch(targets, scrape=metrics)
    watch.start()
    try:
        summary = launch(cmd, args.out.parent / "logs" / f"telemetry-{name}.log", args.timeout)
    except SystemExit as exc:  # launch() exits on a failed or timed-out run
        raise RunFailed(str(exc.code)) from None
    finally:
        watch.done.set()
        watch.join()
    if metrics and not watch.scrapes:
        sys.exit(f"{name}: /metrics was never scraped (target file seen: {watch.target_seen})")
    if not metrics and watch.target_seen:
        sys.exit(f"{name}: telemetry.metrics=false, yet a target file appeared in {targets}")
    history = step_history(Path(summary["run_dir"]))
    return {
        "metrics": metrics,
        "steps": summary["steps"],
        "samples_per_s": summary["samples_per_s"],
        "train_time_s": summary["train_time_s"],
        **history,
        **driver_cpu(watch.cpu, history["span_t"]),
        **scrape_figures(watch),
    }


def step_history(run_dir: Path) -> Result:
    """Median step time and median interval between step events, warm-up left out."""
    table = pq.read_table(run_dir / "history.parquet", columns=["step_time_s", "t"]).to_pylist()
    rows = table[WARMUP_STEPS:] if len(table) > 2 * WARMUP_STEPS else table[1:]
    intervals = [b["t"] - a["t"] for a, b in itertools.pairwise(rows)]
    return {
        "median_step_s": statistics.median(r["step_time_s"] for r in rows),
        "median_interval_s": statistics.median(intervals),
        "steps_measured": len(rows),
        "span_t": (rows[0]["t"], rows[-1]["t"]),
    }


def driver_cpu(samples: list[tuple[float, float]], span: tuple[float, float]) -> Result:
    """The driver's CPU use (cores) between the first and last sample inside the span."""
    inside = [(t, cpu) for t, cpu in samples if span[0] <= t <= span[1]]
    if len(inside) < 2:
        return {"driver_cpu_cores": None}
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return {"driver_cpu_cores": (c1 - c0) / (t1 - t0)}


def scrape_figures(watch: Watch) -> Result:
    if not watch.scrapes:
        return {"scrapes": 0}
    return {
        "scrapes": len(watch.scrapes),
        "scrape_errors": len(watch.errors),
        "scrape_ms_median": 1e3 * statistics.median(s["seconds"] for s in watch.scrapes),
        "scrape_bytes": watch.scrapes[-1]["bytes"],
        "scrape_rank_series": watch.scrapes[-1]["steps_series"],
    }


def micro(spec: specs.JobSpec, events: int, rounds: int = 5) -> Result:
    """CPU microseconds (process time: preemption by other processes left out) per observed
    event (step, rank_step) and per scrape render, median of `rounds` rounds, then per scrape
    served over HTTP; on a fresh exporter fed like a running job."""
    exporter = MetricsExporter(spec, "bench", time.time(), "0" * 12)
    exporter.observe({"type": "start", "attempt": 1, "flops_per_sample": 1.3e6, "peak_flops": None})

    def step(i: int) -> Result:  # the fields train.loop sends (CPU: no GPU stats)
        return {
            "type": "step",
            "step": i,
            "epoch": 1,
            "loss": 0.5,
            "lr": 1e-3,
            "grad_norm": 1.2,
            "step_time_s": 0.03,
            "forward_s": 0.01,
            "data_wait_s": 1e-4,
            "samples_per_s": 2000.0,
            "tokens_per_s": None,
            "t": time.time(),
        }

    def rank_step(i: int) -> Result:
        keys = ("step_time_s", "forward_s", "data_wait_s")
        return {"type": "rank_step", "rank": 1, "step": i, **{k: step(i)[k] for k in keys}}

    def per_event_us(make: Any) -> float:
        batch = [make(i) for i in range(events)]
        started = time.process_time()
        for event in batch:
            exporter.observe(event)
        return 1e6 * (time.process_time() - started) / events

    def per_scrape_us() -> float:
        count = max(20, events // 200)
        started = time.process_time()
        for _ in range(count):
            generate_latest(exporter.registry)
        return 1e6 * (time.process_time() - started) / count

    out: dict[str, list[float]] = {"step_us": [], "rank_step_us": [], "scrape_us": []}
    for _ in range(rounds):
        out["step_us"].append(per_event_us(step))
        out["rank_step_us"].append(per_event_us(rank_step))
        out["scrape_us"].append(per_scrape_us())
    return {
        **{k: statistics.median(v) for k, v in out.items()},
        "served_scrape_us": served_scrape_us(exporter, max(20, events // 100)),
        "rounds": out,
        "events": events,
        "scrape_bytes": len(generate_latest(exporter.registry)),
    }


def served_scrape_us(exporter: MetricsExporter, count: int) -> float:
    """CPU time this process spends per scrape over HTTP (the exporter's server: request
    handling and rendering), scraped `count` times by a client in another process."""
    address = exporter.start()
    url = f"http://{address}/metrics"
    client = f"import urllib.request as u\nfor _ in range({count}): u.urlopen({url!r}).read()"
    try:
        before = time.process_time()  # this process's threads: the main one only waits
        subprocess.run([sys.executable, "-c", client], check=True, timeout=120)
        spent = time.process_time() - before
    finally:
        exporter.stop("succeeded")
    return 1e6 * spent / count


def figures(runs: list[Result], bench: Result, workers: int) -> Result:
    """On/off ratios per adjacent pair, spreads between repeats, and the micro bound."""
    off = [r for r in runs if not r["metrics"]]
    on = [r for r in runs if r["metrics"]]

    def ratios(key: str) -> list[float]:
        return [b[key] / a[key] for a, b in zip(off, on, strict=True)]

    def spread(rs: list[Result], key: str) -> float:
        values = [r[key] for r in rs]
        return (max(values) - min(values)) / statistics.median(values)

    step_s = statistics.median(r["median_step_s"] for r in off)
    per_step_us = bench["step_us"] + (workers - 1) * bench["rank_step_us"]
    scrape_per_step_us = bench["served_scrape_us"] * step_s / SCRAPE_EVERY_S
    cpu = {
        name: [r["driver_cpu_cores"] for r in rs if r["driver_cpu_cores"] is not None]
        for name, rs in (("off", off), ("on", on))
    }
    cpu_median = {k: statistics.median(v) if v else None for k, v in cpu.items()}
    out: Result = {
        "pairs": len(on),
        "ratio_step": statistics.median(ratios("median_step_s")),
        "ratio_interval": statistics.median(ratios("median_interval_s")),
        "ratio_samples_per_s": statistics.median(ratios("samples_per_s")),
        "pair_ratios_step": ratios("median_step_s"),
        "pair_ratios_interval": ratios("median_interval_s"),
        "pair_ratios_samples_per_s": ratios("samples_per_s"),
        "median_step_s": {"off": step_s, "on": statistics.median(r["median_step_s"] for r in on)},
        "driver_cpu_cores": cpu_median,
        # the workers fill both cores: the driver's extra CPU, if it all came off the slowest
        # rank, would stretch every step by that fraction (the worst case)
        "driver_cpu_bound_ratio": (
            None
            if cpu_median["on"] is None or cpu_median["off"] is None
            else 1 + max(0.0, cpu_median["on"] - cpu_median["off"])
        ),
        "micro_us_per_step": per_step_us,
        "micro_scrape_us_per_step": scrape_per_step_us,
        "micro_bound_ratio": 1 + (per_step_us + scrape_per_step_us) / (1e6 * step_s),
        "micro_bound_ratio_events_only": 1 + per_step_us / (1e6 * step_s),
        "micro_bound_ratio_docs_interval": 1
        + (per_step_us + scrape_per_step_us * SCRAPE_EVERY_S / DOCS_SCRAPE_EVERY_S)
        / (1e6 * step_s),
    }
    if len(on) > 1:
        out["spread"] = {
            f"{name}_{key}": spread(rs, key)
            for name, rs in (("off", off), ("on", on))
            for key in ("median_step_s", "median_interval_s", "samples_per_s")
        }
    return out


def render(result: Result, console: Console) -> None:
    fig, runs, bench = result["figures"], result["runs"], result["micro"]
    ok = {True: "[green]ok[/]", False: "[red]MISSED[/]"}
    title = f"{result['job']} · {result['workers']} workers · {result['steps']} steps per run"
    table = Table(title=title, caption=f"step medians leave out the first {WARMUP_STEPS} steps")
    for col in ("run", "step ms", "interval ms", "samples/s", "driver CPU", "scrapes", "scrape ms"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in runs:
        cores = r["driver_cpu_cores"]
        table.add_row(
            r["name"],
            f"{1e3 * r['median_step_s']:.2f}",
            f"{1e3 * r['median_interval_s']:.2f}",
            f"{r['samples_per_s']:.1f}",
            "-" if cores is None else f"{100 * cores:.1f}%",
            str(r["scrapes"]) if r["metrics"] else "-",
            f"{r['scrape_ms_median']:.1f}" if r["metrics"] else "-",
        )
    console.print(table)

    def pairs(key: str) -> str:
        return ", ".join(f"{v:.4f}" for v in fig[key])

    ratio, noise = fig["ratio_step"], noise_of(fig)
    verdict = ok[ratio <= GOAL_RATIO]
    if noise is None or noise > GOAL_RATIO - 1:
        verdict += " [yellow](not resolvable here, see the spread)[/]"
    console.print(
        f"(1) step time on/off: {ratio:.4f} (goal <= {GOAL_RATIO}) {verdict}; "
        f"pairs {pairs('pair_ratios_step')}"
    )
    console.print(
        f"    interval between step events on/off: {fig['ratio_interval']:.4f} "
        f"(pairs {pairs('pair_ratios_interval')}); samples/s on/off: "
        f"{fig['ratio_samples_per_s']:.4f} (pairs {pairs('pair_ratios_samples_per_s')})"
    )
    if noise is not None:
        s = fig["spread"]
        console.print(
            "    spread between repeats of one setting, (max - min) / median: step time "
            f"off {100 * s['off_median_step_s']:.1f}%, on {100 * s['on_median_step_s']:.1f}%; "
            f"samples/s off {100 * s['off_samples_per_s']:.1f}%, "
            f"on {100 * s['on_samples_per_s']:.1f}%"
        )
        if noise > GOAL_RATIO - 1:
            console.print(
                f"    [yellow]note[/]: repeats of the same setting differ by up to "
                f"{100 * noise:.1f}%, so a 1% difference is not resolvable by wall clock "
                "here; (2) and (3) bound the driver's cost instead"
            )
    else:
        console.print("    [yellow]note[/]: one pair (--quick): no spread between repeats")
    cpu = fig["driver_cpu_cores"]
    if cpu["off"] is not None and cpu["on"] is not None:
        console.print(
            f"(2) driver process CPU during training: off {100 * cpu['off']:.1f}% of a core, "
            f"on {100 * cpu['on']:.1f}% (difference {100 * (cpu['on'] - cpu['off']):+.1f} "
            f"points of a core); bound 1 + difference = {fig['driver_cpu_bound_ratio']:.4f} "
            f"{ok[fig['driver_cpu_bound_ratio'] <= GOAL_RATIO]}"
        )
    bound = fig["micro_bound_ratio"]
    console.print(
        f"(3) observe(): {bench['step_us']:.1f} µs per step event, "
        f"{bench['rank_step_us']:.1f} µs per rank_step event → {fig['micro_us_per_step']:.1f} µs "
        f"per step ({result['workers']} ranks); a scrape costs {bench['served_scrape_us']:.0f} µs "
        f"served over HTTP ({bench['scrape_us']:.0f} µs of it rendering "
        f"{bench['scrape_bytes'] / 1e3:.1f} kB) → {fig['micro_scrape_us_per_step']:.1f} µs per "
        "step at one scrape a second"
    )
    console.print(
        f"    bound: 1 + driver CPU per step / median step time "
        f"({1e3 * fig['median_step_s']['off']:.2f} ms) = {bound:.4f} "
        f"(goal <= {GOAL_RATIO}) {ok[bound <= GOAL_RATIO]}; events alone "
        f"{fig['micro_bound_ratio_events_only']:.4f}; with a scrape every "
        f"{DOCS_SCRAPE_EVERY_S:g} s (the user guide's) {fig['micro_bound_ratio_docs_interval']:.4f}"
    )


def noise_of(fig: Result) -> float | None:
    """The larger spread of step time between repeats of one setting; None with one pair."""
    if "spread" not in fig:
        return None
    return max(fig["spread"]["off_median_step_s"], fig["spread"]["on_median_step_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, default=ROOT / "jobs/examples/digits_cnn.yaml")
    parser.add_argument("--quick", action="store_true", help="one pair of shorter runs")
    parser.add_argument("--pairs", type=int, help="(off, on) pairs; default 3, 1 with --quick")
    parser.add_argument("--steps", type=int, help="steps per run; default 150, 120 with --quick")
    parser.add_argument("--json", action="store_true", help="the result as JSON on stdout")
    parser.add_argument(
        "--timeout", type=float, default=240, help="seconds per run; one retry past it"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/telemetry.json")
    args = parser.parse_args(argv)
    size = SIZES[args.quick]
    pairs = args.pairs or size["pairs"]
    args.steps = steps = args.steps or size["steps"]
    (args.out.parent / "logs").mkdir(parents=True, exist_ok=True)
    say, started = Console(stderr=True, soft_wrap=True), time.perf_counter()
    job = args.job.resolve()
    runs: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="deepyard-bench-telemetry-") as tmp:
        spec = specs.load(str(job), [f"telemetry.targets_dir={Path(tmp) / 'targets-micro'}"])
        rounds = f"{size['events']} events a round, {size['rounds']} rounds"
        say.print(f"(3) MetricsExporter.observe(): {rounds}; scrapes over HTTP ...")
        bench = micro(spec, size["events"], size["rounds"])
        for i in range(pairs):  # interleaved off/on, on/off, ...: drift and order hit both
            for metrics in (False, True) if i % 2 == 0 else (True, False):
                name = f"{'on' if metrics else 'off'}-{i}"
                say.print(f"pair {i + 1}/{pairs}: deepyard run, telemetry.metrics={metrics} ...")
                runs.append({"name": name, **job_run_retried(job, metrics, name, Path(tmp), args)})
    result: Result = {
        "job": str(args.job),
        "quick": args.quick,
        "steps": steps,
        "workers": spec.resources.num_workers,
        "warmup_steps_skipped": WARMUP_STEPS,
        "goal": f"step time on/off <= {GOAL_RATIO}",
        "figures": figures(runs, bench, spec.resources.num_workers),
        "micro": bench,
        "runs": runs,
        "bench_s": round(time.perf_counter() - started, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_end": os.getloadavg()[0]},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    render(result, Console(stderr=args.json, soft_wrap=True))
    say.print(f"wrote {args.out} in {result['bench_s']:.0f} s")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
