"""Frame labels for clean speech: where is someone speaking, frame by frame.

The training mixer adds noise to *clean* speech clips, so the truth comes from the clean
clip's own energy. This rule is part of the model card: a change here changes what the
model learns to call speech.

Rule (``frame_labels``), on 16 kHz audio with frames of ``hop`` samples (frame ``i`` covers
samples ``[i * hop, (i + 1) * hop)``, the last frame zero-padded):

0. High-pass the clip at 100 Hz (4th-order Butterworth): hum, rumble and DC carry no
   speech, and in some recordings (megaglest) a rumble floor hides every pause.
1. Frame energy ``e_i = 10 * log10(mean(x**2) + 1e-10)`` in dB re full scale.
2. The clip's own level: ``peak_dB`` = the highest frame energy, ``floor_dB`` = the 10th
   percentile of frame energies (the pauses and the noise floor between words).
3. Threshold ``thr = max(peak_dB - 40, floor_dB + 10)``, capped at ``peak_dB - 20``: speech
   reaches 40 dB below its loudest vowel (soft fricatives, decaying endings) but must stand
   10 dB above the clip's floor; the cap keeps a clip with no pause at all (a word trimmed
   to its edges, whose "floor" is speech) from losing its body. Both are relative to the
   clip, so the labels do not change with gain.
4. Frames with ``e_i > thr`` are speech (the raw track).
5. Pauses of fewer than ``bridge_frames`` (10 frames = 160 ms) non-speech frames *between*
   speech frames become speech: stop closures and short breaks inside a phrase are not
   the end of speech.
6. Runs of speech shorter than ``min_run_frames`` (4 frames = 64 ms) that remain are removed:
   isolated clicks and breaths are not speech.
7. A clip that is entirely below -80 dBFS (digital silence) has no speech.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from ..errors import InvalidInputError

HOP = 256  # samples at 16 kHz, the model's frame hop (16 ms)

# Tuned by looking at docs/labels/*.png (see docs/data.md).
PEAK_MARGIN_DB = 40.0
FLOOR_MARGIN_DB = 10.0
MIN_BELOW_PEAK_DB = 20.0
FLOOR_PERCENTILE = 10.0
SILENCE_DB = -80.0
HIGHPASS_HZ = 100.0
_SOS = butter(4, HIGHPASS_HZ, btype="highpass", fs=16_000, output="sos")
BRIDGE_FRAMES = 10  # 160 ms
MIN_RUN_FRAMES = 4  # 64 ms


def frame_energy_db(x: np.ndarray, hop: int = HOP) -> np.ndarray:
    """Mean-square energy per frame in dBFS.

    ``(n,)`` float audio in [-1, 1] -> ``(ceil(n / hop),)`` float32 dB; the last, partial
    frame is zero-padded (as the network pads it).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise InvalidInputError(f"expected mono audio of shape (n,), got shape {x.shape}")
    if hop <= 0:
        raise InvalidInputError(f"hop must be a positive number of samples, got {hop}")
    n_frames = -(-x.shape[0] // hop)
    padded = np.zeros(n_frames * hop, dtype=np.float64)
    padded[: x.shape[0]] = x
    ms = (padded.reshape(n_frames, hop) ** 2).mean(axis=1)
    return (10.0 * np.log10(ms + 1e-10)).astype(np.float32)


def speech_band(x: np.ndarray) -> np.ndarray:
    """High-pass at 100 Hz (rule step 0): ``(n,)`` float at 16 kHz -> ``(n,)`` float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise InvalidInputError(f"expected mono audio of shape (n,), got shape {x.shape}")
    if x.size == 0:
        return x
    return sosfilt(_SOS, x.astype(np.float64)).astype(np.float32)


def threshold_db(energy_db: np.ndarray) -> float:
    """The speech threshold in dB for one clip's frame energies ``(frames,)`` (rule step 3)."""
    peak = float(energy_db.max())
    floor = float(np.percentile(energy_db, FLOOR_PERCENTILE))
    thr = max(peak - PEAK_MARGIN_DB, floor + FLOOR_MARGIN_DB)
    return min(thr, peak - MIN_BELOW_PEAK_DB)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def smooth_labels(
    raw: np.ndarray, bridge_frames: int = BRIDGE_FRAMES, min_run_frames: int = MIN_RUN_FRAMES
) -> np.ndarray:
    """Bridge short pauses then drop short blips (rule steps 5-6).

    ``(frames,)`` bool -> ``(frames,)`` bool.
    """
    lab = raw.astype(bool).copy()
    runs = _runs(lab)
    for (_, end), (start, _) in zip(runs[:-1], runs[1:], strict=True):
        if start - end < bridge_frames:
            lab[end:start] = True
    for start, end in _runs(lab):
        if end - start < min_run_frames:
            lab[start:end] = False
    return lab


def frame_labels(clean: np.ndarray, hop: int = HOP) -> np.ndarray:
    """Speech/non-speech label per frame of a clean speech clip (the rule in the module doc).

    ``(n,)`` float32 clean speech at 16 kHz in [-1, 1] -> ``(ceil(n / hop),)`` float32 in
    {0, 1}: 1 where frame ``i`` (samples ``[i * hop, (i + 1) * hop)``) is speech.
    """
    energy = frame_energy_db(speech_band(clean), hop)
    if energy.size == 0 or energy.max() <= SILENCE_DB:
        return np.zeros(energy.shape, dtype=np.float32)
    raw = energy > threshold_db(energy)
    return smooth_labels(raw).astype(np.float32)


# Training-only "don't care" label (``mark_buried``): the loss skips these frames.
IGNORE = -1.0
BURIED_SMOOTH_FRAMES = 13  # ~200 ms: about a syllable, so a pause between loud words keeps
# the words' energy and stays labelled; only whole stretches under the background go.


def mark_buried(
    labels: np.ndarray,
    speech: np.ndarray,
    background: np.ndarray,
    floor_db: float,
    hop: int = HOP,
) -> np.ndarray:
    """Speech frames buried under the background, relabelled ``IGNORE`` for training.

    ``labels`` ``(frames,)`` in {0, 1}; ``speech`` and ``background`` ``(frames * hop,)``
    float, the two tracks as they are summed into the mixture -> ``(frames,)`` float32 in
    {IGNORE, 0, 1}: a speech frame whose local SNR (the two tracks' energies averaged over
    ``BURIED_SMOOTH_FRAMES`` frames) is below ``floor_db`` becomes IGNORE.

    Why: labels come from the clean clip and reach 40 dB below its loudest vowel, so at
    -5 dB SNR a word's soft ending lies ~30 dB under the music it is mixed with. Asking
    the net to call that speech teaches it to fire on faint speech-like patterns in
    music; calling it non-speech would be false. The loss skips it; dev labels keep it.
    """
    k = np.ones(BURIED_SMOOTH_FRAMES) / BURIED_SMOOTH_FRAMES
    n = labels.size * hop

    def energy(track: np.ndarray) -> np.ndarray:
        frames = np.asarray(track[:n], np.float64).reshape(labels.size, hop)
        return np.convolve((frames**2).mean(axis=1), k, mode="same")

    snr_db = 10 * np.log10((energy(speech) + 1e-12) / (energy(background) + 1e-12))
    return np.where((labels > 0.5) & (snr_db < floor_db), IGNORE, labels).astype(np.float32)
