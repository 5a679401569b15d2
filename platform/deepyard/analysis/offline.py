"""`deepyard eval`: a checkpoint scored on a split by the model's own task, in this process.

The task's `evaluate` runs as rank 0 of 1 on the plain module (what `run_eval` needs of
an engine: eval(), train(), a forward call and buffers()), in fp32: the consolidated
weights are DeepSpeed's fp32 master copy. The result goes to a JSON file and, when the
run that saved the checkpoint is known, into its record (`evals_offline.json`), which
`deepyard report` shows.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from deepyard.analysis.loaded import EvalData, Loaded
from deepyard.errors import DataError
from deepyard.tasks.base import to_device
from deepyard.telemetry.report_offline import RECORD


def evaluate(loaded: Loaded, data: EvalData, batch_size: int | None = None) -> dict[str, Any]:
    """The evaluation record: which checkpoint, which data, the task's metrics."""
    size = batch_size or loaded.spec.micro_batch_size
    started = time.perf_counter()
    result = loaded.task.evaluate(loaded.model, data.data, 0, 1, size, loaded.device, torch.float32)
    loaded.model.eval()  # run_eval hands the module back in training mode
    manifest = loaded.located.manifest
    recorded = manifest.get("metrics") if manifest.get("metrics_step") == loaded.step else None
    return {
        "checkpoint": loaded.located.uri,
        "job": manifest.get("job", loaded.spec.name),
        "lineage": loaded.located.checkpoint.lineage,
        "step": loaded.step,
        "model": loaded.spec.model.name,
        "task": loaded.task.info.name,
        "data": data.uri,
        "device": str(loaded.device),
        "metrics": _plain(result.metrics),
        "classes": _plain(result.classes),
        "label_names": data.label_names,
        "recorded_at_step": _plain(recorded),  # what training measured at this step
        "eval_s": round(time.perf_counter() - started, 3),
        "t": time.time(),
    }


def evaluate_and_record(
    loaded: Loaded,
    data: EvalData,
    out: Path | None,
    embeddings: Path | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Evaluate; write the JSON (`out`, default `default_out`), the embeddings where asked,
    and the run's record (and its report.html, where one was rendered)."""
    if embeddings is not None:
        _require_encode(loaded)  # before minutes of evaluation, not after
    record = evaluate(loaded, data, batch_size)
    if embeddings is not None:
        size = batch_size or loaded.spec.micro_batch_size
        width = write_embeddings(loaded, data, embeddings, size)
        record["embeddings"] = {"path": str(embeddings), "dim": width}
    path = out or default_out(loaded, data)
    record["out"] = str(path)
    write_json(path, record)
    run_dir = loaded.located.run_dir
    if run_dir is not None:
        record["run_record"] = str(add_to_run(run_dir, record))
        if (run_dir / "report.html").is_file():  # keep a rendered page up to date
            from deepyard.telemetry.report import write_report

            write_report(run_dir)
    return record


def default_out(loaded: Loaded, data: EvalData) -> Path:
    """Next to the run (or here when the run is not known): eval-step<N>-<data>.json."""
    name = f"eval-step{loaded.step}-{_slug(data.uri)}.json"
    run_dir = loaded.located.run_dir
    return (run_dir / name) if run_dir is not None else Path.cwd() / f"{loaded.spec.name}-{name}"


def write_json(path: Path, record: dict[str, Any] | list[Any], option: str = "--out") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(
            f"{option} {path}: cannot write it ({exc.strerror}); pick another path"
        ) from None


def add_to_run(run_dir: Path, record: dict[str, Any]) -> Path:
    """Add the evaluation to the run's record (one entry per checkpoint and data; a new
    evaluation of the same pair replaces the old)."""
    path = run_dir / RECORD
    entries: list[dict[str, Any]] = []
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            entries = []
    key = (record["checkpoint"], record["data"])
    entries = [e for e in entries if (e.get("checkpoint"), e.get("data")) != key]
    entries.append({k: v for k, v in record.items() if k != "classes"})
    write_json(path, entries, "the run record")
    return path


@torch.no_grad()
def write_embeddings(loaded: Loaded, data: EvalData, out: Path, batch_size: int) -> int:
    """The model's `encode(inputs) -> (N, D)` of every row, with its label, as Parquet
    (columns row, label, embedding: D float32 values). Returns D."""
    encode = _require_encode(loaded)
    loaded.model.eval()
    parts = []
    inputs = data.data.inputs
    for start in range(0, len(inputs), batch_size):
        batch = to_device(inputs[start : start + batch_size], loaded.device, torch.float32)
        codes = encode(batch)
        if codes.dim() != 2 or codes.shape[0] != len(batch):
            raise DataError(
                f"--embeddings: {loaded.spec.model.name}.encode returned shape "
                f"{tuple(codes.shape)} for {len(batch)} rows; it must return (N, D)"
            )
        parts.append(codes.float().cpu().numpy())
    codes = np.concatenate(parts).astype(np.float32)
    width = codes.shape[1]
    table = pa.table(
        {
            "row": pa.array(np.arange(len(codes), dtype=np.int64)),
            "label": pa.array(data.data.labels.numpy().astype(np.int64)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel()), width),
        }
    ).replace_schema_metadata(
        {"deepyard.checkpoint": loaded.located.uri, "deepyard.step": str(loaded.step)}
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise DataError(
            f"--embeddings {out}: cannot write it ({exc.strerror}); pick another path"
        ) from None
    return int(width)


def _require_encode(loaded: Loaded) -> Any:
    encode = getattr(loaded.model, "encode", None)
    if not callable(encode):
        raise DataError(
            f"--embeddings: model {loaded.spec.model.name!r} defines no "
            "encode(inputs) -> (N, D), so it has no embeddings to write; use a model that "
            "does (e.g. an autoencoder) or leave --embeddings out"
        )
    return encode


def _slug(uri: str) -> str:
    """A file-name part naming the data: its folder and file, e.g. digits-test."""
    parts = [p for p in uri.replace("\\", "/").split("?")[0].split("/") if p]
    tail = "-".join(parts[-2:]) if parts else "data"
    tail = tail.removesuffix(".parquet")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in tail)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN → None, tensors and numpy numbers → Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
