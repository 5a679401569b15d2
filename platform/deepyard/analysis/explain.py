"""`deepyard explain`: attributions of chosen rows, written where a person can look at them.

Feature models: one PNG per row (`NNN-row<R>-pred<P>-true<T>.png`, input | heatmap).
Token models: one self-contained `tokens.html` with every row's tokens shaded.
Both: `index.json` with each row's predicted class, its probability, the true class and
the class the attribution is for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from deepyard.analysis import render, saliency
from deepyard.analysis.loaded import EvalData, Loaded
from deepyard.errors import DataError

DEFAULT_COUNT = 8


def pick_rows(rows: str | None, count: int | None, available: int) -> list[int]:
    """`--rows 0,5,9` or `--count N` (the first N rows); neither: the first 8."""
    if rows is not None and count is not None:
        raise DataError("--rows and --count are alternatives; keep one of them")
    if rows is None:
        n = DEFAULT_COUNT if count is None else count
        if n < 1:
            raise DataError(f"--count {n}: use a positive number of rows")
        return list(range(min(n, available)))
    try:
        picked = [int(part) for part in rows.split(",") if part.strip()]
    except ValueError:
        raise DataError(f"--rows {rows}: use row numbers separated by commas, e.g. 0,5,9") from None
    bad = [r for r in picked if not 0 <= r < available]
    if bad or not picked:
        raise DataError(
            f"--rows {rows}: the data has rows 0..{available - 1}; {bad or 'none'} is not one"
        )
    return picked


def default_out(loaded: Loaded) -> Path:
    name = f"explain-step{loaded.step}"
    run_dir = loaded.located.run_dir
    return (run_dir / name) if run_dir is not None else Path.cwd() / f"{loaded.spec.name}-{name}"


def explain(
    loaded: Loaded, data: EvalData, rows: list[int], out: Path, target: int | None
) -> dict[str, Any]:
    """Write the attributions of `rows` under `out`; returns the index written."""
    inputs = data.data.inputs[rows].to(loaded.device)
    labels = data.data.labels[rows]
    if loaded.takes_tokens:
        attribution = saliency.tokens(loaded.model, inputs, target)
    else:
        attribution = saliency.features(loaded.model, inputs.float(), target)
    names = data.label_names
    entries = []
    for i, row in enumerate(rows):
        predicted = int(attribution.probs[i].argmax())
        entries.append(
            {
                "row": row,
                "predicted": predicted,
                "predicted_name": _name(names, predicted),
                "probability": float(attribution.probs[i, predicted]),
                "true": int(labels[i]),
                "true_name": _name(names, int(labels[i])),
                "target": int(attribution.targets[i]),
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    if loaded.takes_tokens:
        files = _token_page(loaded, inputs.cpu(), attribution, entries, out)
    else:
        files = _pngs(inputs.cpu(), attribution, entries, out)
    index = {
        "checkpoint": loaded.located.uri,
        "step": loaded.step,
        "model": loaded.spec.model.name,
        "data": data.uri,
        "method": "gradient x input",
        "rows": entries,
        "files": files,
    }
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def _name(names: list[str] | None, label: int) -> str | None:
    return names[label] if names is not None and 0 <= label < len(names) else None


def _pngs(
    inputs: torch.Tensor,
    attribution: saliency.Attribution,
    entries: list[dict[str, Any]],
    out: Path,
) -> list[str]:
    files = []
    for i, entry in enumerate(entries):
        name = f"{i:03d}-row{entry['row']}-pred{entry['predicted']}-true{entry['true']}.png"
        render.saliency_png(inputs[i].numpy(), attribution.values[i].cpu().numpy(), out / name)
        entry["file"] = name
        files.append(name)
    return files


def _token_page(
    loaded: Loaded,
    ids: torch.Tensor,
    attribution: saliency.Attribution,
    entries: list[dict[str, Any]],
    out: Path,
) -> list[str]:
    tokenizer, pad = loaded.tokenizer, loaded.model_data.vocab
    if tokenizer is None or pad is None:
        raise DataError("explain: a token model needs the job's data.tokenizer to show tokens")
    sections = []
    for i, entry in enumerate(entries):
        keep = ids[i] != pad.pad_id
        tokens = [tokenizer.id_to_token(int(t)) or f"[{int(t)}]" for t in ids[i][keep]]
        values = [float(v) for v in attribution.values[i].cpu()[keep]]
        entry["tokens"] = [[t, v] for t, v in zip(tokens, values, strict=True)]
        heading = (
            f"row {entry['row']}: predicted {_label(entry, 'predicted')} "
            f"(p={entry['probability']:.3f}), true {_label(entry, 'true')}, "
            f"attributions for class {entry['target']}"
        )
        sections.append(render.token_row_html(tokens, values, heading))
    title = f"{loaded.spec.name} step {loaded.step}: token attributions"
    (out / "tokens.html").write_text(render.token_page(title, sections), encoding="utf-8")
    return ["tokens.html"]


def _label(entry: dict[str, Any], key: str) -> str:
    name = entry.get(f"{key}_name")
    return f"{entry[key]} ({name})" if name else str(entry[key])
