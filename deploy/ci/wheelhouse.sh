#!/usr/bin/env bash
# Fill build/wheelhouse with every wheel the image installs: the serving dependencies of
# pyproject.toml (not the [train] extra) at the versions this checkout is tested with, and the
# build stage's setuptools/wheel. The Dockerfile installs from here with --no-index, so the
# image build never talks to PyPI (an air-gapped build).
#
# Usage: [FLAVOR=cpu|cuda] deploy/ci/wheelhouse.sh [DEST]   (default build/wheelhouse)
#   FLAVOR=cpu (default): torch's CPU-only build (TORCH_CPU, default the torch==2.13.0+cpu
#     wheel this machine carries in /opt/wheels). The image is ~1 GB and serves on the CPU.
#     Elsewhere: TORCH_CPU='torch==2.14.1+cpu' PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#   FLAVOR=cuda: the dev venv's torch==2.14.1 with its nvidia-* CUDA libraries (~3 GB of
#     wheels, a ~6 GB image) that serves on the CPU and, with --gpus all, on NVIDIA GPUs.
# DEST is emptied first, so it never holds both torch builds (pip would pick either).
# PIP=... and PY=... choose the pip and python (default: the dev venv's).
set -euo pipefail
cd "$(dirname "$0")/../.."
FLAVOR=${FLAVOR:-cpu}
DEST=${1:-build/wheelhouse}
PIP=${PIP:-.venv/bin/pip}
PY=${PY:-.venv/bin/python}
TORCH_CPU=${TORCH_CPU:-torch==2.13.0+cpu}
case "$FLAVOR" in
    cpu | cuda) ;;
    *) echo "wheelhouse.sh: FLAVOR must be cpu or cuda, not '$FLAVOR'" >&2; exit 2 ;;
esac
rm -rf "$DEST"
mkdir -p "$DEST" build

# The tested versions: what the dev venv holds (the Makefile installs the exact torch build).
# Lines like "pkg @ file://..." and the editable vadnet itself are not constraints; the CPU
# flavour replaces the torch pin with its own build.
"$PIP" freeze --exclude-editable | grep -v ' @ ' | grep -vi '^vadnet=' > build/wheelhouse-constraints.txt
if [ "$FLAVOR" = cpu ]; then
    grep -vi '^torch=' build/wheelhouse-constraints.txt > build/wheelhouse-constraints.tmp
    echo "$TORCH_CPU" >> build/wheelhouse-constraints.tmp
    mv build/wheelhouse-constraints.tmp build/wheelhouse-constraints.txt
fi

# pyproject.toml's [project] dependencies, one per line.
"$PY" - > build/wheelhouse-requirements.txt <<'PYEOF'
import tomllib

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
print("\n".join(deps))
print("setuptools>=68")  # the build stage's backend (pyproject's build-system.requires)
print("wheel")
PYEOF

# --only-binary: the image has no compilers. The host is the image's platform
# (CPython 3.11, glibc >= 2.36, x86_64), so plain `pip download` picks compatible wheels.
"$PIP" download --quiet --only-binary=:all: --dest "$DEST" \
    -r build/wheelhouse-requirements.txt -c build/wheelhouse-constraints.txt
if [ "$FLAVOR" = cpu ] && ls "$DEST" | grep -qi '^nvidia'; then
    echo "wheelhouse.sh: the cpu wheelhouse holds CUDA libraries: is $TORCH_CPU a CPU build?" >&2
    exit 1
fi
echo "wheelhouse ($FLAVOR): $(du -sh "$DEST" | cut -f1), $(ls "$DEST" | grep -i '^torch-')"
