# Quick start: `make run` and `make test` work on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch: the build this machine carries on disk (see README, "Install").
TORCH := torch==2.14.1 torchaudio==2.11.1

.PHONY: run test lint format protos setup clean docker-test

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

run: $(STAMP)
	$(BIN)/vadnet serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

protos: $(STAMP)
	$(BIN)/python -m vadnet.service.protogen

test: lint
	$(BIN)/python -m pytest -q

# Build the image with podman and check the running container (deploy/ci/docker-test.sh).
# FLAVOR=cpu (~1 GB image, what CI checks) or FLAVOR=cuda (~6 GB, CPU and NVIDIA GPUs).
FLAVOR ?= cpu
docker-test: $(STAMP)
	FLAVOR=$(FLAVOR) nice -n 10 deploy/ci/docker-test.sh

clean:
	rm -rf $(VENV) build *.egg-info
