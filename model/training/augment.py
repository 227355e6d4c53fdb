"""Signal-level augmentations and generated backgrounds for the training mixer.

All functions take and return (n,) float32 arrays at 16 kHz and draw randomness only
from the ``rng`` they are given, so a mixture is a pure function of its seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal
import soxr

logger = logging.getLogger("vadnet")

SR = 16_000


# --- generated noise: white, pink, brown, hum, tones, clicks (no babble: that is speech) ---
def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec /= f ** (exponent / 2)
    x = np.fft.irfft(spec, n)
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and a few harmonics with random weights."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
    t = np.arange(n) / SR
    x = sum(
        rng.uniform(0, 1) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
        for k in range(1, 8)
    )
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def tones(rng: np.random.Generator, n: int) -> np.ndarray:
    """Beeps, DTMF-like pairs and steady tones, 200 Hz to 4 kHz, on and off."""
    t = np.arange(n) / SR
    x = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        f = rng.uniform(200, 4000)
        env = np.ones(n)
        if rng.random() < 0.6:  # gated beeps
            period = rng.uniform(0.1, 1.5)
            duty = rng.uniform(0.2, 0.8)
            env = ((t / period) % 1.0 < duty).astype(float)
        x += env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sparse clicks and keyboard-like transients over faint white noise."""
    x = 0.01 * rng.standard_normal(n)
    k = rng.integers(2, 40) * n // SR + 1
    for p in rng.integers(0, n, size=k):
        ln = int(rng.integers(16, 400))
        seg = rng.standard_normal(ln) * np.exp(-np.arange(ln) / (ln / 5))
        x[p : p + ln] += seg[: n - p] * rng.uniform(0.2, 1.0)
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


# Musical scales as semitone steps from the root: major, natural minor, major and minor
# pentatonic (what most melodies are drawn from).
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 4, 7, 9), (0, 3, 5, 7, 10))


def note_voice(rng: np.random.Generator, n: int, root: int, scale: tuple) -> np.ndarray:
    """Separate notes: each a harmonic tone with the voice's own random spectral envelope,
    an attack and a decay, some with vibrato or a slide into the note."""
    k = np.arange(1, 25)
    amps = k ** -rng.uniform(0.5, 2.0) * np.exp(rng.normal(0, 0.6, k.size))
    amps[k % 2 == 0] *= rng.uniform(0.1, 1.0)  # hollow (clarinet-like) to full
    vibrato = rng.uniform(0.004, 0.03) if rng.random() < 0.5 else 0.0
    rate = rng.uniform(4.5, 7.0)
    voice, pos = np.zeros(n), int(rng.integers(0, SR // 4))
    while pos < n:
        dur = min(int(rng.uniform(0.08, 0.9) * SR), n - pos)
        note = root + scale[rng.integers(len(scale))] + 12 * rng.integers(-1, 2)
        f0 = 440.0 * 2 ** ((note - 69) / 12)
        t = np.arange(dur) / SR
        f = f0 * (1 + vibrato * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)))
        if rng.random() < 0.2:  # slide in from a semitone or two away
            f *= 2 ** (rng.uniform(-2, 2) / 12 * np.exp(-t / 0.04))
        phase = 2 * np.pi * np.cumsum(f) / SR
        below = int((k * f0 < 7000).sum())  # harmonics under 7 kHz: a prefix of k
        tone = sum(amps[h - 1] * wave for h, wave in _harmonics(phase, below))
        attack = np.minimum(1.0, t / rng.uniform(0.003, 0.06))
        decay = np.exp(-t / rng.uniform(0.15, 3.0))
        voice[pos : pos + dur] += tone * attack * decay
        pos += dur + (int(rng.uniform(0.02, 0.3) * SR) if rng.random() < 0.2 else 0)
    return voice


def lead_voice(rng: np.random.Generator, n: int, root: int, scale: tuple) -> np.ndarray:
    """A legato lead (synth, sax, violin): one unbroken tone whose pitch glides from note
    to note and bends, with vibrato, tremolo and a resonant filter that sweeps.

    Why: on held-out music the stage-1 model fired where a lead plays, and it calls 30 %
    of the frames of these leads speech, against 6 % for separate notes
    (``bench/music_fa.py``, removed in git after 181681a): a gliding harmonic tone under a moving resonance is what it
    had learnt speech to be. What still tells speech apart is absent here: several
    formants, consonants and pauses.
    """
    semitones, pos, prev = np.zeros(n), 0, None
    glide_s = rng.uniform(0.01, 0.12)
    while pos < n:
        dur = min(int(rng.uniform(0.06, 0.6) * SR), n - pos)
        note = root + scale[rng.integers(len(scale))] + 12 * rng.integers(-1, 2)
        t = np.arange(dur) / SR
        s = np.full(dur, float(note))
        if prev is not None and rng.random() < 0.7:  # portamento from the last note
            s += (prev - note) * np.exp(-t / glide_s)
        if rng.random() < 0.2:  # a bend of up to 3 semitones across the note
            s += rng.uniform(-3, 3) * t / max(t[-1], 1e-3)
        semitones[pos : pos + dur] = s
        prev, pos = note, pos + dur
    t = np.arange(n) / SR
    vibrato = rng.uniform(0, 0.4) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    f = 440.0 * 2 ** ((semitones + vibrato * np.minimum(1.0, t / 0.3) - 69) / 12)
    phase = 2 * np.pi * np.cumsum(f) / SR
    sweep = rng.uniform(0, 1.0) * np.sin(2 * np.pi * rng.uniform(0.5, 6) * t + rng.uniform(0, 6.3))
    centre = rng.uniform(400, 2500) * np.exp(sweep)  # the filter's resonance, Hz
    width, tilt = rng.uniform(0.15, 0.6), rng.uniform(0.5, 2.0)
    tremolo = 1 + rng.uniform(0, 0.7) * np.sin(2 * np.pi * rng.uniform(2, 8) * t)
    octaves = np.log(f / centre)  # harmonic k sits log(k) above this
    out = np.zeros(n)
    for h, wave in _harmonics(phase, 30):
        resonance = np.exp(-0.5 * ((np.log(h) + octaves) / width) ** 2)
        out += np.where(h * f < 7500, h**-tilt * (1 + 4 * resonance), 0.0) * wave
    return out * tremolo


def _harmonics(phase: np.ndarray, count: int):
    """Yield (k, sin(k * phase)) for k = 1..count by the recurrence
    sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x).

    Why: one sine and one cosine per sample instead of ``count``; the synthetic music is
    most of what the mixing workers spend on a melody (a 6 s lead took 176 ms, and mixing,
    not the model, bounds training on 2 cores)."""
    two_cos, before, wave = 2 * np.cos(phase), np.zeros_like(phase), np.sin(phase)
    for k in range(1, count + 1):
        yield k, wave
        before, wave = wave, two_cos * wave - before


def melody(rng: np.random.Generator, n: int) -> np.ndarray:
    """Synthetic music: 1-3 voices on a musical scale (roots 82 Hz to 659 Hz, +- an octave),
    half the time led by a legato lead (:func:`lead_voice`), the others separate notes
    (:func:`note_voice`); sometimes drum-like noise hits on a beat.

    Why: held-out music fires the model where a lead instrument plays in the voice's pitch
    range, and 18 recorded tracks are few timbres. Speech is harmonic too; what tells them
    apart is what this draws from: pitch on a semitone grid, steady timbre, rhythm on a
    beat, rather than syllabic formant motion, consonants and pauses.
    """
    x = np.zeros(n)
    lead = rng.random() < 0.5
    for i in range(rng.integers(1, 4)):
        scale = SCALES[rng.integers(len(SCALES))]
        root = int(rng.integers(40, 76))  # MIDI note: E2 (82 Hz) to E5 (659 Hz)
        voice = (lead_voice if lead and i == 0 else note_voice)(rng, n, root, scale)
        x += voice / (np.std(voice) + 1e-12) * rng.uniform(0.3, 1.0)
    if rng.random() < 0.4:  # drums: decaying noise bursts on a beat
        beat = int(SR * 60 / rng.uniform(70, 160))
        for p in range(int(rng.integers(0, beat)), n, beat):
            ln = min(int(rng.uniform(0.03, 0.2) * SR), n - p)
            x[p : p + ln] += rng.standard_normal(ln) * np.exp(-np.arange(ln) / (ln / 4)) * 0.8
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def generated_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """One of: white, pink, brown, hum, tones, clicks, at unit RMS."""
    kind = rng.integers(6)
    if kind < 3:
        return _coloured(rng, n, float(kind))
    return (hum, tones, clicks)[kind - 3](rng, n)


# --- room, channel and level augmentations ---
def rir_bank(cache_dir: str | Path, count: int = 96, seed: int = 0) -> np.ndarray:
    """(count, 8000) room impulse responses from pyroomacoustics shoebox rooms (RT60 0.15-0.9 s),
    cached in ``cache_dir`` because simulating them takes a while."""
    path = Path(cache_dir) / f"rirs_{count}_{seed}.npy"
    if path.exists():
        return np.load(path)
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    out = np.zeros((count, SR // 2), np.float32)
    i = 0
    while i < count:
        dims = rng.uniform([3, 3, 2.4], [10, 8, 4])
        rt60 = rng.uniform(0.15, 0.9)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # an RT60 this room cannot have: draw another room
            continue
        room = pra.ShoeBox(
            dims, fs=SR, materials=pra.Material(absorption), max_order=min(max_order, 12)
        )
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float32)[: SR // 2]
        out[i, : h.size] = h / (np.abs(h).max() + 1e-9)
        i += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    logger.info("simulated %s room impulse responses into %s", count, path)
    return out


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room response, keeping length and the direct path's level."""
    y = scipy.signal.fftconvolve(x, rir)[: x.size]
    return (y * (np.std(x) / (np.std(y) + 1e-12))).astype(np.float32)


def mulaw(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """G.711-style 8-bit mu-law quantisation round trip."""
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    y = np.round(y * 127) / 127
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def telephone(
    rng: np.random.Generator,
    x: np.ndarray,
    orders: tuple[int, ...] = (4,),
    low_cut_hz: tuple[float, float] = (200.0, 400.0),
) -> np.ndarray:
    """Telephone band: 300-3400 Hz band-pass, 8 kHz resampling and (mostly) mu-law.

    ``orders`` are the Butterworth orders drawn from (the skirts' steepness) and
    ``low_cut_hz`` the range of the low edge. With one order nothing is drawn for it, so
    the default keeps the random stream (and the dev clips) of the recipes before it.
    """
    y = soxr.resample(band_limit(rng, x, low_cut_hz, (3200.0, 3600.0), orders), SR, 8000)
    if rng.random() < 0.7:
        y = mulaw(y)
    return soxr.resample(y, 8000, SR)[: x.size].astype(np.float32)


BAND_LIMIT_ORDERS = (4, 6, 8)  # steep skirts, as a real device's; 2 leaves much of the band


def band_limit(
    rng: np.random.Generator,
    x: np.ndarray,
    low_hz: tuple[float, float] = (100.0, 450.0),
    high_hz: tuple[float, float] = (3000.0, 7000.0),
    orders: tuple[int, ...] = BAND_LIMIT_ORDERS,
) -> np.ndarray:
    """A Butterworth band-pass, order drawn from ``orders`` (one order draws nothing) and
    edges from ``low_hz`` and ``high_hz``: what a handset, a headset or a small loudspeaker
    passes, and the first step of ``telephone``."""
    order = orders[0] if len(orders) == 1 else int(orders[rng.integers(len(orders))])
    edges = [rng.uniform(*low_hz), rng.uniform(*high_hz)]
    sos = scipy.signal.butter(order, edges, "bandpass", fs=SR, output="sos")
    return scipy.signal.sosfilt(sos, x).astype(np.float32)


def random_eq(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """One to three random peaking/shelving-like filters (+-12 dB)."""
    for _ in range(rng.integers(1, 4)):
        f = rng.uniform(80, 6000)
        kind = rng.choice(["lowpass", "highpass", "bandpass"])
        if kind == "bandpass":
            wn = [f / 1.5, min(f * 1.5, 7900)]
        elif kind == "lowpass":
            wn = max(f, 1000.0)
        else:
            wn = min(f, 1000.0)
        sos = scipy.signal.butter(2, wn, kind, fs=SR, output="sos")
        g = 10 ** (rng.uniform(-12, 12) / 20)
        x = x + (g - 1) * scipy.signal.sosfilt(sos, x)
    return x.astype(np.float32)


def clip(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Hard clipping at a random level between 10% and 60% of the peak."""
    level = rng.uniform(0.1, 0.6) * (np.abs(x).max() + 1e-9)
    return np.clip(x, -level, level).astype(np.float32)


def rhythmic_gate(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Cut ``x`` on a beat grid (a trance gate, staccato stabs): open for 40-90 % of each
    0.1-0.5 s period, closed to 0-30 % of the level, with 5 ms ramps.

    Why: the held-out music that still fires the model is a buzzy synth cut by short
    rhythmic gaps, and gaps every few hundred milliseconds are also what syllables look
    like. Gating real recorded music teaches that rhythm on a grid is not speech, with
    real timbres rather than synthetic ones.
    """
    period = int(rng.uniform(0.1, 0.5) * SR)
    open_ = int(period * rng.uniform(0.4, 0.9))
    phase = (np.arange(x.size) + int(rng.integers(0, period))) % period
    gate = np.where(phase < open_, 1.0, rng.uniform(0.0, 0.3))
    ramp = np.ones(80) / 80  # 5 ms at 16 kHz
    return (x * np.convolve(gate, ramp, mode="same")).astype(np.float32)


def sound_events(
    rng: np.random.Generator,
    draw_clip: Callable[[], np.ndarray],
    n: int,
    gap_s: tuple[float, float] = (0.1, 4.0),
    max_event_s: float = 3.0,
) -> np.ndarray:
    """``n`` samples of isolated sound events: clips from ``draw_clip()`` one at a time, each
    at its own level (+-10 dB), with gaps of ``gap_s`` between them over a faint room floor
    (-70 to -35 dB under the events). A clip longer than ``max_event_s`` gives an excerpt
    of 0.3 s to ``max_event_s``.

    Why: a dog's bark, a saw or a door in an otherwise quiet room starts, lasts about as
    long as a word and stops, which is what an utterance looks like. Tiled end to end (how
    a recorded background is laid otherwise) the same clip is a steady texture, so the
    model never saw one alone, and the bundled v54 fired on such events in the real-use
    scenes' pauses and speech-free scenes where Silero VAD did not.
    """
    out = np.zeros(n, np.float32)
    pos = int(rng.uniform(0.0, gap_s[1]) * SR)
    while pos < n:
        x = np.asarray(draw_clip(), np.float32)
        if x.size == 0:
            pos += int(rng.uniform(*gap_s) * SR)
            continue
        if x.size > max_event_s * SR:
            size = int(rng.uniform(0.3, max_event_s) * SR)
            start = int(rng.integers(0, x.size - size + 1))
            x = x[start : start + size] * _fades(size)
        x = x[: n - pos] * (10 ** (rng.uniform(-10.0, 10.0) / 20) / rms(x))
        out[pos : pos + x.size] += x
        pos += x.size + int(rng.uniform(*gap_s) * SR)
    floor = _coloured(rng, n, float(rng.integers(3))) * 10 ** (rng.uniform(-70.0, -35.0) / 20)
    return (out + floor).astype(np.float32)


def _fades(size: int, ramp: int = 160) -> np.ndarray:
    """Gain for an excerpt: 10 ms linear fades, so a cut makes no click."""
    g = np.ones(size, np.float32)
    r = min(ramp, size // 2)
    g[:r] = np.linspace(0.0, 1.0, r, dtype=np.float32)
    g[size - r :] = np.linspace(1.0, 0.0, r, dtype=np.float32)
    return g


def change_speed(x: np.ndarray, n: int) -> np.ndarray:
    """Resample ``x`` to ``n`` samples by linear interpolation: pitch and tempo move together.

    Linear interpolation adds a little aliasing above ~6 kHz, harmless for a background.
    """
    t = np.linspace(0.0, x.size - 1, n)
    return np.interp(t, np.arange(x.size), x).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))
