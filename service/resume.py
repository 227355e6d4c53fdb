"""Resumable streams, server side: checkpoints out, resume points in.

A checkpoint says "the segmenter has seen ``frames`` frames; keep the input from
``replay_from_sample`` on". A stream that resumes from it re-runs the net from that
sample with fresh (zero) state and discards every frame before ``frames``. That is exact
because frame ``f`` reads only the ``receptive_field`` 16 kHz samples ending at
``(f + 1) * hop + lookahead`` (the net has no recurrence): if the replay starts no later
than that, frame ``f`` sees exactly what it saw on the first server.

Two more conditions keep the replayed frames on the original grid: the replay starts on
a whole number of hops at 16 kHz, and for other input rates on an input sample that maps
to a whole 16 kHz sample, with a margin for the resampler's filter to settle (soxr's
output is shift-invariant on that grid, apart from its first few ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from vadnet.model.audio import MODEL_RATE_HZ
from vadnet.model.errors import InvalidInputError
from vadnet.model.segmenter import StreamingSegmenter
from vadnet.v1 import vad_pb2 as pb

# Extra replay for a resampled stream: soxr's HQ filter settles within a few ms of the
# start; 0.1 s is ample and costs 1 % more replay.
_RESAMPLER_MARGIN_S = 0.1
_KIND_NAME = {pb.SpeechEvent.SPEECH_START: "start", pb.SpeechEvent.SPEECH_END: "end"}
_KIND = {v: k for k, v in _KIND_NAME.items()}


@dataclass(frozen=True)
class ReplayGrid:
    """Where a stream at ``rate`` may resume, for a model of this hop, lookahead and field."""

    rate: int
    hop: int  # 16 kHz samples per frame
    lookahead: int  # 16 kHz samples
    field: int  # receptive field, 16 kHz samples

    @property
    def period(self) -> int:
        """Input samples between allowed replay starts: the fewest that are a whole number
        of hops at 16 kHz (256 at 16 kHz, 128 at 8 kHz, 3,528 at 44.1 kHz)."""
        return Fraction(self.hop * self.rate, MODEL_RATE_HZ).numerator

    def to_model(self, input_sample: int) -> int:
        """A replay start (on the grid) in 16 kHz samples."""
        return input_sample * MODEL_RATE_HZ // self.rate

    def _latest_start_16k(self, frames: int) -> int:
        """The latest 16 kHz sample a replay may start at for frame ``frames`` to be exact."""
        return (frames + 1) * self.hop + self.lookahead - self.field

    def replay_from(self, frames: int) -> int:
        """The input sample to replay from when the segmenter has seen ``frames`` frames."""
        margin = 0 if self.rate == MODEL_RATE_HZ else round(_RESAMPLER_MARGIN_S * MODEL_RATE_HZ)
        step16 = self.to_model(self.period)
        k = (self._latest_start_16k(frames) - margin) // step16
        return max(0, k) * self.period

    def check(self, replay_from_sample: int, frames: int) -> None:
        """Raise InvalidInputError unless a replay from there gives exact frames."""
        if replay_from_sample < 0 or replay_from_sample % self.period:
            raise InvalidInputError(
                f"resume.replay_from_sample {replay_from_sample} is not a replay point at"
                f" {self.rate} Hz: resume with the checkpoint the server sent, unchanged"
            )
        if self.to_model(replay_from_sample) > max(0, self._latest_start_16k(frames)):
            raise InvalidInputError(
                f"resume.replay_from_sample {replay_from_sample} is too late for frame {frames}:"
                f" replay the last {self.field / MODEL_RATE_HZ:.2f} s of audio before it"
            )


def checkpoint(seg: StreamingSegmenter, grid: ReplayGrid) -> pb.ResumePoint:
    """The ResumePoint of the segmenter's current state."""
    st = seg.state()
    out = pb.ResumePoint(replay_from_sample=grid.replay_from(st["frames"]))
    s = out.segmenter
    s.frames, s.start_decided = st["frames"], st["start_decided"]
    s.last_end_s, s.segments = st["last_end_s"], st["segments"]
    if st["segment_start_frame"] is not None:
        s.segment_start_frame = st["segment_start_frame"]
    if st["silence_start_frame"] is not None:
        s.silence_start_frame = st["silence_start_frame"]
    for first, n in st["splits"]:
        s.splits.add(first_frame=first, frames=n)
    for kind, t in st["pending"]:
        s.pending.add(kind=_KIND[kind], time_s=t)
    if st["open_start"] is not None:
        t, sample = st["open_start"]
        s.open_start.CopyFrom(pb.SpeechEvent(kind=_KIND["start"], time_s=t, sample=sample))
    return out


def restore(seg: StreamingSegmenter, point: pb.ResumePoint, grid: ReplayGrid) -> None:
    """Put ``seg`` in the state of ``point`` after checking the replay start."""
    s = point.segmenter
    grid.check(point.replay_from_sample, s.frames)
    if any(p.kind not in _KIND_NAME for p in s.pending):
        raise InvalidInputError("bad segmenter state: a pending event has no kind")
    seg.restore(
        {
            "frames": s.frames,
            "segment_start_frame": s.segment_start_frame
            if s.HasField("segment_start_frame")
            else None,
            "start_decided": s.start_decided,
            "silence_start_frame": s.silence_start_frame
            if s.HasField("silence_start_frame")
            else None,
            "splits": [(c.first_frame, c.frames) for c in s.splits],
            "last_end_s": s.last_end_s,
            "pending": [(_KIND_NAME[p.kind], p.time_s) for p in s.pending],
            "open_start": (s.open_start.time_s, s.open_start.sample)
            if s.HasField("open_start")
            else None,
            "segments": s.segments,
        }
    )
