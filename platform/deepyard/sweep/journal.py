"""A searcher whose history survives the driver: every suggestion and every final result
is appended (and fsynced) to the sweep's journal before Tune acts on it.

Ray Tune restores a searcher from a pickle saved every so often, so a driver killed
between saves loses the suggestions and results since; later suggestions then differ
from an uninterrupted sweep's. Here restore instead replays the journal into a fresh
searcher, in the order the calls happened: the searcher ends in the state it had when
the driver died, and each replayed suggestion is checked against the one recorded.

Tune's own snapshot (trial list) can still lag the journal. `save()` records which trial
ids that snapshot holds; on restore, suggestions made after it (their trials never reached
Tune's state) are handed out again, first and unchanged, to the next trials Tune asks
for. Results of trials that Tune reruns are told once.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from deepyard.errors import DeepyardError

# Budget gates by journal path: the sweep driver's budget says whether new trials may start.
# Kept outside the searcher, which Tune pickles and restores without it.
_GATES: dict[str, Callable[[], bool]] = {}


def set_gate(journal: Path, may_start: Callable[[], bool]) -> None:
    _GATES[str(journal)] = may_start


class JournalError(DeepyardError):
    """The journal does not replay to the suggestions it recorded."""


class JournaledSearcher(Searcher):
    def __init__(self, inner: Searcher, journal: Path) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner  # not `.searcher`: Tune would save and restore the inner one itself
        self.journal = str(journal)
        self.configs: dict[str, dict[str, Any]] = {}  # inner trial id → its config, in order
        self.aliases: dict[str, str] = {}  # a Tune trial id → the inner id it reruns
        self.completed: set[str] = set()
        self.orphans: collections.deque[str] = collections.deque()

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """The inner searcher was built with its space, metric and mode."""
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        gate = _GATES.get(self.journal)
        if gate is not None and not gate():
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel
        if self.orphans:
            inner_id = self.orphans.popleft()
            self.aliases[trial_id] = inner_id
            self._append({"op": "alias", "trial": trial_id, "of": inner_id})
            return dict(self.configs[inner_id])
        config = self.inner.suggest(trial_id)
        if not isinstance(config, dict):
            return config  # None (not now) or FINISHED
        config = _plain(config)
        self.configs[trial_id] = config
        self._append({"op": "suggest", "trial": trial_id, "config": config})
        return dict(config)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        inner_id = self.aliases.get(trial_id, trial_id)
        if inner_id in self.completed or inner_id not in self.configs:
            return
        told = (
            None
            if result is None or self.metric not in result
            else _plain({self.metric: result[self.metric]})
        )
        error = error or told is None  # ended without the metric: a failed point
        self._tell(inner_id, told, error)
        self._append({"op": "complete", "trial": inner_id, "result": told, "error": error})

    def save(self, checkpoint_path: str) -> None:
        """Saved with Tune's trial list: which trial ids that snapshot knows."""
        known = sorted({*self.configs, *self.aliases})
        Path(checkpoint_path).write_text(json.dumps({"trials": known}))

    def restore(self, checkpoint_path: str) -> None:
        known = set(json.loads(Path(checkpoint_path).read_text())["trials"])
        self.replay(known)

    def replay(self, known: set[str]) -> None:
        """Rebuild the searcher from the journal; queue suggestions Tune never saw."""
        if self.configs:
            raise JournalError("replay needs a fresh searcher; this one has made suggestions")
        for record in read_journal(Path(self.journal)):
            op, trial = record["op"], record["trial"]
            if op == "suggest":
                again = self.inner.suggest(trial)
                if not isinstance(again, dict) or _plain(again) != record["config"]:
                    raise JournalError(
                        f"{self.journal}: trial {trial} was suggested {record['config']}, "
                        f"but the searcher now suggests {again}; the sweep spec or the "
                        "search library changed since the sweep started: resume with the "
                        "same versions, or start the sweep again under a new name"
                    )
                self.configs[trial] = record["config"]
            elif op == "alias":
                self.aliases[trial] = record["of"]
            elif op == "complete" and trial not in self.completed:
                self._tell(trial, record["result"], record["error"])
        carriers = collections.defaultdict(set)
        for tune_id, inner_id in [*((i, i) for i in self.configs), *self.aliases.items()]:
            carriers[inner_id].add(tune_id)
        self.orphans.extend(
            inner_id
            for inner_id in self.configs
            if inner_id not in self.completed and not carriers[inner_id] & known
        )

    def _tell(self, inner_id: str, result: dict[str, Any] | None, error: bool) -> None:
        self.completed.add(inner_id)
        self.inner.on_trial_complete(inner_id, result, error)

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.journal, "a") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records; a torn last line (the driver died mid-write) is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _plain(value: Any) -> Any:
    """JSON types only (numpy scalars become Python ones), as the journal stores them."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))
