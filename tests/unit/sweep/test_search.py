"""Search algorithms and their journal: random and grid points depend only on (seed, index);
a searcher rebuilt from its journal suggests what the uninterrupted one would have, hands
out again the suggestions Tune's snapshot lost, and tells each result once. Real Optuna
TPE, no Ray cluster."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from deepyard.spec.sweep import ParamSpec
from deepyard.sweep.journal import JournaledSearcher, JournalError, read_journal
from deepyard.sweep.search import SpaceSampler, point

SPACE: dict[str, ParamSpec] = {
    path: TypeAdapter(ParamSpec).validate_python(raw)
    for path, raw in {
        "optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
        "model.args.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "model.args.width": {"type": "choice", "values": [8, 16, 32]},
        "model.args.stages": {"type": "randint", "low": 1, "high": 3},
        "data.batch_size": {"type": "grid", "values": [16, 32]},
        "optimizer.name": {"type": "grid", "values": ["adamw", "sgd", "adamw2"]},
    }.items()
}


def test_points_are_a_function_of_seed_and_index() -> None:
    first = [point(SPACE, 3, i) for i in range(12)]
    assert first == [point(SPACE, 3, i) for i in range(12)]
    assert first != [point(SPACE, 4, i) for i in range(12)]
    # each sample runs the whole 2 x 3 grid with the same sampled values
    grid = {(p["data.batch_size"], p["optimizer.name"]) for p in first[:6]}
    assert len(grid) == 6
    assert len({p["optimizer.lr"] for p in first[:6]}) == 1
    assert first[0]["optimizer.lr"] != first[6]["optimizer.lr"]
    for p in first:
        assert 1e-4 <= p["optimizer.lr"] <= 1e-1
        assert 0.0 <= p["model.args.dropout"] <= 0.5
        assert p["model.args.width"] in (8, 16, 32)
        assert p["model.args.stages"] in (1, 2)  # randint's high is exclusive


def test_loguniform_spreads_over_decades() -> None:
    draws = [point(SPACE, 0, 6 * i)["optimizer.lr"] for i in range(300)]
    decades = {math.floor(math.log10(d)) for d in draws}
    assert decades == {-4, -3, -2}


def test_sampler_finishes_after_its_trials() -> None:
    sampler = SpaceSampler(SPACE, 0, 2, "accuracy", "max")
    assert sampler.suggest("a") == point(SPACE, 0, 0)
    assert sampler.suggest("b") == point(SPACE, 0, 1)
    assert sampler.suggest("c") == SpaceSampler.FINISHED


def _tpe() -> Any:
    from ray.tune.search.optuna import OptunaSearch

    from deepyard.sweep.space import to_tune

    space = {k: v for k, v in SPACE.items() if v.type != "grid"}
    converted = OptunaSearch.convert_search_space(to_tune(space))
    return OptunaSearch(space=converted, metric="accuracy", mode="max", seed=11)


def _score(config: dict[str, Any]) -> float:
    """A made-up objective with an optimum, so TPE's suggestions depend on results."""
    return -abs(math.log10(config["optimizer.lr"]) + 2) - config["model.args.dropout"]


def _run(searcher: JournaledSearcher, ids: list[str]) -> list[dict[str, Any]]:
    configs = []
    for trial in ids:
        config = searcher.suggest(trial)
        configs.append(config)
        searcher.on_trial_complete(trial, {"accuracy": _score(config)})
    return configs


def test_tpe_replayed_from_its_journal_suggests_as_if_never_stopped(tmp_path: Path) -> None:
    ids = [f"t{i:02d}" for i in range(16)]  # past TPE's 10 random start-up trials
    whole = _run(JournaledSearcher(_tpe(), tmp_path / "whole.jsonl"), ids)

    journal = tmp_path / "cut.jsonl"
    first = JournaledSearcher(_tpe(), journal)
    assert _run(first, ids[:12]) == whole[:12]
    first.save(str(tmp_path / "state.json"))  # Tune's snapshot knew every trial

    again = JournaledSearcher(_tpe(), journal)  # a new driver
    again.restore(str(tmp_path / "state.json"))
    assert _run(again, ids[12:]) == whole[12:]
    assert len(read_journal(journal)) == 2 * 16


def test_suggestions_tune_never_saved_are_handed_out_again(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    first = JournaledSearcher(_tpe(), journal)
    _run(first, ["a", "b"])
    first.save(str(tmp_path / "state.json"))  # Tune's last snapshot: a and b
    lost = first.suggest("c")  # suggested, then the driver died before the next snapshot
    first.on_trial_complete("b", {"accuracy": 0.5})  # a duplicate is told once

    again = JournaledSearcher(_tpe(), journal)
    again.restore(str(tmp_path / "state.json"))
    assert again.suggest("new-1") == lost
    assert again.suggest("new-2") != lost
    again.on_trial_complete("new-1", {"accuracy": 0.1})
    assert [r["trial"] for r in read_journal(journal) if r["op"] == "complete"] == ["a", "b", "c"]


def test_a_journal_that_no_longer_replays_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    _run(JournaledSearcher(SpaceSampler(SPACE, 0, 5, "accuracy", "max"), journal), ["a"])
    with journal.open("a") as out:
        out.write('{"op": "suggest", "trial": "b", "con')  # torn by the driver's death: dropped
    assert len(read_journal(journal)) == 2
    other_seed = JournaledSearcher(SpaceSampler(SPACE, 1, 5, "accuracy", "max"), journal)
    with pytest.raises(JournalError, match="trial a was suggested"):
        other_seed.replay({"a"})


def test_no_new_suggestion_once_the_budget_gate_closes(tmp_path: Path) -> None:
    from deepyard.sweep.journal import set_gate

    journal = tmp_path / "journal.jsonl"
    searcher = JournaledSearcher(SpaceSampler(SPACE, 0, 5, "accuracy", "max"), journal)
    open_gate = [True]
    set_gate(journal, lambda: open_gate[0])
    assert isinstance(searcher.suggest("a"), dict)
    open_gate[0] = False
    assert searcher.suggest("b") == SpaceSampler.FINISHED
    assert [json.loads(line)["trial"] for line in journal.read_text().splitlines()] == ["a"]
