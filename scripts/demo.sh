#!/usr/bin/env bash
# Set up, then run the README demo: a CNN on Fashion-MNIST with DeepSpeed ZeRO-2 on 2 Ray
# workers (embedded local Ray). Extra arguments go to `deepyard run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Not exec: the run's start-up figures count from the deepyard process, after set-up.
.venv/bin/deepyard run jobs/examples/fashion_mnist_cnn.yaml "$@"
