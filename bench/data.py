"""Parquet → torch tensors, three ways in one run, on a dataset this script writes.

  (a) scan:     a bare `pyarrow.dataset` scan, record batches → torch (no shuffle): the floor
  (b) deepyard: `ParquetLoader` with shuffle on (block + window shuffle, prefetch thread)
  (c) ray data: `ray.data.read_parquet(...).iter_torch_batches` (local Ray)

Prints rows/s and the ratios (b)/(a) (goal >= 0.8) and (b)/(c) (goal >= 5); with
`--job-steps N` also trains the Fashion-MNIST demo job for N steps and prints the fraction
of step time it waited for data (goal < 2%). Writes bench/out/data.json.

Usage: .venv/bin/python bench/data.py [--rows 2000000] [--batch 1024] [--job-steps 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch

from deepyard.data import ParquetLoader, ParquetSource

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 64


def write_dataset(folder: Path, rows: int, files: int = 4) -> Path:
    """`rows` x 64 float32 features (one fixed-size list column) + int64 label."""
    rng = np.random.default_rng(0)
    per_file = rows // files
    for i in range(files):
        values = pa.array(rng.random(per_file * FEATURES, dtype=np.float32))
        table = pa.table(
            {
                "features": pa.FixedSizeListArray.from_arrays(values, FEATURES),
                "label": rng.integers(0, 10, per_file),
            }
        )
        pq.write_table(table, folder / f"part-{i}.parquet", row_group_size=65536)
    return folder


def timed(label: str, batches: Any) -> dict[str, float]:
    """Drain `batches` (yielding (inputs, labels) tensors); rows/s after the first batch."""
    rows, started, first = 0, time.perf_counter(), None
    for inputs, labels in batches:
        assert inputs.dtype == torch.float32 and len(inputs) == len(labels)
        if first is None:
            first = time.perf_counter()
            first_rows = len(labels)
        rows += len(labels)
    end = time.perf_counter()
    assert first is not None
    result = {
        "rows": rows,
        "pass_rows_per_s": rows / (end - started),  # the whole pass, first batch included
        "rows_per_s": (rows - first_rows) / (end - first),  # once the first batch is out
        "first_batch_s": first - started,
    }
    print(
        f"{label:>14}: {result['pass_rows_per_s']:>10,.0f} rows/s per pass "
        f"({result['rows_per_s']:,.0f} after the first batch, which took "
        f"{result['first_batch_s']:.2f} s)",
        flush=True,
    )
    return result


def scan(folder: Path, batch: int) -> Any:
    dataset = ds.dataset(folder, format="parquet")
    for record in dataset.to_batches(columns=["features", "label"], batch_size=batch):
        values = record.column(0).flatten().to_numpy()
        yield (
            torch.from_numpy(values).view(-1, FEATURES),
            torch.from_numpy(record.column(1).to_numpy()),
        )


def deepyard_loader(folder: Path, batch: int) -> Any:
    loader = ParquetLoader(ParquetSource(str(folder), "features", "label"), 0, 1, batch, seed=0)
    for _ in range(loader.batches_per_epoch):
        yield loader.next_batch()
    loader.close()


def ray_data(folder: Path, batch: int) -> Any:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        dataset = ray.data.read_parquet(str(folder))
        for item in dataset.iter_torch_batches(batch_size=batch):
            yield item["features"].float(), item["label"]
    finally:
        ray.shutdown()


def job_data_wait(steps: int, out: Path) -> dict[str, float]:
    """Train the Fashion-MNIST demo job for `steps` steps; its data-wait fraction."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepyard.cli.main",
            "run",
            str(ROOT / "jobs/examples/fashion_mnist_cnn.yaml"),
            "--json",
            "--set",
            "training.epochs=null",
            "--set",
            f"training.max_steps={steps}",
            "--set",
            f"output_dir={out}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout)
    print(
        f"fashion-mnist job, {steps} steps: waited for data "
        f"{summary['data_wait_fraction']:.2%} of step time (goal < 2%)"
    )
    return {
        "steps": steps,
        "data_wait_fraction": summary["data_wait_fraction"],
        "samples_per_s": summary["samples_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--job-steps", type=int, default=0, help="0: skip the training job")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/data.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="deepyard-bench-data-") as tmp:
        folder = write_dataset(Path(tmp), args.rows)
        print(
            f"dataset: {args.rows:,} rows x {FEATURES} float32 + label, "
            f"{sum(f.stat().st_size for f in folder.iterdir()) / 2**20:.0f} MiB; "
            f"batch {args.batch}",
            flush=True,
        )
        results = {
            "scan": timed("(a) scan", scan(folder, args.batch)),
            "deepyard": timed("(b) deepyard", deepyard_loader(folder, args.batch)),
            "ray_data": timed("(c) ray data", ray_data(folder, args.batch)),
        }
        if args.job_steps:
            results["job"] = job_data_wait(args.job_steps, Path(tmp) / "runs")
    ratios = {}
    for kind in ("pass_rows_per_s", "rows_per_s"):
        rate = {k: v[kind] for k, v in results.items() if kind in v}
        ratios[kind] = (rate["deepyard"] / rate["scan"], rate["deepyard"] / rate["ray_data"])
    (vs_scan, vs_ray), (steady_scan, steady_ray) = ratios["pass_rows_per_s"], ratios["rows_per_s"]
    verdict = "ok" if vs_scan >= 0.8 else "MISSED"
    print(
        f"(b)/(a) deepyard/scan:     {vs_scan:.2f} per pass, {steady_scan:.2f} after the "
        f"first batch (goal >= 0.8 per pass) {verdict}"
    )
    verdict = "ok" if vs_ray >= 5 else "MISSED"
    print(
        f"(b)/(c) deepyard/ray data: {vs_ray:.1f} per pass, {steady_ray:.1f} after the "
        f"first batch (goal >= 5 per pass) {verdict}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": args.rows,
                "batch": args.batch,
                **results,
                "ratios_per_pass": {"deepyard_scan": vs_scan, "deepyard_ray": vs_ray},
                "ratios_after_first_batch": {
                    "deepyard_scan": steady_scan,
                    "deepyard_ray": steady_ray,
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
