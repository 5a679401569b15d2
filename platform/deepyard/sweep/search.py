"""The search algorithms: which point of the space each new trial runs.

random and grid are ours (`SpaceSampler`): trial i's values depend only on the seed and i,
so a restored sweep draws what an uninterrupted one would have drawn. tpe is Optuna's TPE
through Ray Tune's OptunaSearch, seeded; its suggestions depend on the results told to it,
which `journal.JournaledSearcher` replays on restore.

Config keys are the space's dotted job paths (`optimizer.lr`); values are plain JSON types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from deepyard.spec.sweep import (
    ChoiceParam,
    GridParam,
    LogUniformParam,
    ParamSpec,
    RandIntParam,
    SweepSpec,
    UniformParam,
)
from deepyard.sweep.space import to_tune


def point(space: Mapping[str, ParamSpec], seed: int, index: int) -> dict[str, Any]:
    """Trial `index`'s values: grid parameters enumerate (the last one fastest), each
    whole grid is one sample, and sample k draws the rest from a generator seeded (seed, k)."""
    grid = [(path, p.values) for path, p in space.items() if isinstance(p, GridParam)]
    grid_size = math.prod(len(values) for _, values in grid)
    sample, cell = divmod(index, grid_size)
    rng = np.random.default_rng([seed, sample])
    chosen: dict[str, Any] = {}
    for path, values in reversed(grid):
        cell, at = divmod(cell, len(values))
        chosen[path] = values[at]
    return {
        path: chosen[path] if path in chosen else _draw(param, rng) for path, param in space.items()
    }


def _draw(param: ParamSpec, rng: np.random.Generator) -> Any:
    if isinstance(param, UniformParam):
        return float(rng.uniform(param.low, param.high))
    if isinstance(param, LogUniformParam):
        return float(math.exp(rng.uniform(math.log(param.low), math.log(param.high))))
    if isinstance(param, RandIntParam):
        return int(rng.integers(param.low, param.high))
    assert isinstance(param, ChoiceParam)
    return param.values[int(rng.integers(len(param.values)))]


class SpaceSampler(Searcher):
    """random and grid search: trial i runs `point(space, seed, i)`, for i < num_trials."""

    def __init__(
        self, space: Mapping[str, ParamSpec], seed: int, num_trials: int, metric: str, mode: str
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space, self.seed, self.num_trials = dict(space), seed, num_trials
        self.count = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.count >= self.num_trials:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel
        self.count += 1
        return point(self.space, self.seed, self.count - 1)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Random and grid points do not depend on results."""


def build_searcher(spec: SweepSpec) -> Searcher:
    """The spec's algorithm as a Tune Searcher that knows its own space, metric and mode."""
    if spec.algorithm == "tpe":
        from ray.tune.search.optuna import OptunaSearch

        space = OptunaSearch.convert_search_space(to_tune(spec.space))
        return OptunaSearch(space=space, metric=spec.metric, mode=spec.mode, seed=spec.seed)
    return SpaceSampler(spec.space, spec.seed, spec.num_trials, spec.metric, spec.mode)
