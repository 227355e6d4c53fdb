#!/usr/bin/env bash
# `make docker-test`: build the image from /Dockerfile and check the running container.
#
# This machine has no Docker engine and no registry, so: podman (runc, chroot isolation,
# cgroupfs) with a private store under a temporary directory; the base image
# debian:bookworm-slim made with debootstrap from the apt mirror (the rootfs tarball is cached
# in ~/.cache/vadnet between runs); Python packages from a wheelhouse filled on the host
# (deploy/ci/wheelhouse.sh), installed with --no-index. Then the container is run for real:
# health SERVING, a real file streamed through it equals `vadnet detect` on the host,
# /metrics counts the stream, and a rolling replacement: SIGTERM (podman stop) drains an open
# stream and exits 0, a new container takes the address, the stream resumes on it unchanged.
# The container and the store are removed on exit, whatever failed.
#
# Environment: FLAVOR (cpu, the default, or cuda: which torch build the image carries, see
# deploy/ci/wheelhouse.sh), IMAGE (default localhost/vadnet:ci-FLAVOR), STORAGE_DRIVER (overlay; vfs also works),
# DEBIAN_MIRROR (default: the first URIs of the host's apt sources), KEEP_STORE=DIR (keep the
# image in DIR instead of a temporary store), VADNET_CACHE (default ~/.cache/vadnet),
# BUILD_ISOLATION (the podman build isolations to try in turn; default "chroot chroot oci").
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
FLAVOR=${FLAVOR:-cpu}
IMAGE=${IMAGE:-localhost/vadnet:ci-$FLAVOR}
BASE=debian:bookworm-slim
DRIVER=${STORAGE_DRIVER:-overlay}
CACHE=${VADNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vadnet}
AUDIO=tests/data/speech_en.wav
NAME=vadnet-ci-$$
WORK=$(mktemp -d /var/tmp/vadnet-docker-test.XXXXXX)
STORE=${KEEP_STORE:-$WORK/store}
CLIENT_PID=
T0=$SECONDS

step() { printf '\n== [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { echo "docker-test: FAIL: $*" >&2; exit 1; }

for tool in podman runc debootstrap iptables; do
    command -v "$tool" >/dev/null || fail "$tool missing: apt-get install -y podman buildah runc debootstrap iptables"
done

# The defaults ask for more nofile/nproc than this machine's hard limits allow
# ("setrlimit ... Operation not permitted"); crun fails here on hybrid cgroups, runc works.
NOFILE=$(ulimit -Hn)
cat > "$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
pm() { podman --root "$STORE/root" --runroot "$WORK/runroot" --storage-driver "$DRIVER" "$@"; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$CLIENT_PID" ] && kill -0 "$CLIENT_PID" 2>/dev/null; then kill "$CLIENT_PID"; fi
    if pm container exists "$NAME" 2>/dev/null; then
        [ "$rc" -ne 0 ] && { echo "--- container log"; pm logs "$NAME" 2>&1 | tail -40; }
        pm rm -f -t 0 "$NAME" >/dev/null 2>&1
    fi
    if [ -z "${KEEP_STORE:-}" ]; then
        pm rm -a -f >/dev/null 2>&1
        pm rmi -a -f >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    printf '\n== docker-test %s after %d s\n' "$([ "$rc" -eq 0 ] && echo PASSED || echo FAILED)" \
        "$((SECONDS - T0))"
    exit "$rc"
}
trap cleanup EXIT INT TERM

# Peak disk use: the image's layer exists three times while podman commits it (the
# container's upper dir, an uncompressed blob in /var/tmp, the stored layer), on top of the
# wheelhouse. Measured here (free space sampled every second, 2026-11-29): 1.7 GB for cpu,
# 25 GB for cuda. A CI machine once ran out of space at the cuda commit with an obscure
# ENOSPC, so say it up front instead.
case "$FLAVOR" in
    cpu) NEED_GB=4 ;;
    cuda) NEED_GB=28 ;;
    *) fail "FLAVOR must be cpu or cuda, not '$FLAVOR'" ;;
esac
FREE_GB=$(df -P -BG /var/tmp | awk 'NR == 2 {print int($4)}')
echo "flavor $FLAVOR; ${FREE_GB} GB free in /var/tmp, ~${NEED_GB} GB needed"
[ "$FREE_GB" -ge "$NEED_GB" ] || fail "only ${FREE_GB} GB free in /var/tmp; the $FLAVOR image build needs ~${NEED_GB} GB"

step "base image $BASE"
ROOTFS_TAR=$CACHE/debian-bookworm-minbase.tar
if [ ! -s "$ROOTFS_TAR" ]; then
    MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
    MIRROR=${MIRROR:-$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
    [ -n "$MIRROR" ] || fail "no Debian mirror found in the apt sources: set DEBIAN_MIRROR"
    echo "debootstrap --variant=minbase bookworm from $MIRROR"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    rm -rf "$WORK/rootfs/var/cache/apt/archives"/*.deb "$WORK/rootfs/var/lib/apt/lists"/*
    tar -C "$WORK/rootfs" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$WORK/rootfs"
else
    echo "cached: $ROOTFS_TAR"
fi
pm import -q "$ROOTFS_TAR" "localhost/$BASE" >/dev/null
pm tag "localhost/$BASE" "docker.io/library/$BASE"

step "wheelhouse (serving dependencies only, torch for $FLAVOR)"
FLAVOR=$FLAVOR deploy/ci/wheelhouse.sh build/wheelhouse

step "podman build $IMAGE"
# A CI machine once failed the first RUN step before it ran anything: buildah's chroot
# isolation re-executes itself from a sealed memfd copy, and the kernel refused the seal
# ("Close_Fd sealing memfd copy: Device or resource busy"). That is the build tool's
# environment, not the Dockerfile, so each isolation in BUILD_ISOLATION is tried in turn,
# chroot twice (the refusal can be transient), then runc's (oci); a Dockerfile error fails
# all of them and the last log is shown.
ISOLATIONS=${BUILD_ISOLATION:-chroot chroot oci}
build_ok=
for isolation in $ISOLATIONS; do
    echo "podman build --isolation $isolation"
    if pm build --pull=never --isolation "$isolation" --format docker --layers=false \
        -t "$IMAGE" -f Dockerfile . > "$WORK/build.log" 2>&1; then
        build_ok=1
        break
    fi
    grep -v '^Copying blob\|^Writing manifest\|^Storing signatures' "$WORK/build.log" | tail -15
    echo "podman build --isolation $isolation failed"
    sleep 5
done
[ -n "$build_ok" ] || fail "podman build failed with every isolation in '$ISOLATIONS'"
grep '^\[[0-9]/[0-9]\] STEP\|^STEP\|^COMMIT' "$WORK/build.log" | cut -c1-160
SIZE=$(pm image inspect --format '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $SIZE bytes ($((SIZE / 1000000)) MB)"
BUILD_S=$((SECONDS - T0))

step "run the container"
read -r GRPC_PORT METRICS_PORT < <("$VENV_BIN/python" - <<'EOF'
import socket

socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
# --read-only: what Kubernetes' readOnlyRootFilesystem gives (podman adds a tmpfs /tmp).
# Without systemd podman cannot schedule the HEALTHCHECK timer and says so (harmless: the
# check is run below with `podman healthcheck run`); its stderr is shown only on failure.
# runc re-executes itself from a sealed copy too (see the build above): a refused start is
# retried once, after removing what it left.
start_container() {
    local try
    for try in 1 2; do
        if pm run -d --name "$NAME" --read-only \
            -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$METRICS_PORT:9090" \
            -e VADNET_DEVICE=cpu -e VADNET_DRAIN_GRACE_S=4 "$IMAGE" > /dev/null 2> "$WORK/run.err"; then
            return 0
        fi
        echo "podman run (try $try): $(tail -3 "$WORK/run.err")"
        pm rm -f -t 0 "$NAME" > /dev/null 2>&1 || true
        sleep 5
    done
    fail "podman run: $(cat "$WORK/run.err")"
}
start_container
SERVER=127.0.0.1:$GRPC_PORT

step "wait for vadnet health: SERVING on $SERVER"
for _ in $(seq 1 180); do
    [ "$(pm inspect --format '{{.State.Running}}' "$NAME")" = true ] || fail "container exited"
    if "$VENV_BIN/vadnet" health --server "$SERVER" --timeout 2 2>/dev/null | grep -x SERVING >/dev/null; then
        break
    fi
    sleep 1
done
"$VENV_BIN/vadnet" health --server "$SERVER" | grep -x SERVING >/dev/null || fail "never SERVING"
pm exec "$NAME" id -u | grep -x 10001 >/dev/null || fail "not running as uid 10001"
# The image's own HEALTHCHECK (vadnet health inside the container).
pm healthcheck run "$NAME" || fail "HEALTHCHECK failed"
echo "SERVING; HEALTHCHECK healthy; uid 10001"

# Idle memory of one CPU replica (PID 1 is `vadnet serve`), before any stream: serving
# imports no training code (tests/test_serving_imports.py); the bound catches a regression.
IDLE_RSS_KB=$(pm exec "$NAME" grep VmRSS /proc/1/status | tr -dc '0-9')
[ -n "$IDLE_RSS_KB" ] || fail "could not read the server's RSS"
echo "idle RSS of the server: $((IDLE_RSS_KB / 1024)) MB"
[ "$IDLE_RSS_KB" -lt 614400 ] || fail "idle RSS $((IDLE_RSS_KB / 1024)) MB is over 600 MB"

step "stream $AUDIO through the container, compare with vadnet detect on the host"
"$VENV_BIN/vadnet" stream "$AUDIO" --server "$SERVER" --format json > "$WORK/stream.json" \
    2> "$WORK/stream.err" || fail "vadnet stream: $(tail -3 "$WORK/stream.err")"
"$VENV_BIN/vadnet" detect "$AUDIO" --format json > "$WORK/detect.json"
diff "$WORK/detect.json" "$WORK/stream.json" || fail "streamed segments differ from vadnet detect"
echo "segments equal: $(tr -d '\n' < "$WORK/detect.json" | cut -c1-120)"
# Segments can be empty with an untrained model: compare the probabilities too.
"$VENV_BIN/vadnet" stream "$AUDIO" --server "$SERVER" --probs > "$WORK/stream.probs"
"$VENV_BIN/vadnet" detect "$AUDIO" --probs > "$WORK/detect.probs"
"$VENV_BIN/python" - "$WORK/stream.probs" "$WORK/detect.probs" <<'EOF'
import json
import sys

streamed = {}
for line in open(sys.argv[1]):
    kind, *rest = line.split("\t")
    if kind == "probs":
        first = int(rest[0])
        for i, v in enumerate(rest[1].split()):
            streamed[first + i] = float(v)
offline = json.load(open(sys.argv[2]))["probs"]
assert len(streamed) == len(offline) > 0, (len(streamed), len(offline))
worst = max(abs(streamed[i] - p) for i, p in enumerate(offline))
assert worst <= 6e-4, f"streamed probabilities differ from vadnet detect by {worst}"
print(f"{len(offline)} frame probabilities equal (printed to 3 decimals; max diff {worst:.1e})")
EOF

metric() {
    "$VENV_BIN/python" -c '
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
m = re.search("^" + sys.argv[2] + r" (\S+)$", text, re.M)
print(int(float(m.group(1))) if m else "missing")' "http://127.0.0.1:$METRICS_PORT/metrics" "$1"
}
[ "$(metric vadnet_streams_total)" = 2 ] || fail "metrics: vadnet_streams_total $(metric vadnet_streams_total), expected 2"
echo "metrics: vadnet_streams_total 2"

step "Detect through the container (its low-priority worker process), compare with vadnet detect"
"$VENV_BIN/python" - "$SERVER" "$AUDIO" "$WORK/detect.json" <<'EOF' || fail "Detect through the container"
import json
import sys

import vadnet

got = vadnet.Client(sys.argv[1]).detect(sys.argv[2], timeout=60)
want = json.load(open(sys.argv[3]))
pairs = [(s.start_sample, s.end_sample) for s in got]
assert pairs == [(s["start_sample"], s["end_sample"]) for s in want], (pairs, want)
print(f"Detect: {len(pairs)} segments, equal to vadnet detect")
EOF
pm logs "$NAME" > "$WORK/container.log" 2>&1
grep -q 'Detect worker process [0-9]* started' "$WORK/container.log" \
    || fail "no Detect worker process in the container log: $(tail -5 "$WORK/container.log")"

step "rolling replacement: SIGTERM drains an open stream, which resumes on the new container"
# What a deploy does: the old replica drains (the stream is cut UNAVAILABLE with a
# checkpoint, never a silent OK), exits 0, and a new one takes its address. The client resumes
# from its last checkpoint by itself and must end with exactly `vadnet detect`'s segments.
# --retries 20 (~35 s of backoff) covers the gap while the new container starts.
"$VENV_BIN/vadnet" stream "$AUDIO" --server "$SERVER" --realtime --chunk-ms 100 \
    --format json --retries 20 > "$WORK/drain.json" 2> "$WORK/drain.err" &
CLIENT_PID=$!
for _ in $(seq 1 100); do
    [ "$(metric vadnet_active_streams)" = 1 ] && break
    sleep 0.1
done
[ "$(metric vadnet_active_streams)" = 1 ] || fail "the real-time stream never opened"
pm stop -t 60 "$NAME" >/dev/null  # STOPSIGNAL SIGTERM, SIGKILL only after 60 s
EXIT=$(pm inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$EXIT" = 0 ] || fail "container exit code $EXIT"
pm logs "$NAME" > "$WORK/container.log" 2>&1
grep -q 'draining' "$WORK/container.log" || fail "no drain in the container log"
grep -q 'resume this stream on another replica' "$WORK/container.log" \
    || fail "the open stream was not cut with a checkpoint: $(tail -5 "$WORK/container.log")"
kill -0 "$CLIENT_PID" 2>/dev/null || fail "the client gave up at the drain: $(cat "$WORK/drain.err")"
pm rm -f -t 0 "$NAME" >/dev/null
start_container
wait "$CLIENT_PID" || fail "the stream did not resume on the new container: $(cat "$WORK/drain.err")"
CLIENT_PID=
diff "$WORK/detect.json" "$WORK/drain.json" || fail "segments after the failover differ from vadnet detect"
# To a file first: under pipefail, `pm logs | grep -q` fails whenever grep exits on its
# match before pm has written everything (SIGPIPE), which is what failed here once.
pm logs "$NAME" > "$WORK/container2.log" 2>&1
grep -q 'resumed from its checkpoint' "$WORK/container2.log" \
    || fail "the new container logged no resumed stream: $(tail -5 "$WORK/container2.log")"
echo "drained (exit 0), resumed on the new container: segments equal vadnet detect"

step "summary"
echo "image size: $SIZE bytes ($((SIZE / 1000000)) MB); idle RSS $((IDLE_RSS_KB / 1024)) MB; build $BUILD_S s; total $((SECONDS - T0)) s"
