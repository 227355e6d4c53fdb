# vadnet gRPC server, in two flavours that differ only in the torch build the wheelhouse holds:
#   cpu  (~1.3 GB): torch's CPU-only wheel; serves on the CPU.
#   cuda (~6 GB):   PyPI's torch wheel with its own CUDA libraries; serves on the CPU and, with
#                   `--gpus all`, on NVIDIA GPUs (the host only needs the NVIDIA driver).
#
# Python packages come only from build/wheelhouse, made on the host with `pip download`
# (deploy/ci/wheelhouse.sh): the build needs no PyPI access and no certificate authorities.
#   deploy/ci/wheelhouse.sh && podman build --format docker -t vadnet:0.1.0 .
#   FLAVOR=cuda deploy/ci/wheelhouse.sh && podman build --format docker -t vadnet:0.1.0-cuda .
# `make docker-test` (deploy/ci/docker-test.sh) builds it and checks the running container.
ARG BASE_IMAGE=debian:bookworm-slim

# Debian's Python 3.11 and the unprivileged user, shared by both stages (one apt run).
FROM ${BASE_IMAGE} AS python
# Versions are Debian bookworm's: pinning them would break the build at every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 vadnet \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/vadnet \
        --shell /usr/sbin/nologin vadnet

# Stage 1: the vadnet wheel, with the bundled model (model/weights/*.pt) as package data.
# The root __init__.py is the `vadnet` package itself (the Python API, `import vadnet`).
FROM python AS build
WORKDIR /src
COPY pyproject.toml README.md __init__.py ./
COPY model ./model
COPY service ./service
# setuptools/wheel versions are pinned by the wheelhouse, which holds exactly one of each.
# hadolint ignore=DL3013
RUN --mount=type=bind,source=build/wheelhouse,target=/wheelhouse \
    python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        "setuptools>=68" wheel \
    && /opt/build/bin/pip wheel --no-cache-dir --no-index --no-deps --no-build-isolation \
        --wheel-dir /dist .

# Stage 2: the runtime, with only what serving needs (torchaudio, librosa... are vadnet[train]).
FROM python
COPY --from=build /dist /tmp/dist
# The wheelhouse is bind-mounted, not copied, so its wheels (~3 GB for cuda) stay out of the layers.
RUN --mount=type=bind,source=build/wheelhouse,target=/wheelhouse \
    python3 -m venv /opt/vadnet \
    && /opt/vadnet/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        /tmp/dist/*.whl \
    && rm -rf /tmp/dist
# Listen on all interfaces inside the container; every flag of `vadnet serve` has a
# VADNET_* variable (docs/service.md). NVIDIA_* tell the NVIDIA container runtime to mount
# the driver when the container runs with --gpus (ignored otherwise).
ENV PATH=/opt/vadnet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VADNET_HOST=0.0.0.0 \
    VADNET_PORT=50051 \
    VADNET_METRICS_PORT=9090 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="vadnet" \
      org.opencontainers.image.description="Voice-activity detection gRPC server" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /home/vadnet
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
EXPOSE 50051 9090
# Through sh so that a changed VADNET_PORT is followed; `vadnet health` does not import torch.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "vadnet health --server \"localhost:${VADNET_PORT}\" --timeout 4"]
# SIGTERM drains: health NOT_SERVING, no new streams, open streams get --drain-grace-s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vadnet", "serve"]
