"""The sweep's one Prometheus endpoint: the sweep's own gauges (trials by state, the best
metric so far) and every running trial's series, merged into one exposition per scrape.

Each trial is an ordinary job with its own exporter on a free port, on whatever node Ray
placed the trial (on Kubernetes: any pod of the RayCluster), so no fixed scrape target can
name them. A trial announces its exporter's address to a small named Ray actor
(`TrialEndpoints`) and withdraws it when it ends; the sweep driver (`deepyard sweep run
--metrics-port`) serves /metrics at one fixed address — on Kubernetes the head pod's
`job-metrics` port, which the chart's PodMonitor scrapes — and, at each scrape, fetches the
announced trials' /metrics and merges them into its own. Trials keep their own `job` and
`run` labels, so the dashboards see them as jobs.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from deepyard.telemetry.catalog import BY_NAME

TRIALS = "deepyard_sweep_trials"
BEST = "deepyard_sweep_best_metric"
STATES = ("pending", "running", "paused", "finished", "stopped early", "failed", "not run")
FETCH_TIMEOUT_S = 2.0
Fetch = Callable[[str], str]


def directory_name(sweep: str) -> str:
    """The named Ray actor holding a sweep's trial endpoints."""
    return f"deepyard-sweep-metrics-{sweep}"


class TrialEndpoints:
    """Trial id → its exporter's host:port (a Ray actor: `ray.remote(TrialEndpoints)`)."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    def announce(self, trial_id: str, address: str) -> None:
        self.addresses[trial_id] = address

    def retire(self, trial_id: str) -> None:
        self.addresses.pop(trial_id, None)

    def all(self) -> dict[str, str]:
        return dict(self.addresses)


def fetch(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=FETCH_TIMEOUT_S) as answer:
        return str(answer.read().decode())


def sweep_families(sweep: str, status: dict[str, Any]) -> list[Metric]:
    """The sweep's own gauges from the monitor's status (status.json's content)."""
    trials = GaugeMetricFamily(TRIALS, BY_NAME[TRIALS].help, labels=["job", "state"])
    counts = {state: 0 for state in STATES}
    for row in status.get("trials", []):
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    for state, count in counts.items():
        trials.add_metric([sweep, state], count)
    best = GaugeMetricFamily(BEST, BY_NAME[BEST].help, labels=["job", "metric"])
    metric, row = status.get("metric"), status.get("best")
    if metric and row and row.get(metric) is not None:
        best.add_metric([sweep, metric], float(row[metric]))
    return [trials, best]


def merge(families: Iterable[Metric]) -> list[Metric]:
    """One family per name (an exposition may not repeat a family), samples of all."""
    merged: dict[str, Metric] = {}
    for family in families:
        kept = merged.get(family.name)
        if kept is None:
            kept = merged[family.name] = Metric(family.name, family.documentation, family.type)
        kept.samples.extend(family.samples)
    return list(merged.values())


class SweepCollector:
    """A prometheus_client collector: the sweep's gauges plus the announced trials'."""

    def __init__(
        self,
        sweep: str,
        status: Callable[[], dict[str, Any]],
        endpoints: Callable[[], dict[str, str]],
        fetcher: Fetch = fetch,
    ) -> None:
        self.sweep, self.status, self.endpoints, self.fetcher = sweep, status, endpoints, fetcher

    def collect(self) -> Iterator[Metric]:
        families = sweep_families(self.sweep, self.status())
        try:
            addresses = list(self.endpoints().values())
        except Exception:  # the directory is busy or gone: serve the sweep's own series
            addresses = []
        for address in addresses:
            try:
                families += text_string_to_metric_families(self.fetcher(address))
            except (OSError, ValueError):
                continue  # a trial that just ended; the next scrape no longer asks it
        yield from merge(families)


class SweepMetricsServer:
    """Serves a SweepCollector's /metrics until `stop()`."""

    def __init__(self, collector: SweepCollector) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)  # type: ignore[arg-type]  # a duck-typed collector
        self.server: Any = None

    def start(self, address: str, port: int) -> str:
        self.server, _ = start_http_server(port, address, self.registry)
        return f"{address}:{self.server.server_port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def announce(sweep: str, trial_id: str, address: str) -> None:
    """From a trial: tell the sweep driver where its metrics are (no-op when the driver
    serves no metrics: then no directory actor exists)."""
    actor = _directory(sweep)
    if actor is not None:
        actor.announce.remote(trial_id, address)


def retire(sweep: str, trial_id: str) -> None:
    actor = _directory(sweep)
    if actor is not None:
        actor.retire.remote(trial_id)


def _directory(sweep: str) -> Any:
    import ray

    try:
        return ray.get_actor(directory_name(sweep))
    except ValueError:
        return None


def serve(sweep: str, status: Callable[[], dict[str, Any]], address: str, port: int) -> tuple:
    """From the sweep driver: create the directory actor and serve; returns (server, actor,
    host:port). The actor lives as long as the driver's Ray job."""
    import ray

    actor: Any = (
        ray.remote(TrialEndpoints)
        .options(name=directory_name(sweep), num_cpus=0, get_if_exists=True)
        .remote()
    )

    def endpoints() -> dict[str, str]:
        return dict(ray.get(actor.all.remote(), timeout=FETCH_TIMEOUT_S))

    server = SweepMetricsServer(SweepCollector(sweep, status, endpoints))
    return server, actor, server.start(address, port)
