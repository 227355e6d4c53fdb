#!/usr/bin/env bash
# The GPU check in one command (issue 18): setup, parity, model throughput, the server
# under load, and a CPU baseline, written as report.md + results.json.
#
#   bench/gpu/run.sh [--device cuda|cpu] [--quick] [--wheels DIR] [--python PY]
#                    [--budget-s S] [--only parity,model,server] [OUTDIR]
#
# OUTDIR: the argument, else $OUT (the device machine's return folder), else out/gpu.
# On a lent GPU (docs/deploy.md, "On a lent GPU"): `bench/gpu/run.sh`, with .whl carried.
# Here, the rehearsal: `bench/gpu/run.sh --device cpu --quick` (about 2 minutes, 2 cores).
#
# Setup: the carried cp312 wheels (bench/gpu/wheels.sh makes them) and this checkout go
# into a temporary prefix with `pip install --no-deps --no-index` (the device has no
# network), put first on PYTHONPATH; the interpreter's own torch, numpy, uvloop... stay.
set -euo pipefail
start=$SECONDS
ARGS="$*"
cd "$(dirname "$0")/../.."
DEVICE=cuda QUICK="" WHEELS=.whl OUTDIR=${OUT:-} BUDGET="" ONLY=parity,model,server
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python  # the dev checkout; the device has none
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=--quick; shift ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --budget-s) BUDGET=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "bench/gpu/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUTDIR=$1; shift ;;
  esac
done
OUTDIR=${OUTDIR:-out/gpu}
# Whole-run wall budgets: 7 of the device's 8 minutes (a margin for the server's last
# level and the stops); 2.5 of the rehearsal's 3 here.
BUDGET=${BUDGET:-$([ -n "$QUICK" ] && echo 150 || echo 420)}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/run.log") 2>&1
echo "== setup ($(date -u +%FT%TZ)): device $DEVICE ${QUICK:-full}, out $OUTDIR, budget ${BUDGET}s"

PREFIX=$(mktemp -d /tmp/vadnet-gpu.XXXXXX)
trap 'rm -rf "$PREFIX"' EXIT
pyver=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
pipi() { $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$PREFIX" "$@"; }
if compgen -G "$WHEELS/*.whl" >/dev/null && [ "$pyver" = 3.12 ]; then
  pipi "$WHEELS"/*.whl
  echo "installed $(ls "$WHEELS"/*.whl | wc -l) carried wheels from $WHEELS"
else
  echo "no carried cp312 wheels used (python $pyver, $WHEELS): the interpreter's own packages"
fi
# The project itself, built from this checkout without fetching a build backend.
if ! pipi --upgrade --no-build-isolation .; then
  echo "WARNING: building this checkout failed; installing $WHEELS/project/*.whl (made by wheels.sh)"
  pipi "$WHEELS"/project/vadnet-*.whl
fi
export PYTHONPATH=$PREFIX${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
$PY -m pip list 2>/dev/null | grep -iE '^(torch|numpy|grpcio|protobuf|soundfile|soxr|prometheus|uvloop|onnxruntime|pytest|cffi) ' || true
ls "$PREFIX"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: none"
echo "setup took $((SECONDS - start)) s"

rc=0
$PY bench/gpu/run.py --device "$DEVICE" $QUICK --out "$OUTDIR" --only "$ONLY" \
  --budget-s $((BUDGET - (SECONDS - start))) --command "bench/gpu/run.sh $ARGS" || rc=$?
echo "== done in $((SECONDS - start)) s (exit $rc): $OUTDIR/report.md"
exit $rc
