#!/usr/bin/env bash
# Set up deepyard on a fresh machine: system data package, a .venv with pinned versions.
# Idempotent and quick when nothing changed. Used by scripts/demo.sh, scripts/test.sh, CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

# Fashion-MNIST ships as a Debian package (the demo job's data).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "setup: installing Debian package dataset-fashion-mnist" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
fi

stamp="$VENV/.deepyard-setup"
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup: creating $VENV with pinned dependencies (first time takes a few minutes)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# torch first and pinned (a CPU build here; an unpinned torch pulls a multi-GB CUDA build),
# then DeepSpeed as pure Python (DS_BUILD_OPS=0: no kernels compiled at install time).
"$VENV/bin/pip" install -q -c constraints.txt torch
DS_BUILD_OPS=0 "$VENV/bin/pip" install -q -c constraints.txt -e ".[dev]"
echo "$want" >"$stamp"
echo "setup: done ($VENV)" >&2
