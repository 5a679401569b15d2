"""The `telemetry` spec section: the job's Prometheus endpoint and how Prometheus finds it."""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from deepyard.spec.base import SpecModel


class TelemetrySpec(SpecModel):
    """Where the job serves /metrics while it runs (the driver of `deepyard run`, or rank 0
    under torchrun), and the file-based service discovery that points Prometheus at it."""

    metrics: bool = Field(default=True, description="Serve Prometheus metrics while running.")
    address: str = Field(
        default="127.0.0.1",
        description="Listen address; loopback by default (secure by default). Use 0.0.0.0 "
        "(or the node's address) when a Prometheus on another machine scrapes it.",
    )
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port.")
    targets_dir: str | None = Field(
        default=None,
        description="Where the job writes its Prometheus file_sd target file "
        "(default: $DEEPYARD_CACHE/prometheus-targets, i.e. ~/.cache/deepyard/...).",
    )
    linger_s: float = Field(
        default=0.0,
        ge=0,
        description="Keep /metrics up this long after the job ends, so the final values "
        "are scraped (set it to your scrape interval).",
    )
    peak_flops_per_device: PositiveFloat | None = Field(
        default=None,
        description="Peak FLOP/s of one device, for MFU, when the device is not in "
        "deepyard's table (e.g. 989e12 for an H100 SXM in bf16).",
    )
