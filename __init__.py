"""vadnet: voice-activity detection, in process or from the gRPC service.

>>> import vadnet
>>> vadnet.detect("speech.wav")                   # [Segment(start_s=..., end_s=..., ...)]
>>> vadnet.probabilities(samples, sample_rate=8000)  # P(speech) per 16 ms frame
>>> it = vadnet.VADIterator(sample_rate=8000)     # streaming: it(chunk) -> events
>>> with vadnet.Client("localhost:50051") as c:   # the service: detect, stream, health
...     c.detect("speech.wav")

This file is the package root (the repository root installs as ``vadnet``); its names are
imported on first use, so ``import vadnet`` stays cheap and ``vadnet health`` or a gRPC-only
client never pays for torch, nor the local API for grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model.api import VADIterator, detect, load_model, probabilities
    from .model.errors import InvalidInputError, ModelError, VadnetError
    from .model.segmenter import Segment, SegmenterOptions, SpeechEvent
    from .service.api import AsyncClient, Client
    from .service.client import TlsOptions

_EXPORTS = {
    "load_model": "vadnet.model.api",
    "detect": "vadnet.model.api",
    "probabilities": "vadnet.model.api",
    "VADIterator": "vadnet.model.api",
    "Segment": "vadnet.model.segmenter",
    "SpeechEvent": "vadnet.model.segmenter",
    "SegmenterOptions": "vadnet.model.segmenter",
    "VadnetError": "vadnet.model.errors",
    "InvalidInputError": "vadnet.model.errors",
    "ModelError": "vadnet.model.errors",
    "Client": "vadnet.service.api",
    "AsyncClient": "vadnet.service.api",
    "TlsOptions": "vadnet.service.client",
}
__all__ = [  # what _EXPORTS serves, spelled out for linters and type checkers
    "AsyncClient",
    "Client",
    "InvalidInputError",
    "ModelError",
    "Segment",
    "SegmenterOptions",
    "SpeechEvent",
    "TlsOptions",
    "VADIterator",
    "VadnetError",
    "detect",
    "load_model",
    "probabilities",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vadnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
