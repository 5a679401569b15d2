"""Checks that look outside the spec (files, schemas), run once at the edge before launch."""

from __future__ import annotations

from collections.abc import Callable

from deepyard.errors import DataError, SpecError
from deepyard.spec.job import JobSpec


def check_data_paths(
    spec: JobSpec, source: str, where: Callable[[tuple[str, ...]], str] = lambda loc: ""
) -> None:
    """Local Parquet sources must exist and hold the named columns; remote URIs are
    checked by the workers that read them. `where(loc)` is the `FILE:LINE: ` prefix."""
    from deepyard.data import parquet
    from deepyard.tasks.catalog import info

    problems = []
    for field in ("train", "eval"):
        uri = getattr(spec.data, field)
        if uri is None or not parquet.is_local(uri):
            continue
        try:
            inputs = spec.data.text or spec.data.features  # a text column replaces features
            # A task that reads no labels (a language model) needs no label column.
            labels = [] if info(spec.task_name).labels == "none" else [spec.data.label]
            if spec.data.window is not None:  # a series: windowing makes features and label
                parquet.check_columns(uri, [spec.data.window.column])
            else:
                parquet.check_columns(uri, [inputs, *labels])
        except DataError as exc:
            problems.append(f"{where(('data', field))}data.{field} = {uri!r}: {exc}")
    if problems:
        raise SpecError(problems, source)
