"""Checkpoints: weights plus the config that built them, so a file is self-describing.

The bundled model lives in ``model/weights/vadnet.pt`` inside the package, so detection
works right after install with nothing downloaded.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import ModelError
from .network import ModelConfig, VadNet

logger = logging.getLogger("vadnet")

FORMAT_VERSION = 1


def bundled_path() -> Path:
    """Path of the weights shipped in the package."""
    return Path(str(resources.files("vadnet.model") / "weights" / "vadnet.pt"))


def save_checkpoint(path: str | Path, model: VadNet, **extra: Any) -> None:
    """Write weights, config and ``extra`` (optimizer state, metrics...) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        **extra,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict; raises ModelError with the reason if unreadable."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ModelError(f"checkpoint not found: {path}") from e
    except Exception as e:  # torch raises many types for corrupt files
        raise ModelError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise ModelError(f"{path} is not a vadnet checkpoint (no config/state_dict)")
    return blob


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> VadNet:
    """Load a checkpoint (the bundled one by default) in eval mode."""
    path = bundled_path() if path is None else Path(path)
    blob = read_checkpoint(path)
    try:
        model = VadNet(ModelConfig.from_dict(blob["config"]))
        model.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"checkpoint {path} does not match this vadnet version: {e}") from e
    logger.debug("loaded %s (%s parameters)", path, model.num_parameters())
    return model.eval().to(device)


def model_version(path: str | Path | None = None) -> str:
    """A short version string of a checkpoint: its ``version`` field or 'unversioned'."""
    blob = read_checkpoint(bundled_path() if path is None else path)
    return str(blob.get("version", "unversioned"))


def weights_version(date: str, model: VadNet) -> str:
    """``DATE+DIGEST``: the training date and the first 8 hex digits of a SHA-256 over the
    weights (parameters and buffers, in state_dict order). Why the digest: two models
    trained the same day had the same version, and ModelInfo.version is how a client
    tells which weights answered it."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"{date.split('+')[0]}+{h.hexdigest()[:8]}"
