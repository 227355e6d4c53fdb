"""Speech segments from per-frame speech probabilities: a streaming hysteresis segmenter.

The knobs mean what they mean in Silero VAD's ``get_speech_timestamps``/``VADIterator``;
the rules are arranged so that every event can be emitted as soon as it is decided, and
:func:`segment_probs` (offline) is :class:`StreamingSegmenter` fed everything at once, so
both give the same events and segments for any chunking of the probabilities.

Rules (frame ``k`` covers ``[k * hop_s, (k + 1) * hop_s)``; ``M`` = ceil(min_speech / hop),
``S`` = max(1, ceil(min_silence / hop))):

* **Start.** While idle, the first frame with ``p >= threshold`` opens a candidate
  segment at its frame ``s``.
* **Silence run.** Inside a segment, a frame with ``p < neg_threshold`` opens a silence
  run at ``t`` (if none is open); a frame with ``p >= threshold`` cancels it. Frames in
  between (hysteresis band) neither open nor cancel a run.
* **End.** When an open run has lasted ``S`` frames (every frame ``< threshold``), the
  segment ends at the run's first frame ``t``.
* **Min speech.** A segment is kept only if it holds ``>= M`` frames. Its start event is
  emitted once that is certain: when no silence run that could still end it started
  fewer than ``M`` frames after ``s``.
* **Max speech.** A segment may hold at most ``floor((max_speech - 2 * pad) / hop)``
  frames (so that padded it fits in ``max_speech_duration_s``). On reaching it, it is
  split as Silero does: at the longest silence run of more than 98 ms inside it (one
  that ends at least ``M`` frames after its start); the rest after that silence is a
  new candidate segment. Without such a silence it is cut at the current frame.
* **Padding.** A start is moved ``speech_pad_ms`` earlier, but never before 0 nor before
  the previous segment's padded end (so segments never overlap; they may touch). An end
  is moved ``min(speech_pad, gap / 2)`` later, where ``gap`` is the silence known to
  follow it (``S`` frames, the split silence, or 0 at a hard cut), and never past the
  end of the audio. This differs from Silero, which splits short gaps in half after
  the fact; here an end must be final when emitted.
* **End of audio.** :meth:`StreamingSegmenter.finish` closes an open segment at the
  start of its open silence run plus the pad, or at the end of the audio.

Times are ``k * hop_s`` plus or minus pads, rounded to 1 ns; samples are
``round(time_s * input_rate_hz)`` at the input rate.

Decision delay: an event is emitted by the :meth:`~StreamingSegmenter.push` that
delivers the frame deciding it, and never before the stream has passed its instant
(an end is held until a later frame starts at or after it, so that a later ``finish``
never has to clip it). Measured from the event's instant to the end of the last frame
pushed, the delay is at most :attr:`StreamingSegmenter.decision_delay_s`: about
``min_speech + min_silence + pad`` for starts and ``min_silence`` for ends, and about
``max_speech_duration_s`` when splits are on. The model's own latency (hop plus
lookahead) comes on top.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, fields

import numpy as np

from .errors import InvalidInputError

logger = logging.getLogger("vadnet")

# Silero's min_silence_at_max_speech: a silence must be longer than this to split at.
SPLIT_SILENCE_MS = 98
_EPS = 1e-9


@dataclass
class SegmenterOptions:
    """Segmenter knobs, with Silero VAD's names, defaults and meanings."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None -> max(threshold - 0.15, 0.01), as Silero
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_duration_s: float = float("inf")

    @classmethod
    def from_dict(cls, d: SegmenterOptions | dict | None) -> SegmenterOptions:
        """Options from a dict (missing or None values take the defaults); unknown keys
        and bad values raise InvalidInputError."""
        if d is None:
            return cls()
        if isinstance(d, SegmenterOptions):
            d.validate()
            return d
        if not isinstance(d, dict):
            raise InvalidInputError(f"segmenter options must be a dict, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise InvalidInputError(
                f"unknown segmenter option(s) {', '.join(map(str, unknown))}:"
                f" valid ones are {', '.join(names)}"
            )
        opts = cls(**{k: v for k, v in d.items() if v is not None})
        opts.validate()
        return opts

    @property
    def effective_neg_threshold(self) -> float:
        """``neg_threshold``, or Silero's default ``max(threshold - 0.15, 0.01)``."""
        if self.neg_threshold is None:
            return max(self.threshold - 0.15, 0.01)
        return float(self.neg_threshold)

    def validate(self) -> None:
        """Raise InvalidInputError naming the first bad option and what to use instead."""
        _number("threshold", self.threshold, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if self.neg_threshold is not None:
            _number("neg_threshold", self.neg_threshold, lo=0.0, hi=1.0)
            if self.neg_threshold > self.threshold:
                raise InvalidInputError(
                    f"neg_threshold ({self.neg_threshold}) must not exceed threshold"
                    f" ({self.threshold})"
                )
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            value = getattr(self, name)
            _number(name, value, lo=0.0)
            if float(value) != int(value):
                raise InvalidInputError(f"{name} must be a whole number of ms, got {value}")
            setattr(self, name, int(value))
        _number("max_speech_duration_s", self.max_speech_duration_s, lo=0.0, lo_open=True)
        if math.isfinite(self.max_speech_duration_s):
            floor_s = (self.min_speech_duration_ms + 2 * self.speech_pad_ms) / 1000
            if self.max_speech_duration_s <= floor_s:
                raise InvalidInputError(
                    f"max_speech_duration_s ({self.max_speech_duration_s}) must exceed"
                    f" min_speech_duration_ms + 2 * speech_pad_ms ({floor_s:g} s)"
                )


def _number(
    name: str,
    value: object,
    lo: float,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (
            not math.isnan(v)
            and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi)
        )
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise InvalidInputError(f"{name} must be a number in {lb}{lo:g}, {hi:g}{rb}, got {value!r}")


@dataclass
class SpeechEvent:
    """A speech start or end, emitted once decided."""

    kind: str  # "start" | "end"
    time_s: float  # in seconds from the stream start
    sample: int  # the same instant in samples of the INPUT rate
    frame: int  # model frame index (hop 16 ms) where it happens


@dataclass
class Segment:
    """One speech segment, padded; samples are at the input rate."""

    start_s: float
    end_s: float
    start_sample: int
    end_sample: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _ceil_frames(duration_s: float, hop_s: float) -> int:
    return max(0, math.ceil(duration_s / hop_s - _EPS))


class StreamingSegmenter:
    """Speech start/end events from probabilities pushed in any chunks (see module doc)."""

    def __init__(
        self,
        options: SegmenterOptions | dict | None = None,
        hop_s: float = 0.016,
        input_rate_hz: int = 16000,
    ) -> None:
        self.options = SegmenterOptions.from_dict(options)
        if not (isinstance(hop_s, int | float) and math.isfinite(hop_s) and hop_s > 0):
            raise InvalidInputError(f"hop_s must be a positive number of seconds, got {hop_s!r}")
        if isinstance(input_rate_hz, bool) or not isinstance(input_rate_hz, int | np.integer):
            raise InvalidInputError(f"input_rate_hz must be an integer, got {input_rate_hz!r}")
        if input_rate_hz <= 0:
            raise InvalidInputError(f"input_rate_hz must be positive, got {input_rate_hz}")
        o = self.options
        self.hop_s = float(hop_s)
        self.input_rate_hz = int(input_rate_hz)
        self._thr = float(o.threshold)
        self._neg = o.effective_neg_threshold
        self._pad_s = o.speech_pad_ms / 1000
        self._min_speech = _ceil_frames(o.min_speech_duration_ms / 1000, self.hop_s)
        self._min_silence = max(1, _ceil_frames(o.min_silence_duration_ms / 1000, self.hop_s))
        # A silence qualifies as a split point if it lasts more than 98 ms.
        self._split_silence = math.floor(SPLIT_SILENCE_MS / 1000 / self.hop_s + _EPS) + 1
        self._max_frames: int | None = None
        max_frames = (o.max_speech_duration_s - 2 * self._pad_s) / self.hop_s + _EPS
        # A finite limit beyond what a float counts (1e308 s) never splits anything: it is
        # "unlimited" too (found by bench/fuzz.py: math.floor(inf) raised OverflowError).
        if math.isfinite(max_frames):
            self._max_frames = math.floor(max_frames)
            if self._max_frames < max(1, self._min_speech):
                raise InvalidInputError(
                    f"max_speech_duration_s ({o.max_speech_duration_s}) leaves room for"
                    f" {self._max_frames} frames of {self.hop_s * 1000:g} ms after padding,"
                    f" fewer than min_speech_duration_ms needs: raise it"
                )
        self.reset()

    # --- public ----------------------------------------------------------------------
    @property
    def decision_delay_s(self) -> float:
        """Upper bound on (end of the last pushed frame) - (event instant) when emitted."""
        hop, m, s = self.hop_s, self._min_speech, self._min_silence
        start = (m + s - 1 if m >= 2 else 1) * hop + self._pad_s
        end_pad = min(self._pad_s, s * hop / 2)
        end = (max(s - 1, _ceil_frames(end_pad, hop)) + 1) * hop - end_pad
        delay = max(start, end)
        if self._max_frames is not None:
            delay = max(delay, (self._max_frames + max(m, 1) + s) * hop + self._pad_s)
        return round(delay, 9)

    @property
    def frames_pushed(self) -> int:
        return self._n

    @property
    def segment_count(self) -> int:
        """Segments finished so far, those before a :meth:`restore` included."""
        return self._segments_before + len(self.segments)

    def state(self) -> dict:
        """What :meth:`restore` needs to go on from here, as plain values (a stream
        resumed on another server sends it back). ``segments`` is only a count."""
        ev = self._open_event
        return {
            "frames": self._n,
            "segment_start_frame": self._start,
            "start_decided": self._confirmed,
            "silence_start_frame": self._run,
            "splits": [tuple(c) for c in self._splits],
            "last_end_s": self._last_end_s,
            "pending": [tuple(q) for q in self._queue],
            "open_start": None if ev is None else (ev.time_s, ev.sample),
            "segments": self.segment_count,
        }

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` taken elsewhere (``segments`` holds only the count
        of segments before it). A state that no segmenter could have reached raises
        InvalidInputError: it comes from a client."""
        try:
            n, start, run = (
                int(state["frames"]),
                state["segment_start_frame"],
                state["silence_start_frame"],
            )
            start = None if start is None else int(start)
            run = None if run is None else int(run)
            splits = [(int(a), int(b)) for a, b in state["splits"]]
            pending = [(str(k), float(t)) for k, t in state["pending"]]
            last_end = float(state["last_end_s"])
            opened = state["open_start"]
            opened = None if opened is None else (float(opened[0]), int(opened[1]))
            count = int(state["segments"])
            decided = bool(state["start_decided"])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInputError(f"bad segmenter state: {e}") from e
        end = self._time(n) + self._pad_s + _EPS
        ok = (
            n >= 0
            and count >= 0
            and (start is None or 0 <= start <= n)
            and (run is None or (start is not None and start <= run <= n))
            and all(start is not None and start <= a and b > 0 and a + b <= n for a, b in splits)
            and all(k in ("start", "end") and 0 <= t <= end for k, t in pending)
            and math.isfinite(last_end)
            and 0 <= last_end <= end
            and (opened is None or (0 <= opened[0] <= end and opened[1] >= 0))
        )
        if not ok:
            raise InvalidInputError(
                "bad segmenter state: resume with the checkpoint the server sent, unchanged"
            )
        self.reset()
        self._n, self._start, self._confirmed, self._run = n, start, decided, run
        self._splits, self._last_end_s = splits, last_end
        self._queue.extend(pending)
        if opened is not None:
            t, sample = opened
            self._open_event = SpeechEvent("start", t, sample, math.floor(t / self.hop_s + _EPS))
        self._segments_before = count

    def reset(self) -> None:
        """Start over at frame 0 with no segments."""
        self.segments: list[Segment] = []
        self._n = 0  # frames pushed
        self._start: int | None = None  # first frame of the open segment
        self._confirmed = False  # its start event is decided (queued or emitted)
        self._run: int | None = None  # first frame of the open silence run
        self._splits: list[tuple[int, int]] = []  # (first frame, length) of >98 ms silences
        self._last_end_s = 0.0  # padded end of the last kept segment
        self._queue: deque[tuple[str, float]] = deque()  # decided, not yet emitted
        self._out: list[SpeechEvent] = []  # emitted, not yet returned
        self._open_event: SpeechEvent | None = None  # emitted start of the open segment
        self._segments_before = 0  # segments finished before a restore()
        self._finished = False

    def push(self, probs: np.ndarray) -> list[SpeechEvent]:
        """(n,) speech probabilities in [0, 1] of the next n frames (n may be 0) ->
        the events they decide, in order."""
        if self._finished:
            raise InvalidInputError("segmenter already finished; reset() it to start again")
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 1:
            raise InvalidInputError(f"probabilities must be 1-D (frames,), got shape {p.shape}")
        # NaN fails both comparisons, so this also rejects NaN (and +-Inf).
        if p.size and not (p.min() >= 0.0 and p.max() <= 1.0):
            raise InvalidInputError("probabilities must be finite and in [0, 1]")
        # Frame by frame only where something can change. Two states change nothing for
        # long runs of frames, and are jumped over with numpy: idle with nothing queued
        # (until a frame >= threshold), and inside a decided segment with no silence run
        # and nothing queued (until a frame < neg_threshold or the max-speech split). A
        # 590 s Detect of real speech stepped all 36,875 frames in GIL-holding Python,
        # beside live streams on the same server (bench/detect_priority.py); now 4,225.
        above = np.flatnonzero(p >= self._thr)
        quiet = np.flatnonzero(p < self._neg)
        values = p.tolist()
        i, n = 0, len(values)
        while i < n:
            if not self._queue and self._run is None and (self._start is None or self._confirmed):
                if self._start is None:
                    k = int(np.searchsorted(above, i))
                    nxt = int(above[k]) if k < above.size else n
                else:
                    k = int(np.searchsorted(quiet, i))
                    nxt = int(quiet[k]) if k < quiet.size else n
                    if self._max_frames is not None:  # the split happens at this frame
                        nxt = min(nxt, max(i, self._start + self._max_frames - self._n + i))
                if nxt > i:
                    self._n += nxt - i
                    i = nxt
                    continue
            self._step(self._n, values[i])
            self._n += 1
            i += 1
            self._release(self._time(self._n - 1))
        return self._take()

    def finish(self, num_input_samples: int) -> list[SpeechEvent]:
        """End of audio (``num_input_samples`` at the input rate): close an open segment
        at min(end + pad, audio end) and return the remaining events."""
        if self._finished:
            raise InvalidInputError("segmenter already finished; reset() it to start again")
        if isinstance(num_input_samples, bool) or not isinstance(
            num_input_samples, int | np.integer
        ):
            raise InvalidInputError(
                f"num_input_samples must be an integer, got {num_input_samples!r}"
            )
        if num_input_samples < 0:
            raise InvalidInputError(f"num_input_samples must be >= 0, got {num_input_samples}")
        audio_end_s = num_input_samples / self.input_rate_hz
        if self._n and audio_end_s <= (self._n - 1) * self.hop_s + _EPS:
            # frame n-1 exists only if the audio reaches into it
            raise InvalidInputError(
                f"num_input_samples ({num_input_samples} at {self.input_rate_hz} Hz) ends"
                f" before the last of the {self._n} frames pushed; pass the input's length"
            )
        self._finished = True
        if self._start is not None:
            if self._run is not None:
                self._close(self._run, self._pad_s)
            else:
                self._close(self._n, 0.0, end_s=audio_end_s)
        self._release(math.inf, audio_end_s)
        return self._take()

    # --- frame logic -----------------------------------------------------------------
    def _time(self, frame: int) -> float:
        return round(frame * self.hop_s, 9)

    def _step(self, j: int, p: float) -> None:
        if self._start is None:
            if p >= self._thr:
                self._begin(j)
        else:
            if p >= self._thr:
                if self._run is not None:
                    if j - self._run >= self._split_silence:
                        self._splits.append((self._run, j - self._run))
                    self._run = None
            elif p < self._neg and self._run is None:
                self._run = j
            if self._run is not None and p < self._thr and j + 1 - self._run >= self._min_silence:
                self._close(self._run, min(self._pad_s, self._min_silence * self.hop_s / 2))
            elif self._max_frames is not None and j - self._start >= self._max_frames:
                self._split(j, p)
        self._confirm(j)

    def _begin(self, s: int) -> None:
        self._start, self._confirmed, self._run, self._splits = s, False, None, []

    def _confirm(self, j: int) -> None:
        if self._start is None or self._confirmed:
            return
        lower_bound = self._run if self._run is not None else j + 1  # earliest possible end
        if lower_bound - self._start >= self._min_speech:
            self._confirm_now()

    def _close(self, end: int, pad_s: float, end_s: float | None = None) -> None:
        """End the open segment at frame ``end`` (+ ``pad_s``), or at ``end_s`` if given."""
        assert self._start is not None
        if self._confirmed or end - self._start >= self._min_speech:
            if not self._confirmed:
                self._confirm_now()
            t = end_s if end_s is not None else end * self.hop_s + pad_s
            self._last_end_s = round(t, 9)
            self._queue.append(("end", self._last_end_s))
        self._start, self._confirmed, self._run, self._splits = None, False, None, []

    def _confirm_now(self) -> None:
        """Queue the open segment's start: padded, but not before 0 or the last end."""
        assert self._start is not None
        self._confirmed = True
        t = max(self._start * self.hop_s - self._pad_s, self._last_end_s, 0.0)
        self._queue.append(("start", round(t, 9)))

    def _split(self, j: int, p: float) -> None:
        """The open segment reached max_speech at frame ``j``: split it, as Silero does."""
        assert self._start is not None
        s = self._start
        candidates = [c for c in self._splits if c[0] - s >= self._min_speech]
        if self._run is not None and j + 1 - self._run >= self._split_silence:
            if self._run - s >= self._min_speech:
                candidates.append((self._run, j + 1 - self._run))
        if not candidates:  # hard cut at j, then frame j starts afresh
            self._close(j, 0.0)
            if p >= self._thr:
                self._begin(j)
            return
        t, d = max(candidates, key=lambda c: c[1])
        run, later = self._run, [c for c in self._splits if c[0] > t + d]
        self._close(t, min(self._pad_s, d * self.hop_s / 2))
        if run is not None and run == t:
            return  # split at the open silence: idle until speech comes back
        self._begin(t + d)  # the frame that ended that silence was speech
        self._run, self._splits = run, later

    # --- output ----------------------------------------------------------------------
    def _release(self, upto_s: float, audio_end_s: float = math.inf) -> None:
        """Emit queued events whose instant the stream has passed (all at the end)."""
        while self._queue and self._queue[0][1] <= upto_s + _EPS:
            kind, t = self._queue.popleft()
            t = min(t, audio_end_s)
            sample = round(t * self.input_rate_hz)
            ev = SpeechEvent(kind, t, sample, math.floor(t / self.hop_s + _EPS))
            self._out.append(ev)
            if kind == "start":
                self._open_event = ev
            else:
                start = self._open_event
                assert start is not None
                self.segments.append(Segment(start.time_s, t, start.sample, sample))
                self._open_event = None

    def _take(self) -> list[SpeechEvent]:
        out, self._out = self._out, []
        return out


def segment_probs(
    probs: np.ndarray,
    options: SegmenterOptions | dict | None = None,
    hop_s: float = 0.016,
    input_rate_hz: int = 16000,
    num_input_samples: int | None = None,
) -> list[Segment]:
    """(frames,) speech probabilities -> speech segments; offline form of
    :class:`StreamingSegmenter` (push all, finish). ``num_input_samples`` defaults to
    ``round(frames * hop_s * input_rate_hz)``."""
    seg = StreamingSegmenter(options, hop_s, input_rate_hz)
    seg.push(probs)
    if num_input_samples is None:
        num_input_samples = round(seg.frames_pushed * hop_s * input_rate_hz)
    seg.finish(num_input_samples)
    return seg.segments
