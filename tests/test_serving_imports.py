"""An idle server loads only what serving needs: no training pipeline, no plotting, no
training-only libraries (they cost memory on every replica; issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import asyncio, json, sys
from vadnet.service import cli  # the CLI's module, as `vadnet serve` imports it
from vadnet.service.config import ServerConfig
from vadnet.service.server import create_server

async def main():
    server, _ = await create_server(ServerConfig(port=0, metrics_port=0))
    await server.stop(0)

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""
# Libraries of the "train" extra; tqdm is left out because torch.hub imports it when present.
TRAINING_ONLY = ("matplotlib", "scipy", "librosa", "sklearn", "torchaudio", "onnx", "onnxruntime")


def test_idle_server_imports_no_training_code():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=240, check=True
    )
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "vadnet.service.servicer" in modules  # the probe did start a server
    assert [m for m in modules if m.startswith("vadnet.model.training")] == []
    assert sorted({m.split(".")[0] for m in modules} & set(TRAINING_ONLY)) == []
