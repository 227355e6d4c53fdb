"""Audio input: decode raw PCM, G.711 and container files, downmix, resample to 16 kHz.

Everything a user can get wrong here raises :class:`InvalidInputError` with one readable
line (chained to the library error underneath): a missing or undecodable file, empty
audio, NaN/Inf samples, a sample rate outside 8..48 kHz, a byte count that is not a
whole number of samples, an unknown encoding.

Resampling is exact under streaming: :class:`Resampler` wraps ``soxr.ResampleStream``,
whose output for any chunking of the input (1-sample chunks included) is bit-identical
to feeding the whole signal at once; ``tests/test_audio.py`` pins that property.
:func:`resample_to_model_rate` is that same stream fed once with ``last=True``, so the
server's streamed path and the offline ``vadnet detect`` path see the same samples.

Output length rule: ``n`` input samples at ``r`` Hz give ``floor(n * 16000 / r + 1/2)``
samples at 16 kHz (the whole stream, after ``last=True``); 16 kHz input passes through
unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import InvalidInputError, ResourceExhaustedError

logger = logging.getLogger("vadnet")

ENCODINGS = ("LINEAR16", "FLOAT32", "MULAW", "ALAW")
MIN_RATE_HZ, MAX_RATE_HZ = 8000, 48000
MODEL_RATE_HZ = 16000

_SAMPLE_BYTES = {"LINEAR16": 2, "FLOAT32": 4, "MULAW": 1, "ALAW": 1}
# Container decoding goes this many samples (all channels) at a time: 4 MB of float32.
_BLOCK_SAMPLES = 1 << 20
_MAX_CHANNELS = 64  # more is a crafted header, not a recording we could downmix usefully
# No codec packs more samples (per channel) per byte than this: FLAC's densest frame (a
# constant subframe of 65535 samples) takes >= 12 bytes, ~5,500 samples a byte; Opus and
# Vorbis silence stay under ~3,000. A header claiming more is corrupt or crafted (e.g. a
# FLAC of 1 MB claiming 2^36 samples, 65,000 a byte).
_MAX_FRAMES_PER_BYTE = 1 << 14
_UNKNOWN_FRAMES = (1 << 63) - 1  # libsndfile's frame count when a header leaves it open
# "HQ" is soxr's default: 20-bit precision, far below what the net can hear.
_SOXR_QUALITY = "HQ"


# --- raw PCM ---------------------------------------------------------------------------
def _mulaw_table() -> np.ndarray:
    """ITU-T G.711 mu-law byte -> linear value in [-1, 1] (16-bit scale / 32768)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(u & 0x80, -magnitude, magnitude) / 32768.0).astype(np.float32)


def _alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law byte -> linear value in [-1, 1] (16-bit scale / 32768)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    # A-law's sign bit is set for positive values.
    return (np.where(a & 0x80, magnitude, -magnitude) / 32768.0).astype(np.float32)


_MULAW = _mulaw_table()
_ALAW = _alaw_table()


def check_rate(sample_rate_hz: int) -> None:
    """Raise InvalidInputError unless ``sample_rate_hz`` is an integer in 8000..48000."""
    if (
        isinstance(sample_rate_hz, bool)
        or not isinstance(sample_rate_hz, int | np.integer)
        or not MIN_RATE_HZ <= sample_rate_hz <= MAX_RATE_HZ
    ):
        raise InvalidInputError(
            f"sample rate {sample_rate_hz!r} Hz is not supported:"
            f" use an integer rate from {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz"
        )


def check_finite(x: np.ndarray) -> None:
    """Raise InvalidInputError if ``x`` holds NaN or Inf."""
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise InvalidInputError(f"audio contains {bad} NaN/Inf samples: send finite values")


def _check_encoding(encoding: str) -> str:
    enc = encoding.upper() if isinstance(encoding, str) else encoding
    if enc not in _SAMPLE_BYTES:
        raise InvalidInputError(
            f"unknown audio encoding {encoding!r}: use one of {', '.join(ENCODINGS)}"
        )
    return enc


def decode_pcm(data: bytes, encoding: str, sample_rate_hz: int) -> np.ndarray:
    """Raw headerless bytes -> (n,) float32 mono at ``sample_rate_hz``, in [-1, 1].

    ``encoding`` is one of :data:`ENCODINGS` (case-insensitive): LINEAR16 is signed 16-bit
    little-endian, FLOAT32 is IEEE float little-endian (values beyond +-1 are clipped),
    MULAW/ALAW are one G.711 byte per sample. Empty bytes give an empty array.
    """
    enc = _check_encoding(encoding)
    check_rate(sample_rate_hz)
    size = _SAMPLE_BYTES[enc]
    if len(data) % size:
        raise InvalidInputError(
            f"odd byte count: {len(data)} bytes is not a whole number of {enc} samples"
            f" ({size} bytes each); send complete samples"
        )
    if enc == "LINEAR16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    if enc == "FLOAT32":
        x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        check_finite(x)
        # Clip rather than reject: float sources often overshoot +-1 by a hair.
        return np.clip(x, -1.0, 1.0)
    table = _MULAW if enc == "MULAW" else _ALAW
    return table[np.frombuffer(data, dtype=np.uint8)]


# --- resampling ------------------------------------------------------------------------
def resampled_length(num_samples: int, in_rate_hz: int) -> int:
    """Samples at 16 kHz that ``num_samples`` at ``in_rate_hz`` resample to:
    ``floor(num_samples * 16000 / in_rate_hz + 1/2)``."""
    return (2 * num_samples * MODEL_RATE_HZ + in_rate_hz) // (2 * in_rate_hz)


class Resampler:
    """Streaming resampler from ``in_rate_hz`` to 16 kHz; the filter state lives here.

    The concatenated outputs of any sequence of calls (the last with ``last=True``) equal
    :func:`resample_to_model_rate` of the concatenated inputs, sample for sample.
    """

    def __init__(self, in_rate_hz: int) -> None:
        check_rate(in_rate_hz)
        self.in_rate_hz = int(in_rate_hz)
        self._stream: soxr.ResampleStream | None = None
        self._done = False
        self.reset()

    @property
    def identity(self) -> bool:
        return self.in_rate_hz == MODEL_RATE_HZ

    def reset(self) -> None:
        """Forget all input: the next call starts a new signal."""
        self._done = False
        if not self.identity:
            self._stream = soxr.ResampleStream(
                self.in_rate_hz, MODEL_RATE_HZ, 1, dtype="float32", quality=_SOXR_QUALITY
            )

    def __call__(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        """(n,) float32 at ``in_rate_hz`` -> (m,) float32 at 16 kHz, what is ready so far.

        With ``last=True`` the filter's tail is flushed; call :meth:`reset` to reuse.
        16 kHz input is returned as is (same values, no filtering).
        """
        if self._done:
            raise InvalidInputError("resampler already flushed with last=True; reset() it")
        x = np.asarray(x)
        if x.ndim != 1:
            raise InvalidInputError(f"expected 1-D mono samples, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._done = bool(last)
        if self.identity:
            return x
        assert self._stream is not None
        return self._stream.resample_chunk(x, last=bool(last))


def resample_to_model_rate(x: np.ndarray, in_rate_hz: int) -> np.ndarray:
    """(n,) float32 at ``in_rate_hz`` -> (floor(n * 16000 / in_rate_hz + 1/2),) float32 at
    16 kHz; the same computation as streaming through :class:`Resampler`."""
    return Resampler(in_rate_hz)(x, last=True)


# --- whole files -----------------------------------------------------------------------
@dataclass
class Audio:
    """Decoded audio ready for the model."""

    samples: np.ndarray  # (n,) float32 mono at 16 kHz
    input_rate_hz: int
    num_input_samples: int  # length at the input rate (per channel)

    @property
    def duration_s(self) -> float:
        """Duration of the input, from its own sample count and rate."""
        return self.num_input_samples / self.input_rate_hz


def _mono(x: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32: channels averaged (in float64, then rounded
    once), the one downmix of every reader, so a file gives the same samples whichever
    path reads it."""
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64) if x.shape[1] > 1 else x[:, 0]
    return np.asarray(x, dtype=np.float32)


def audio_from_samples(x: np.ndarray, rate: int, name: str) -> Audio:
    """(n,) or (n, channels) float at ``rate`` -> Audio (checked, downmixed, resampled)."""
    x = _mono(x)
    if x.size == 0:
        raise InvalidInputError(f"{name} contains no audio samples")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{name} contains NaN/Inf samples")
    try:
        check_rate(int(rate))
    except InvalidInputError as e:
        raise InvalidInputError(f"{name}: {e}") from e
    return Audio(resample_to_model_rate(x, int(rate)), int(rate), int(x.shape[0]))


@functools.cache
def _fallback_available() -> bool:
    """Whether librosa/audioread could read more than libsndfile: only with a decoder
    backend beyond audioread's stdlib WAV/AIFF reader (ffmpeg, GStreamer, MAD...).
    Checked so that a garbage file does not pay seconds of importing librosa."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # its aifc/audioop imports
            import audioread
            import audioread.rawread
    except ImportError:
        return False
    return any(b is not audioread.rawread.RawAudioFile for b in audioread.available_backends())


def _read_with_librosa(path: Path, name: str) -> tuple[np.ndarray, int]:
    """Fallback for what libsndfile cannot read (librosa tries audioread/ffmpeg)."""
    unsupported = f"cannot decode audio from {name}: not a supported audio file"
    if not _fallback_available():
        raise InvalidInputError(unsupported)
    try:
        import librosa  # optional ("train" extra): only needed for exotic formats
    except ImportError as e:
        raise InvalidInputError(unsupported) from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception as e:  # audioread and its backends raise many unrelated types
        raise InvalidInputError(unsupported) from e
    # librosa gives (channels, n) for multichannel; we use (n, channels)
    return (x.T if x.ndim == 2 else x), int(rate)


def _read(source: str | Path | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    try:
        x, rate = sf.read(source, dtype="float32", always_2d=True)
        return x, int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        logger.debug("soundfile cannot read %s (%s); trying librosa", name, e)
        first_error = e
    if isinstance(source, io.BytesIO):
        # audioread needs a real file
        with tempfile.NamedTemporaryFile(suffix=".audio") as f:
            f.write(source.getvalue())
            f.flush()
            try:
                return _read_with_librosa(Path(f.name), name)
            except InvalidInputError as e:
                raise e from first_error
    try:
        return _read_with_librosa(Path(source), name)
    except InvalidInputError as e:
        raise e from first_error


def read_samples(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples at its own rate: (n,) float32 mono (channels averaged) and the rate.
    The one reader behind ``load_audio`` and the streaming client, so that a streamed file
    reaches the server as exactly the samples ``vadnet detect`` sees."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"audio file not found: {path}")
    if not path.is_file():
        raise InvalidInputError(f"not a regular file: {path}")
    x, rate = _read(path, str(path))
    return _mono(x), rate


def load_audio(path: str | Path) -> Audio:
    """Read any file soundfile reads (wav/flac/ogg/mp3...; others via librosa/audioread),
    downmix channels by their mean and resample to 16 kHz."""
    path = Path(path)
    x, rate = read_samples(path)
    audio = audio_from_samples(x, rate, str(path))
    logger.debug("loaded %s: %s samples at %s Hz", path, audio.num_input_samples, rate)
    return audio


def _limit_error(
    duration_s: float, max_duration_s: float, more: bool = False
) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"clip is {'more than ' if more else ''}{duration_s:.1f} s, over this server's {max_duration_s:g} s limit"
        " for Detect: split it or use StreamingDetect"
    )


def _check_header(
    f: sf.SoundFile, size_bytes: int, max_duration_s: float | None, name: str
) -> None:
    """Judge a container by its header alone, before any sample is decoded."""
    try:
        check_rate(int(f.samplerate))
    except InvalidInputError as e:
        raise InvalidInputError(f"{name}: {e}") from e
    if not 1 <= f.channels <= _MAX_CHANNELS:
        raise InvalidInputError(f"{name} has {f.channels} channels: send 1 to {_MAX_CHANNELS}")
    if f.frames == _UNKNOWN_FRAMES:
        return  # a streamed encoding (e.g. FLAC with total_samples 0): the decode counts
    if f.frames < 0 or f.frames > max(size_bytes, 1) * _MAX_FRAMES_PER_BYTE:
        raise InvalidInputError(
            f"{name}: its header claims {f.frames} samples, impossible in {size_bytes} bytes;"
            " the file is corrupt or crafted"
        )
    if max_duration_s is not None and f.frames / f.samplerate > max_duration_s:
        raise _limit_error(f.frames / f.samplerate, max_duration_s)


def _decode_blocks(f: sf.SoundFile, max_duration_s: float | None, name: str) -> Audio:
    """Decode ``f`` block by block (downmix -> check -> stream-resample each), so memory is
    the 16 kHz output plus one block: O(limit), never O(what the header claims). Equal,
    sample for sample, to decoding the whole file and resampling it at once."""
    rate = int(f.samplerate)
    resampler = Resampler(rate)
    limit = None if max_duration_s is None else int(max_duration_s * rate)
    block = max(1, _BLOCK_SAMPLES // f.channels)
    out, total = [], 0
    while True:
        x = f.read(block, dtype="float32", always_2d=True)
        if x.shape[0] == 0:
            break
        x = _mono(x)
        if not np.all(np.isfinite(x)):
            raise InvalidInputError(f"{name} contains NaN/Inf samples")
        total += x.shape[0]
        if limit is not None and total > limit:  # a header that understated its length
            raise _limit_error(limit / rate, max_duration_s, more=True)
        out.append(resampler(x))
    if total == 0:
        raise InvalidInputError(f"{name} contains no audio samples")
    out.append(resampler(np.zeros(0, np.float32), last=True))
    return Audio(np.concatenate(out), rate, total)


@contextlib.contextmanager
def _open_in_memory(data: bytes) -> Iterator[sf.SoundFile]:
    """libsndfile on bytes. Through an anonymous in-memory file (Linux memfd) when there
    is one: libsndfile then reads it in C, where a BytesIO would call back into Python,
    taking the GIL, for every read while it decodes."""
    if not hasattr(os, "memfd_create"):
        with sf.SoundFile(io.BytesIO(bytes(data))) as f:
            yield f
        return
    fd = os.memfd_create("vadnet-upload", os.MFD_CLOEXEC)
    try:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        os.lseek(fd, 0, os.SEEK_SET)
        with sf.SoundFile(fd, closefd=False) as f:
            yield f
    finally:
        os.close(fd)


def load_audio_bytes(data: bytes, max_duration_s: float | None = None) -> Audio:
    """A whole container file (wav/flac/ogg/...) held in memory -> Audio.

    The header is read first: a rate out of range, an impossible sample count
    (InvalidInputError) or a duration over ``max_duration_s`` (ResourceExhaustedError)
    is refused before any sample is decoded; then the file is decoded in bounded blocks.
    """
    if not data:
        raise InvalidInputError("the audio file is empty (0 bytes)")
    name = "the uploaded file"
    opened = False
    try:
        with _open_in_memory(data) as f:
            opened = True
            _check_header(f, len(data), max_duration_s, name)
            return _decode_blocks(f, max_duration_s, name)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        if isinstance(e, InvalidInputError):
            raise
        if opened:  # a broken stream inside a good header: no second, unbounded decode
            raise InvalidInputError(f"cannot decode audio from {name}: {e}") from e
        first_error = e
    logger.debug("soundfile cannot read %s (%s); trying librosa", name, first_error)
    # Formats libsndfile lacks (only with an ffmpeg-like backend installed): a whole-file
    # decode, so the limit is checked after it.
    x, rate = _read(io.BytesIO(bytes(data)), name)
    audio = audio_from_samples(x, rate, name)
    if max_duration_s is not None and audio.duration_s > max_duration_s:
        raise _limit_error(audio.duration_s, max_duration_s) from first_error
    return audio


def decode_audio(
    data: bytes, encoding: str, sample_rate_hz: int, max_duration_s: float | None = None
) -> Audio:
    """Raw headerless bytes (see :func:`decode_pcm`) -> Audio; empty audio is an error.
    A duration over ``max_duration_s`` (from the byte count) is refused before decoding."""
    enc = _check_encoding(encoding)
    check_rate(sample_rate_hz)
    duration_s = len(data) / _SAMPLE_BYTES[enc] / sample_rate_hz
    if max_duration_s is not None and duration_s > max_duration_s:
        raise _limit_error(duration_s, max_duration_s)
    x = decode_pcm(data, enc, sample_rate_hz)
    if x.size == 0:
        raise InvalidInputError("the audio contains no samples")
    return Audio(resample_to_model_rate(x, sample_rate_hz), int(sample_rate_hz), int(x.size))
