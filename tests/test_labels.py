"""Frame labels of clean speech: synthetic bursts with known speech frames."""

from __future__ import annotations

import numpy as np
import pytest

from vadnet.model.errors import InvalidInputError
from vadnet.model.training.labels import HOP, frame_energy_db, frame_labels

SR = 16_000


def tone(seconds: float, level: float = 0.3, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(seconds: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    n = int(seconds * SR)
    return (noise * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_length_is_ceil_of_samples_over_hop():
    for n in (0, 1, HOP - 1, HOP, HOP + 1, 10 * HOP + 7):
        assert frame_labels(tone(n / SR) if n else np.zeros(0, np.float32)).shape == (-(-n // HOP),)
    assert frame_labels(tone(1.0)).dtype == np.float32


def test_silence_has_no_speech():
    assert frame_labels(np.zeros(SR, np.float32)).sum() == 0
    # dither-level noise (-90 dBFS) is still silence
    assert frame_labels(silence(1.0, noise=3e-5)).sum() == 0


def test_tone_bursts_with_long_gap_are_two_segments():
    x = np.concatenate([silence(0.5), tone(0.5), silence(0.8), tone(0.5), silence(0.5)])
    lab = frame_labels(x)
    on = np.flatnonzero(np.diff(np.concatenate(([0], lab, [0]))) == 1)
    assert len(on) == 2
    # frame i covers [i*hop, (i+1)*hop): the first burst starts at sample 8000 = frame 31.25,
    # so frame 31 (partly speech) is the first speech frame, frame 30 is not.
    assert lab[31] == 1 and lab[30] == 0
    # the frames in the middle of the long gap are not speech
    gap_mid = int((0.5 + 0.5 + 0.4) * SR) // HOP
    assert lab[gap_mid] == 0


def test_short_pause_is_bridged():
    x = np.concatenate([silence(0.3), tone(0.4), silence(0.08), tone(0.4), silence(0.3)])
    lab = frame_labels(x)
    pause = int((0.3 + 0.4 + 0.04) * SR) // HOP
    assert lab[pause] == 1
    assert lab[0] == 0 and lab[-1] == 0


def test_isolated_click_is_dropped():
    x = np.concatenate([silence(0.5), tone(0.5), silence(0.5), tone(0.016), silence(0.5)])
    lab = frame_labels(x)
    click = int((1.5 + 0.008) * SR) // HOP
    assert lab[click - 1 : click + 2].sum() == 0
    assert lab[int(0.75 * SR) // HOP] == 1


def test_quiet_speech_tail_counts_but_noise_floor_does_not():
    # -30 dB tail after a loud burst is speech; a noise floor 30 dB below is not
    noise = 0.3 * 10 ** (-45 / 20)
    x = np.concatenate([silence(0.5, noise), tone(0.4), tone(0.3, level=0.3 * 10 ** (-30 / 20))])
    x = np.concatenate([x, silence(0.6, noise, seed=1)])
    x[: len(x)] += silence(len(x) / SR, noise, seed=2)[: len(x)]
    lab = frame_labels(x)
    assert lab[int(0.8 * SR) // HOP] == 1  # inside the quiet tail
    assert lab[int(0.2 * SR) // HOP] == 0  # leading noise floor
    assert lab[-5] == 0  # trailing noise floor


@pytest.mark.parametrize("gain_db", [-40, -20, 0, 6])
def test_gain_invariance(gain_db):
    rng = np.random.default_rng(3)
    x = np.concatenate([silence(0.4, 1e-3), tone(0.3), silence(0.5, 1e-3, 1), tone(0.6, 0.1)])
    x = x + 1e-3 * rng.standard_normal(x.size).astype(np.float32)
    ref = frame_labels(x)
    g = 10 ** (gain_db / 20)
    assert np.array_equal(frame_labels((x * g).astype(np.float32)), ref)


def test_word_trimmed_to_its_edges_is_all_speech():
    # no pause at all: the cap at peak - 20 dB keeps the word
    env = np.hanning(int(0.4 * SR)).astype(np.float32) ** 0.3
    lab = frame_labels(tone(0.4) * env)
    assert lab.mean() > 0.8


def test_energy_and_bad_input():
    e = frame_energy_db(np.full(HOP * 2, 0.5, np.float32))
    np.testing.assert_allclose(e, 10 * np.log10(0.25), atol=1e-4)
    with pytest.raises(InvalidInputError):
        frame_labels(np.zeros((2, 100), np.float32))


def test_buried_speech_is_ignored_but_audible_speech_and_its_pauses_are_not():
    from vadnet.model.training.labels import IGNORE, mark_buried

    frames, hop = 200, 256
    rng = np.random.default_rng(0)
    labels = np.zeros(frames, np.float32)
    labels[20:180] = 1  # one long utterance with a bridged pause at 60..66
    speech = rng.standard_normal(frames * hop).astype(np.float32) * 0.1
    speech[: 20 * hop] = speech[180 * hop :] = 0
    speech[60 * hop : 66 * hop] = 0  # a pause between loud words
    speech[120 * hop :] *= 0.01  # the last part fades 40 dB: buried at -20 dB local SNR
    background = rng.standard_normal(frames * hop).astype(np.float32) * 0.01  # -20 dB
    out = mark_buried(labels, speech, background, floor_db=-5.0, hop=hop)
    assert np.array_equal(out[:20], labels[:20]) and np.array_equal(out[180:], labels[180:])
    assert (out[20:110] == 1).all()  # loud speech, the short pause inside it included
    assert (out[130:180] == IGNORE).all()  # buried under the background
    assert set(np.unique(out)) == {IGNORE, 0.0, 1.0}
    # A background 40 dB quieter buries nothing.
    assert np.array_equal(mark_buried(labels, speech, background * 0.01, -5.0, hop), labels)
