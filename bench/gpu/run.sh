#!/usr/bin/env bash
# The GPU check, as one command for the offline GPU machine (docs/benchmarks.md): installs
# the carried wheels (.whl, from ../shared/tools/gpu-wheels.sh), then runs gpt2_check.py,
# which writes $OUT/gpt2_check.json and one log per leg, and prints its table last.
# Carry .whl and bench/out/gpu-corpus (bench/gpu/corpus.py). Extra arguments go to
# gpt2_check.py (e.g. --smoke --corpus DIR on a CPU machine, where no .whl is needed).
# PYTHON: the interpreter (default python3, the one with torch on the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python3}
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
if [ -d .whl ] && ! $PY -c "import ray, deepspeed, pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH || {
    echo "run.sh: installing the wheels in .whl failed (see above)" >&2
    exit 2
  }
else
  echo "run.sh: using the installed ray, deepspeed and pydantic (or none: gpt2_check says)" >&2
fi
export PYTHONPATH=$PWD/platform${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
# Within the device tool's 600 s, counted from this script's start: gpt2_check.py starts no leg past its
# budget and writes its JSON after every leg; `timeout` is the backstop.
budget=$((530 - SECONDS))
timeout -k 15 -s INT $((budget + 40)) $PY bench/gpu/gpt2_check.py --out "$OUT" \
  --budget-s "$budget" "$@" 2>&1 | tee "$OUT/gpt2_check.log"
