"""What the Python API takes as audio: a path, an encoded file's bytes, or samples.

One place for the rules, shared by the local API (``vadnet.detect``, ``vadnet.VADIterator``)
and the gRPC client (``vadnet.Client``), so that both accept and refuse the same inputs
with the same messages:

* a path (``str`` or ``os.PathLike``) or ``bytes`` is an encoded file (wav/flac/ogg...):
  it carries its own rate, so ``sample_rate`` must be left out;
* a numpy array or torch tensor is mono samples, shape ``(n,)`` (or ``(1, n)``/``(n, 1)``),
  float in [-1, 1] or int16; its rate is ``sample_rate``, 16 kHz when left out (as in
  Silero VAD), any integer from 8 to 48 kHz.

This module imports neither torch nor grpc: a tensor is recognised only if torch is
already imported (a tensor cannot exist otherwise).
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .audio import (
    MODEL_RATE_HZ,
    Audio,
    audio_from_samples,
    check_rate,
    load_audio,
    load_audio_bytes,
)
from .errors import InvalidInputError
from .segmenter import SegmenterOptions

if TYPE_CHECKING:
    import torch

#: Everything ``vadnet.detect`` and ``vadnet.Client.detect`` take as ``audio``.
AudioInput: TypeAlias = "str | os.PathLike[str] | bytes | np.ndarray | torch.Tensor"
#: One chunk of a stream: samples at the stream's rate.
Samples: TypeAlias = "np.ndarray | torch.Tensor"

_FILE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview)


def is_encoded_file(audio: object) -> bool:
    """Whether ``audio`` is a path or an encoded file's bytes (not samples)."""
    return isinstance(audio, _FILE_TYPES)


def is_samples(audio: object) -> bool:
    """Whether ``audio`` is a numpy array or a torch tensor (of samples)."""
    torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
    return isinstance(audio, np.ndarray) or (torch is not None and isinstance(audio, torch.Tensor))


def samples_rate(sample_rate: int | None) -> int:
    """The rate of an array input: ``sample_rate``, or 16 kHz when it is None."""
    rate = MODEL_RATE_HZ if sample_rate is None else sample_rate
    try:
        check_rate(rate)
    except InvalidInputError as e:
        raise InvalidInputError(
            f"{e} (samples are taken as 16 kHz unless sample_rate says otherwise)"
        ) from e
    return int(rate)


def reject_rate_for_file(sample_rate: int | None) -> None:
    """A file carries its own rate: a ``sample_rate`` given with one is a mistake."""
    if sample_rate is not None:
        raise InvalidInputError(
            f"sample_rate={sample_rate!r} applies to arrays only: a file or its bytes carries"
            " its own rate; leave sample_rate out"
        )


def _to_numpy(x: Any) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # numpy has no bfloat16; every float dtype becomes float32 below anyway
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def mono_samples(x: Samples, what: str = "audio") -> np.ndarray:
    """Samples (numpy or torch, ``(n,)``, ``(1, n)`` or ``(n, 1)``; float in [-1, 1] or
    int16) -> (n,) float32, checked finite."""
    try:
        a = _to_numpy(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidInputError(
            f"{what} must be a path, bytes, or a numpy array / torch tensor of samples,"
            f" got {type(x).__name__}"
        ) from e
    if a.dtype.kind not in "biuf":  # strings, objects...: not samples at all
        raise InvalidInputError(
            f"{what} must be a path, bytes, or a numpy array / torch tensor of samples,"
            f" got {type(x).__name__}"
        )
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise InvalidInputError(
            f"{what} must be mono samples of shape (n,), got shape {tuple(a.shape)}:"
            " downmix channels first (e.g. x.mean(axis=channel_axis))"
        )
    if a.dtype == np.int16:
        a = a.astype(np.float32) / np.float32(32768.0)
    elif not np.issubdtype(a.dtype, np.floating):
        raise InvalidInputError(
            f"{what} must be float samples in [-1, 1] or int16, got dtype {a.dtype}"
        )
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.all(np.isfinite(a)):
        raise InvalidInputError(f"{what} contains NaN/Inf samples: send finite values")
    return a


def to_audio(audio: AudioInput, sample_rate: int | None = None) -> Audio:
    """Any :data:`AudioInput` -> :class:`~vadnet.model.audio.Audio` (16 kHz samples plus
    the input's rate and length, which segment sample indices are counted in)."""
    if isinstance(audio, str | os.PathLike):
        reject_rate_for_file(sample_rate)
        return load_audio(Path(audio))
    if isinstance(audio, bytes | bytearray | memoryview):
        reject_rate_for_file(sample_rate)
        return load_audio_bytes(bytes(audio))
    return audio_from_samples(mono_samples(audio), samples_rate(sample_rate), "the audio array")


def segmenter_options(
    options: SegmenterOptions | dict | None = None, **knobs: Any
) -> SegmenterOptions:
    """Options from a SegmenterOptions or a dict (faster-whisper style), overridden by
    keyword knobs (Silero style); unknown names and bad values raise InvalidInputError."""
    base = SegmenterOptions.from_dict(options)
    if not knobs:
        return base
    return SegmenterOptions.from_dict({**asdict(base), **knobs})
