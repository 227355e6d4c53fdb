"""The in-process Python API: ``vadnet.load_model``, ``detect``, ``probabilities`` and
``VADIterator`` (re-exported by the package root, ``import vadnet``).

>>> import vadnet
>>> vadnet.detect("speech.wav")                       # [Segment(start_s=0.29, end_s=3.1, ...)]
>>> vadnet.detect(samples, sample_rate=8000, min_silence_duration_ms=300)
>>> it = vadnet.VADIterator(sample_rate=8000)
>>> for chunk in chunks:
...     for event in it(chunk):                       # SpeechEvent(kind="start", time_s=...)
...         ...
>>> it.finish()                                       # the events left at the end

Whole inputs run the exact offline forward in slices (model/inference.py), streams run the
streaming bank (model/streaming.py); both give the same probabilities (1e-5) and, through
the same segmenter (model/segmenter.py), the same segments. The knobs are Silero VAD's.
"""

from __future__ import annotations

import functools
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .audio import Resampler, check_rate
from .errors import InvalidInputError
from .inference import frame_probs
from .inputs import AudioInput, Samples, mono_samples, segmenter_options, to_audio
from .network import VadNet, weights_key
from .segmenter import Segment, SegmenterOptions, SpeechEvent, StreamingSegmenter, segment_probs
from .streaming import StreamBank

__all__ = ["VADIterator", "detect", "load_model", "probabilities"]


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> VadNet:
    """A vadnet checkpoint, the bundled model by default, in eval mode on ``device``.

    Raises ModelError if the file is missing, unreadable, or not a vadnet checkpoint.
    """
    return checkpoint.load_model(path, device)


@functools.cache
def _bundled() -> VadNet:
    """The bundled model on the CPU, loaded once per process (what ``model=None`` means)."""
    return checkpoint.load_model()


def probabilities(
    audio: AudioInput, sample_rate: int | None = None, model: VadNet | None = None
) -> np.ndarray:
    """P(speech) per 16 ms frame: ``audio`` (a path, an encoded file's bytes, or mono samples
    at ``sample_rate``, 16 kHz by default) -> (ceil(n16 / 256),) float32, where ``n16`` is
    its length at 16 kHz. Frame ``k`` covers ``[k * 0.016, (k + 1) * 0.016)`` s."""
    return frame_probs(
        model if model is not None else _bundled(), to_audio(audio, sample_rate).samples
    )


def detect(
    audio: AudioInput,
    sample_rate: int | None = None,
    model: VadNet | None = None,
    options: SegmenterOptions | dict | None = None,
    **knobs: Any,
) -> list[Segment]:
    """Speech segments of a whole input.

    Args:
        audio: a path (str or Path), an encoded file's bytes (wav/flac/ogg/mp3...), or mono
            samples (numpy array or torch tensor, float in [-1, 1] or int16).
        sample_rate: the samples' rate, 8000..48000 Hz; 16 kHz when left out. Only for
            samples: a file carries its own rate.
        model: a model from :func:`load_model`; the bundled one by default.
        options: segmenter options as a SegmenterOptions or a dict.
        **knobs: Silero VAD's knobs, overriding ``options``: threshold, neg_threshold,
            min_speech_duration_ms, min_silence_duration_ms, speech_pad_ms,
            max_speech_duration_s.

    Returns:
        the segments in order, with times in seconds and sample indices at the input's
        own rate.

    Raises:
        InvalidInputError: unreadable or empty audio, a bad rate, shape or dtype, or a
            bad knob (the message says which and what to use).
    """
    opts = segmenter_options(options, **knobs)  # before decoding: a bad knob fails fast
    net = model if model is not None else _bundled()
    decoded = to_audio(audio, sample_rate)
    probs = frame_probs(net, decoded.samples)
    return segment_probs(probs, opts, net.hop_s, decoded.input_rate_hz, decoded.num_input_samples)


# One stream bank per model, shared by its VADIterators, each in a slot of its own. Why not
# a bank per iterator: building one traces its step (~0.3 s) and the traced graphs are not
# freed (RSS grew ~6.5 MB per StreamingVAD built); a slot costs ~11 ms and nothing stays.
_BANKS: weakref.WeakKeyDictionary[VadNet, tuple[tuple, StreamBank]] = weakref.WeakKeyDictionary()
_BANKS_LOCK = threading.Lock()


def _bank_for(model: VadNet) -> StreamBank:
    key = weights_key(model)
    with _BANKS_LOCK:
        cached = _BANKS.get(model)
        if cached is None or cached[0] != key:
            cached = (key, StreamBank(model, next(model.parameters()).device, capacity=4))
            _BANKS[model] = cached
        return cached[1]


class VADIterator:
    """Streaming detection, like Silero VAD's ``VADIterator``: feed chunks of any size,
    get the speech start/end events decided so far.

    >>> it = vadnet.VADIterator(sample_rate=8000, min_silence_duration_ms=300)
    >>> events = [e for chunk in chunks for e in it(chunk)] + it.finish()

    Chunks are resampled to 16 kHz as the server does (exactly, whatever the chunking), so
    the events of a whole stream pair up into the segments :func:`detect` gives for the
    same samples. An event comes out as soon as it is decided: its delay is at most
    ``decision_delay_s`` plus the model's latency (hop plus lookahead).

    One iterator is one stream; use it from one thread at a time (iterators of the same
    model share a bank of stream states, which is thread-safe). ``close()`` (or ``with``)
    frees its slot now; otherwise that happens when it is garbage collected.

    A chunk's step is a few small ops: extra torch threads do not speed it up, and on a busy
    machine they spin against other work (calls 100x slower were seen on 2 shared cores);
    ``torch.set_num_threads(1)`` is what a streaming process wants, as ``vadnet detect`` uses.
    """

    def __init__(
        self,
        model: VadNet | None = None,
        sample_rate: int = 16000,
        options: SegmenterOptions | dict | None = None,
        **knobs: Any,
    ) -> None:
        check_rate(sample_rate)
        self.model = model if model is not None else _bundled()
        self.sample_rate = int(sample_rate)
        self.options = segmenter_options(options, **knobs)
        self._segmenter = StreamingSegmenter(self.options, self.model.hop_s, self.sample_rate)
        self._resampler = Resampler(self.sample_rate)
        self._bank = _bank_for(self.model)
        self._slot = self._bank.open()
        # Frees the slot when the iterator goes away; holds the bank, not the iterator.
        self._release = weakref.finalize(self, self._bank.close, self._slot)
        self.num_samples = 0  # input samples fed so far, at sample_rate
        self._finished = False

    @property
    def decision_delay_s(self) -> float:
        """Upper bound on how long after its instant the segmenter decides an event."""
        return self._segmenter.decision_delay_s

    @property
    def segments(self) -> list[Segment]:
        """The segments whose end has been emitted so far (all of them after finish())."""
        return list(self._segmenter.segments)

    def __call__(self, chunk: Samples) -> list[SpeechEvent]:
        """Next ``chunk`` of mono samples at ``sample_rate`` (numpy or torch, any length) ->
        the events it decides, in order (usually none)."""
        self._check_open()
        x = mono_samples(chunk, "a chunk")
        y = self._resampler(x)
        self.num_samples += x.size
        probs = self._bank.advance([self._slot], [y])[0].probs
        return self._segmenter.push(probs) if probs.size else []

    def finish(self) -> list[SpeechEvent]:
        """End of stream: flush the resampler and the model's lookahead, close an open
        segment, and return the remaining events. Then :meth:`reset` to start another."""
        self._check_open()
        tail = self._resampler(np.zeros(0, np.float32), last=True)
        probs = self._bank.advance([self._slot], [tail], [True])[0].probs
        self._finished = True
        return self._segmenter.push(probs) + self._segmenter.finish(self.num_samples)

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new one at time 0."""
        if not self._release.alive:
            raise InvalidInputError("VADIterator is closed; make a new one")
        self._bank.reset(self._slot)
        self._resampler.reset()
        self._segmenter.reset()
        self.num_samples = 0
        self._finished = False

    def close(self) -> None:
        """Free the stream's state now (idempotent)."""
        self._release()

    def __enter__(self) -> VADIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._release.alive:
            raise InvalidInputError("VADIterator is closed; make a new one")
        if self._finished:
            raise InvalidInputError("stream already finished; reset() to start a new one")
