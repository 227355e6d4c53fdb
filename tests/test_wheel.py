"""``pip wheel .`` builds a wheel that holds the weights and the package, and nothing else;
installed on its own, ``import vadnet`` and ``vadnet.detect`` work from it.

The wheel is built from a copy of exactly what the Dockerfile's build stage copies, so a
file the image's build would miss (the root __init__.py, say) fails here too. Offline:
``--no-build-isolation`` uses this venv's setuptools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from test_deploy_dockerfile import ROOT, _instructions


def _build_context(dest: Path) -> None:
    """Copy what the build stage COPYs (``COPY src... dest`` without --from) into ``dest``."""
    stage = None
    for word, rest in _instructions():
        if word == "FROM":
            stage = rest.split()[-1]
        elif word == "COPY" and stage == "build" and "--from" not in rest:
            *sources, target = rest.split()
            for src in sources:
                path = ROOT / src
                out = dest / (
                    target.rstrip("/")
                    if len(sources) == 1 and not target.endswith("/")
                    else Path(target) / src
                )
                if path.is_dir():
                    shutil.copytree(path, out, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out)


def test_wheel_holds_the_weights_and_the_package_only(tmp_path):
    src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    src.mkdir()
    _build_context(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(dist)],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("vadnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    files = {n for n in names if ".dist-info/" not in n}
    for must in (
        "vadnet/__init__.py",
        "vadnet/model/weights/vadnet.pt",
        "vadnet/model/api.py",
        "vadnet/model/inputs.py",
        "vadnet/model/inference.py",
        "vadnet/model/training/train.py",
        "vadnet/service/api.py",
        "vadnet/service/cli.py",
        "vadnet/v1/vad_pb2.py",
    ):
        assert must in files, must
    # only the package: no tests, benchmarks, docs, deploy files or build leftovers
    assert {n.split("/")[0] for n in files} == {"vadnet"}
    tops = {n.split("/")[1] for n in files if n.count("/") >= 2}
    assert tops == {"model", "service", "v1"}, tops
    assert [n for n in files if n.endswith((".pyc", ".md"))] == []
    assert any(n.endswith("entry_points.txt") for n in names)

    # installed alone (no editable checkout on the path), it detects speech
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    probe = (
        "import vadnet, sys; "
        "print(vadnet.__file__); "
        f"print(len(vadnet.detect({str(ROOT / 'tests/data/speech_en.wav')!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert out[0] == str(site / "vadnet" / "__init__.py")
    assert out[1] == "3"
