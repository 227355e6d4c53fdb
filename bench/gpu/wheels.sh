#!/usr/bin/env bash
# Download the cp312 manylinux wheels that the device machine lacks into .whl/ (gitignored),
# for `run` to carry (see docs/deploy.md, "On a lent GPU"). Needs PyPI; run it here, once.
#
#   bench/gpu/wheels.sh [DEST]        # DEST defaults to .whl
#
# Why these: the device's python3.12 has torch, numpy, grpcio, protobuf, prometheus-client
# and uvloop, but not soundfile (+ cffi, pycparser), soxr, grpcio-health-checking or
# grpcio-reflection. grpcio and protobuf travel too, at the dev venv's versions, because the
# generated stubs in service/gen refuse a runtime older than the grpcio-tools that made them,
# and nobody has read the device's versions yet. Versions follow the dev venv, so the device
# runs what `make test` ran. About 10 MB; the tree that travels must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
PY=${PY:-.venv/bin/python}
# pytest-asyncio: only for the server's own CUDA parity test (tests/test_service_parity.py).
NAMES="soundfile cffi pycparser soxr grpcio grpcio-health-checking grpcio-reflection protobuf
       pytest-asyncio"
pins=$($PY - $NAMES <<'PYEOF'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PYEOF
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two stop the install there
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" $pins
# A fallback, should the device's setuptools fail to build this checkout: its wheel as of
# now (run.sh says so when it uses it; a stale one misses later changes).
rm -rf "$DEST/project"
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$DEST/project" . 2>"$DEST/build.log" ||
  { cat "$DEST/build.log"; exit 1; }
ls -lR "$DEST"
du -sh "$DEST"
