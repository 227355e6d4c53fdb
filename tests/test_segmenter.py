"""model/segmenter.py on hand-made probability sequences, and model/formats.py.

Most cases use hop_s = 0.01 so that frame k starts at k / 100 s and the expected times
can be read off the sequence; defaults then mean M = 25 frames of min speech, S = 10
frames of min silence, 30 ms pads.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from silero_vad.utils_vad import get_speech_timestamps_from_probs

from vadnet.model.errors import InvalidInputError
from vadnet.model.formats import format_segments
from vadnet.model.segmenter import (
    Segment,
    SegmenterOptions,
    SpeechEvent,
    StreamingSegmenter,
    segment_probs,
)

HOP = 0.01
SPEECH, SIL, BAND = 0.9, 0.0, 0.4  # BAND lies between neg_threshold (0.35) and threshold


def seq(*parts: tuple[float, int]) -> np.ndarray:
    """seq((0.9, 30), (0.0, 10)) -> 30 frames of 0.9 then 10 of 0.0."""
    return np.concatenate([np.full(n, p) for p, n in parts]) if parts else np.zeros(0)


def spans(probs, num_input_samples=None, **opts) -> list[tuple[float, float]]:
    segs = segment_probs(probs, opts, hop_s=HOP, num_input_samples=num_input_samples)
    return [(s.start_s, s.end_s) for s in segs]


def push_one_by_one(probs, opts=None, hop=HOP, rate=16000, n_samples=None):
    """Events with the index of the frame whose push emitted them (-1: finish)."""
    seg = StreamingSegmenter(opts, hop, rate)
    out = []
    for j, p in enumerate(probs):
        out += [(j, e) for e in seg.push(np.array([p]))]
    n_samples = round(len(probs) * hop * rate) if n_samples is None else n_samples
    out += [(-1, e) for e in seg.finish(n_samples)]
    return out, seg


# --- the rules, one by one --------------------------------------------------------------
def test_basic_segment_and_when_events_are_emitted():
    p = seq((SIL, 50), (SPEECH, 40), (SIL, 50))
    assert spans(p) == [(0.47, 0.93)]
    out, seg = push_one_by_one(p)
    # start certain after 25 frames of speech (frame 74); end after 10 silent frames (99)
    assert [(j, e.kind, e.time_s) for j, e in out] == [(74, "start", 0.47), (99, "end", 0.93)]
    assert out[0][1] == SpeechEvent("start", 0.47, 7520, 47)
    assert seg.segments == [Segment(0.47, 0.93, 7520, 14880)]


def test_threshold_is_inclusive():
    assert spans(seq((SIL, 10), (0.5, 30), (SIL, 20))) == [(0.07, 0.43)]
    assert spans(seq((SIL, 10), (0.4999, 30), (SIL, 20))) == []
    assert spans(seq((SIL, 10), (0.8, 30), (SIL, 20)), threshold=0.8) == [(0.07, 0.43)]
    assert spans(seq((SIL, 10), (0.79, 30), (SIL, 20)), threshold=0.8) == []


def test_hysteresis_band():
    # frames between neg_threshold and threshold neither start nor end speech...
    assert spans(seq((SIL, 10), (BAND, 50), (SIL, 20))) == []
    p = seq((SIL, 10), (SPEECH, 30), (BAND, 30), (SIL, 20))
    assert spans(p) == [(0.07, 0.73)]  # ends where the first frame below 0.35 is
    # ...but once a frame falls below neg_threshold, band frames count as silence
    p = seq((SIL, 10), (SPEECH, 30), (0.1, 3), (BAND, 7), (SIL, 30))
    assert spans(p) == [(0.07, 0.43)]
    # with neg_threshold above the band, the band is silence
    assert spans(seq((SIL, 10), (SPEECH, 30), (BAND, 30), (SIL, 20)), neg_threshold=0.45) == [
        (0.07, 0.43)
    ]


def test_min_speech():
    assert spans(seq((SIL, 30), (SPEECH, 24), (SIL, 30))) == []
    assert spans(seq((SIL, 30), (SPEECH, 25), (SIL, 30))) == [(0.27, 0.58)]
    assert spans(seq((SIL, 30), (SPEECH, 5), (SIL, 30)), min_speech_duration_ms=50) == [
        (0.27, 0.38)
    ]
    assert spans(seq((SIL, 30), (SPEECH, 1), (SIL, 30)), min_speech_duration_ms=0) == [(0.27, 0.34)]


def test_min_silence():
    one = seq((SIL, 20), (SPEECH, 30), (SIL, 9), (SPEECH, 30), (SIL, 30))
    assert spans(one) == [(0.17, 0.92)]
    two = seq((SIL, 20), (SPEECH, 30), (SIL, 10), (SPEECH, 30), (SIL, 30))
    assert spans(two) == [(0.17, 0.53), (0.57, 0.93)]
    assert spans(two, min_silence_duration_ms=110) == [(0.17, 0.93)]


def test_padding_never_overlaps_or_leaves_the_audio():
    # end pad = min(pad, min_silence / 2) = 50 ms; the next start stops at that end
    p = seq((SIL, 20), (SPEECH, 30), (SIL, 15), (SPEECH, 30), (SIL, 30))
    assert spans(p, speech_pad_ms=200) == [(0.0, 0.55), (0.55, 1.0)]
    assert spans(p, speech_pad_ms=0) == [(0.2, 0.5), (0.65, 0.95)]
    # speech from the first frame: the start pad stops at 0
    assert spans(seq((SPEECH, 30), (SIL, 30))) == [(0.0, 0.33)]
    # an open silence at the end of the audio: end + pad, cut at the audio end
    p = seq((SIL, 20), (SPEECH, 30), (SIL, 8))
    assert spans(p) == [(0.17, 0.53)]
    assert spans(p, speech_pad_ms=200) == [(0.0, 0.58)]
    assert spans(p, num_input_samples=9200, speech_pad_ms=200) == [(0.0, 0.575)]


def test_speech_at_start_and_end_and_all_speech():
    assert spans(seq((SPEECH, 40))) == [(0.0, 0.4)]
    segs = segment_probs(seq((SPEECH, 40)), hop_s=HOP, num_input_samples=6390)
    assert segs == [Segment(0.0, 0.399375, 0, 6390)]
    assert spans(seq((SIL, 30), (SPEECH, 40))) == [(0.27, 0.7)]
    assert spans(seq((SIL, 30), (SPEECH, 20))) == []  # too short even at the end
    assert spans(seq((SPEECH, 1000))) == [(0.0, 10.0)]


def test_empty_input():
    assert segment_probs(np.zeros(0)) == []
    seg = StreamingSegmenter()
    assert seg.push(np.zeros(0)) == [] and seg.push([]) == []
    assert seg.finish(0) == [] and seg.segments == []
    assert spans(seq((SIL, 100))) == []


def test_max_speech_splits_at_longest_silence_then_hard_cut():
    opts = dict(max_speech_duration_s=1.0, speech_pad_ms=0, min_silence_duration_ms=300)
    p = seq(
        (SPEECH, 40), (SIL, 12), (SPEECH, 28), (SIL, 15), (SPEECH, 105), (SIL, 40)
    )  # fmt: skip
    # at frame 100 the segment is full: split at the 15-frame silence (longer than 12);
    # the rest [95, 195) fills up again with no silence in it: cut at frame 195;
    # [195, 200) is then too short to keep
    assert spans(p, **opts) == [(0.0, 0.8), (0.95, 1.95)]
    out, _ = push_one_by_one(p, opts)
    assert [(j, e.kind, e.time_s) for j, e in out] == [
        (24, "start", 0.0),
        (100, "end", 0.8),  # decided at the split, 0.2 s after its instant
        (119, "start", 0.95),  # the rest needs its own 25 frames of min speech
        (195, "end", 1.95),
    ]
    # padded, segments fit in max_speech_duration_s
    padded = spans(p, max_speech_duration_s=1.0, min_silence_duration_ms=300)
    assert all(e - s <= 1.0 + 1e-9 for s, e in padded)


def test_max_speech_splits_at_an_open_silence_early():
    opts = dict(max_speech_duration_s=1.0, speech_pad_ms=0, min_silence_duration_ms=300)
    p = seq((SPEECH, 85), (SIL, 40))
    assert spans(p, **opts) == spans(p, speech_pad_ms=0, min_silence_duration_ms=300)
    out, _ = push_one_by_one(p, opts)
    assert [(j, e.kind, e.time_s) for j, e in out] == [(24, "start", 0.0), (100, "end", 0.85)]


def test_input_rate_samples():
    p = seq((SIL, 50), (SPEECH, 40), (SIL, 50))
    segs = segment_probs(p, hop_s=HOP, input_rate_hz=8000)
    assert segs == [Segment(0.47, 0.93, 3760, 7440)]
    segs = segment_probs(p, hop_s=HOP, input_rate_hz=44100)
    assert (segs[0].start_sample, segs[0].end_sample) == (20727, 41013)


# --- streaming == offline, delay bound, invariants --------------------------------------
OPTION_SETS = [
    {},
    {"min_speech_duration_ms": 0, "min_silence_duration_ms": 0, "speech_pad_ms": 0},
    {"speech_pad_ms": 300, "min_silence_duration_ms": 50, "threshold": 0.6},
    {"max_speech_duration_s": 1.5, "min_silence_duration_ms": 400, "speech_pad_ms": 60},
    {"max_speech_duration_s": 0.6, "min_speech_duration_ms": 30, "neg_threshold": 0.2},
]


def _random_probs(rng: np.random.Generator, n: int) -> np.ndarray:
    # smoothed noise through a sigmoid: runs of speech, silence and band values
    z = np.convolve(rng.standard_normal(n + 20), np.ones(20) / 4, mode="valid")[:n]
    return 1 / (1 + np.exp(-3 * z))


@pytest.mark.parametrize("opts", OPTION_SETS)
@pytest.mark.parametrize("hop", [0.016, 0.01])
def test_streaming_equals_offline_for_any_chunking(opts, hop):
    rng = np.random.default_rng(len(str(opts)) + int(hop * 1000))
    for _ in range(4):
        probs = _random_probs(rng, int(rng.integers(1, 900)))
        n_samples = round(len(probs) * hop * 8000) - int(rng.integers(0, 60))
        offline = segment_probs(probs, opts, hop, 8000, n_samples)
        ref = StreamingSegmenter(opts, hop, 8000)
        ref_events = ref.push(probs) + ref.finish(n_samples)
        for _trial in range(3):
            seg = StreamingSegmenter(opts, hop, 8000)
            events, i = [], 0
            while i < len(probs):
                k = int(rng.integers(0, 40))
                events += seg.push(probs[i : i + k])
                i += k
            events += seg.finish(n_samples)
            assert events == ref_events
            assert seg.segments == offline == ref.segments
        _check_invariants(ref_events, offline, n_samples / 8000)


class _FrameByFrame(StreamingSegmenter):
    """The segmenter without push()'s jumps: every frame through _step (the rules as
    written), to check that the jumps skip only frames that change nothing."""

    def push(self, probs):
        for value in np.asarray(probs, dtype=np.float64).tolist():
            self._step(self._n, value)
            self._n += 1
            self._release(self._time(self._n - 1))
        return self._take()


@pytest.mark.parametrize("opts", OPTION_SETS)
def test_jumps_equal_frame_by_frame(opts):
    rng = np.random.default_rng(7)
    for trial in range(6):
        probs = _random_probs(rng, int(rng.integers(1, 4000)))
        if trial % 2:  # long steady runs: where the jumps are long
            probs = np.repeat(probs[: probs.size // 25 + 1], 25)
        n_samples = round(len(probs) * 0.016 * 8000)
        fast, ref = StreamingSegmenter(opts, 0.016, 8000), _FrameByFrame(opts, 0.016, 8000)
        assert fast.push(probs) + fast.finish(n_samples) == ref.push(probs) + ref.finish(n_samples)
        assert fast.segments == ref.segments and fast.state() == ref.state()


def _check_invariants(events, segments, audio_end_s):
    assert [e.kind for e in events] == ["start", "end"] * len(segments)
    times = [e.time_s for e in events]
    assert times == sorted(times)
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end_s <= b.start_s  # never overlapping (touching is allowed)
    for s in segments:
        assert 0 <= s.start_s < s.end_s <= audio_end_s + 1e-9
        assert s.start_sample == round(s.start_s * 8000) and s.end_sample == round(s.end_s * 8000)


@pytest.mark.parametrize("opts", OPTION_SETS)
def test_decision_delay_bound(opts):
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(3):
        probs = _random_probs(rng, 600)
        out, seg = push_one_by_one(probs, opts, hop=0.016)
        for j, e in out:
            if j < 0:
                continue
            assert e.time_s <= j * 0.016 + 1e-9  # never emitted before the stream passed it
            worst = max(worst, (j + 1) * 0.016 - e.time_s)
    assert 0 < worst <= seg.decision_delay_s + 1e-9


def test_decision_delay_value():
    # defaults at 16 ms: M = 16, S = 7 frames; start: 22 frames + 30 ms; end: 7 frames - 30 ms
    seg = StreamingSegmenter()
    assert seg.decision_delay_s == pytest.approx(22 * 0.016 + 0.03)
    seg = StreamingSegmenter({"min_speech_duration_ms": 0, "speech_pad_ms": 0})
    assert seg.decision_delay_s == pytest.approx(7 * 0.016)


def test_agrees_with_silero_without_pads_or_band():
    """With pad 0 and no band values, our frame rules are Silero's up to its off-by-one
    conventions (it needs one more silent frame, and a strictly longer segment)."""
    rng = np.random.default_rng(11)
    for _ in range(30):
        runs = [(SPEECH if i % 2 else 0.1, int(rng.integers(1, 12))) for i in range(30)]
        probs = seq(*runs, (SPEECH, 10))  # end in speech: Silero ends there at the audio end
        theirs = get_speech_timestamps_from_probs(
            list(probs),
            min_speech_duration_ms=160,  # keeps > 5 frames of 32 ms
            min_silence_duration_ms=96,  # ends after 3 frames past the first silent one
            speech_pad_ms=0,
        )
        ours = segment_probs(
            probs,
            {"min_speech_duration_ms": 192, "min_silence_duration_ms": 128, "speech_pad_ms": 0},
            hop_s=0.032,
        )
        assert [(s.start_sample, s.end_sample) for s in ours] == [
            (t["start"], t["end"]) for t in theirs
        ]


def test_reset_and_misuse():
    seg = StreamingSegmenter()
    p = seq((SIL, 10), (SPEECH, 40), (SIL, 20))
    first = seg.push(p) + seg.finish(len(p) * 256)
    with pytest.raises(InvalidInputError, match="reset"):
        seg.push(p)
    with pytest.raises(InvalidInputError, match="reset"):
        seg.finish(10)
    seg.reset()
    assert seg.segments == []
    assert seg.push(p) + seg.finish(len(p) * 256) == first
    for bad in (np.array([0.5, np.nan]), np.array([1.2]), np.array([-0.1]), np.zeros((2, 2))):
        with pytest.raises(InvalidInputError):
            StreamingSegmenter().push(bad)
    with pytest.raises(InvalidInputError):
        StreamingSegmenter().finish(-1)
    seg = StreamingSegmenter()
    seg.push(np.zeros(10))  # 10 frames of 16 ms need more than 9 * 256 samples
    with pytest.raises(InvalidInputError, match="num_input_samples"):
        seg.finish(9 * 256)
    assert seg.finish(9 * 256 + 1) == []


# --- options -----------------------------------------------------------------------------
def test_options_defaults_and_dicts():
    o = SegmenterOptions()
    assert o.effective_neg_threshold == pytest.approx(0.35)
    assert SegmenterOptions(threshold=0.1).effective_neg_threshold == 0.01
    assert SegmenterOptions.from_dict(None) == o
    assert SegmenterOptions.from_dict(
        {"threshold": None, "speech_pad_ms": 40.0}
    ) == SegmenterOptions(speech_pad_ms=40)
    assert isinstance(SegmenterOptions.from_dict({"speech_pad_ms": 40.0}).speech_pad_ms, int)
    assert StreamingSegmenter({"threshold": 0.7}).options.threshold == 0.7


@pytest.mark.parametrize(
    "d, words",
    [
        ({"threshold": 0}, ["threshold", "(0, 1)"]),
        ({"threshold": 1.0}, ["threshold"]),
        ({"threshold": 1.5}, ["threshold"]),
        ({"threshold": float("nan")}, ["threshold"]),
        ({"threshold": "0.5"}, ["threshold", "'0.5'"]),
        ({"threshold": True}, ["threshold"]),
        ({"neg_threshold": 0.6}, ["neg_threshold", "must not exceed"]),
        ({"neg_threshold": -0.1}, ["neg_threshold"]),
        ({"min_speech_duration_ms": -1}, ["min_speech_duration_ms"]),
        ({"min_speech_duration_ms": 2.5}, ["whole number"]),
        ({"min_silence_duration_ms": "x"}, ["min_silence_duration_ms"]),
        ({"speech_pad_ms": -5}, ["speech_pad_ms"]),
        ({"max_speech_duration_s": 0}, ["max_speech_duration_s"]),
        ({"max_speech_duration_s": float("nan")}, ["max_speech_duration_s"]),
        ({"max_speech_duration_s": 0.3}, ["max_speech_duration_s", "0.31"]),
        ({"foo": 1, "bar": 2}, ["bar, foo", "threshold"]),
    ],
)
def test_invalid_options(d, words):
    with pytest.raises(InvalidInputError) as info:
        SegmenterOptions.from_dict(d)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(InvalidInputError):
        segment_probs(np.zeros(3), d)


def test_invalid_constructor_args():
    with pytest.raises(InvalidInputError):
        SegmenterOptions.from_dict([("threshold", 0.5)])
    for kw in ({"hop_s": 0}, {"hop_s": math.inf}, {"input_rate_hz": 0}, {"input_rate_hz": 1.5}):
        with pytest.raises(InvalidInputError):
            StreamingSegmenter(None, **kw)
    with pytest.raises(InvalidInputError):  # 10 ms left after 2 x 160 ms: not one 16 ms frame
        StreamingSegmenter({"max_speech_duration_s": 0.33, "speech_pad_ms": 160,
                            "min_speech_duration_ms": 0})  # fmt: skip


# --- formats -----------------------------------------------------------------------------
SEGS = [Segment(0.512, 1.984, 8192, 31744), Segment(2.0, 3.25, 32000, 52000)]


def test_format_text():
    assert format_segments(SEGS, "text") == "0.512\t1.984\n2.000\t3.250\n"
    assert format_segments([], "text") == ""


def test_format_json():
    rows = json.loads(format_segments(SEGS, "json"))
    assert rows[0] == {"start_s": 0.512, "end_s": 1.984, "start_sample": 8192, "end_sample": 31744}
    assert len(rows) == 2 and json.loads(format_segments([], "json")) == []


def test_format_rttm():
    out = format_segments(SEGS, "rttm", file_id="my call")
    assert out.splitlines() == [
        "SPEAKER my_call 1 0.512 1.472 <NA> <NA> speech <NA> <NA>",
        "SPEAKER my_call 1 2.000 1.250 <NA> <NA> speech <NA> <NA>",
    ]
    assert all(len(line.split()) == 10 for line in out.splitlines())


def test_format_unknown():
    with pytest.raises(InvalidInputError, match="text, json, rttm"):
        format_segments(SEGS, "csv")


def test_state_restore_continues_exactly():
    """A segmenter restored from state() at any frame gives the events of one that never
    stopped (what a resumed stream relies on)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(50, 800))
        p = np.repeat(rng.random(n // 5 + 1), 5)[:n].astype(np.float32)
        opts = {"max_speech_duration_s": float(rng.choice([np.inf, 1.0, 2.5]))}
        whole = StreamingSegmenter(opts)
        expected = whole.push(p) + whole.finish(n * 256)
        first, k = StreamingSegmenter(opts), int(rng.integers(0, n))
        got = first.push(p[:k])
        second = StreamingSegmenter(opts)
        second.restore(first.state())
        got += second.push(p[k:]) + second.finish(n * 256)
        assert got == expected
        assert second.segment_count == whole.segment_count


def test_restore_rejects_impossible_state():
    seg = StreamingSegmenter()
    state = seg.state()
    with pytest.raises(InvalidInputError, match="bad segmenter state"):
        seg.restore({**state, "segment_start_frame": 5})  # after frame 0
    with pytest.raises(InvalidInputError, match="bad segmenter state"):
        seg.restore({**state, "frames": "x"})
