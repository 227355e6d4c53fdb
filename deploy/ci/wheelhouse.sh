#!/usr/bin/env bash
# Fill build/wheelhouse with every wheel the image installs: the serving dependencies of
# pyproject.toml (not the [train] extra) at the versions this checkout is tested with, and the
# build stage's setuptools/wheel. The Dockerfile installs from here with --no-index, so the
# image build never talks to PyPI (an air-gapped build).
#
# Usage: deploy/ci/wheelhouse.sh [DEST]   (default build/wheelhouse; PIP=... to choose the pip)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-build/wheelhouse}
PIP=${PIP:-.venv/bin/pip}
PY=${PY:-.venv/bin/python}
mkdir -p "$DEST" build

# The tested versions: what the dev venv holds (the Makefile installs the exact torch build).
# Lines like "pkg @ file://..." and the editable vadnet itself are not constraints.
"$PIP" freeze --exclude-editable | grep -v ' @ ' | grep -vi '^vadnet=' > build/wheelhouse-constraints.txt

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
du -sh "$DEST" | awk '{print "wheelhouse: " $1}'
