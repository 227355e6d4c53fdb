"""On-the-fly training mixtures: speech utterances over backgrounds, with frame labels.

Each example is a pure function of ``(seed, index)``, so training is deterministic for a
seed whatever the number of worker processes, and resuming at step ``k`` replays exactly
the batches a run that never stopped would have seen.

Labels come with the speech clips (``labels.frame_labels`` of the clean clip, computed
once when the cache is built). Utterances are placed at whole-hop offsets so those
labels copy straight into the mixture's frame grid.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import InvalidInputError
from . import augment
from .labels import HOP, mark_buried

logger = logging.getLogger("vadnet")

SR = 16_000
SYNTHETIC_ENGINES = ("espeak", "flite", "festival")


SPEECH_WEIGHTINGS = ("uniform", "sqrt_hours")


@dataclass(frozen=True)
class MixConfig:
    """How mixtures are drawn. Probabilities are per example unless said otherwise."""

    # > stage 1's 1 s receptive field, so most frames see full context. The grown 8 s net
    # sees its whole reach only near a 6 s example's end, yet 12 s examples in stage 2
    # (v65, docs/experiments.md) halved speech-free false alarms without ranking speech
    # better on the real-use scenes, and one of two seeds was lower everywhere.
    example_s: float = 6.0
    # Pure-background examples teach the false-alarm side (music!); at 0.3 the model still
    # called 8 % of held-out music frames speech. 0.35 in stage 2 (v52) scored lower on the
    # real-use scenes: F1 0.909 against 0.911.
    p_no_speech: float = 0.5
    # Gaps between utterances: half short (onsets/offsets close together), half long.
    short_gap_s: tuple[float, float] = (0.05, 0.5)
    long_gap_s: tuple[float, float] = (0.5, 2.5)
    utterance_gain_db: float = 6.0  # +- per utterance: speakers are not equally loud
    p_synthetic: float = 0.25  # synthetic voices add languages, but real speech decides quality
    # How a speech source is drawn, within the real and within the synthetic voices:
    # "uniform" gives every source the same share (0.05 h of 0ad voices as many draws as
    # 1.8 h of tuxpaint), "sqrt_hours" a share in proportion to the square root of its
    # hours: big sources count more without drowning the small ones' speakers.
    speech_weighting: str = "uniform"
    p_reverb: float = 0.3
    p_clean: float = 0.15  # SNR 40-60 dB
    # Speech-to-background ratio of the other mixtures, drawn uniformly (dB; speech RMS over
    # its labelled frames against the background's). -5 dB is below the hardest real-use
    # condition (0 dB), so the model has seen worse than it is judged on; but 0-25 in stage 2
    # (v70, docs/experiments.md) ranked the real-use scenes better on two seeds: at -5 dB
    # much labelled speech is inaudible. Not yet in the recipe.
    snr_db: tuple[float, float] = (-5.0, 25.0)
    p_generated_noise: float = 0.35  # else a recorded background
    # Share of generated backgrounds that are synthetic music (augment.melody) instead of
    # noise. 0 in the dev protocol.
    p_melody: float = 0.0
    # Share of recorded backgrounds that are music (None: uniform over kinds, the dev
    # protocol). At 1/3 the model still called 6 % of held-out music frames speech, and
    # 2-34 % of the frames of some *training* tracks: music was too rare to be learnt.
    # 1/3 in stage 2 (v59, `--music-share`) had more speech-free false alarms on the
    # real-use scenes, not fewer.
    music_share: float | None = 0.5
    # Resample recorded backgrounds by a random factor (pitch and tempo together): 18 music
    # tracks become many more timbres and keys. 0 in the dev protocol.
    p_speed: float = 0.5
    speed: tuple[float, float] = (0.8, 1.25)
    # Share of recorded music backgrounds cut by a rhythmic gate (augment.rhythmic_gate).
    # 0 in the dev protocol.
    p_music_gate: float = 0.0
    # Speech frames whose local SNR is below this many dB are left out of the loss
    # (labels.mark_buried). None: every labelled frame counts, the dev protocol.
    buried_snr_db: float | None = None
    # Share of recorded effects and ambient backgrounds laid as isolated sound events in a
    # quiet room (augment.sound_events) instead of one clip tiled end to end. 0 in the dev
    # protocol and the recipe: 0.5 in stage 2 (v58) brought speech-free false alarms on the
    # real-use scenes to 0.3 %, but missed far more speech in quiet rooms.
    p_events: float = 0.0
    p_two_backgrounds: float = 0.15
    p_silent_background: float = 0.08  # digital or near-digital silence under the speech
    p_telephone: float = 0.2  # 8 kHz + mu-law: call-centre audio
    # The phone channel's band-pass: Butterworth orders drawn from, and the low edge's
    # range. A real line's low skirt is steep (G.712 asks for a 300 Hz edge), and a voice
    # with much of its energy under 300 Hz was missed through such a channel (a 4th-order
    # filter at 200-400 Hz is all the dev protocol draws; bench/talkers.py shows it).
    telephone_orders: tuple[int, ...] = (4,)
    telephone_low_cut_hz: tuple[float, float] = (200.0, 400.0)
    # Share of mixtures put through a steep band-pass (augment.band_limit: order 4, 6 or 8,
    # edges drawn from band_low_hz and band_high_hz): a handset, a headset, a small
    # loudspeaker, wideband VoIP. v47 leant on the voice's lows and highs together: a
    # 6th-order 300-3400 Hz phone band made it miss 10 % of clean and 20 dB wideband
    # talkers' frames (Silero 3 %), either cut alone about 4 %. 0 in the dev protocol; 0.25
    # in both stages of the bundled recipe (v54): in stage 2 alone (v53) that gap stayed,
    # since A is learned in stage 1; in both stages it fell to 6 % over three seeds, at a
    # cost of 0.001 AUC per wideband speech scene (docs/experiments.md).
    p_band_limit: float = 0.0
    band_low_hz: tuple[float, float] = (100.0, 450.0)
    band_high_hz: tuple[float, float] = (3000.0, 7000.0)
    p_eq: float = 0.25
    p_clip: float = 0.05
    p_dc: float = 0.1
    gain_db: tuple[float, float] = (-35.0, 10.0)  # around -20 dBFS RMS, as asked
    p_dropout: float = 0.05  # a stretch of digital silence (muted line) inside the example

    def __post_init__(self) -> None:
        # A checkpoint's train_config holds the mix as JSON, which turns tuples into lists.
        for name in (
            "snr_db",
            "telephone_orders",
            "telephone_low_cut_hz",
            "band_low_hz",
            "band_high_hz",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.speech_weighting not in SPEECH_WEIGHTINGS:
            raise InvalidInputError(
                f"speech_weighting must be one of {', '.join(SPEECH_WEIGHTINGS)},"
                f" got {self.speech_weighting!r}"
            )
        lo, hi = self.snr_db
        if not -30.0 <= lo <= hi <= 60.0:
            raise InvalidInputError(
                f"snr_db must be (low, high) with -30 <= low <= high <= 60 dB, got {self.snr_db}"
            )
        if not self.telephone_orders or not all(1 <= o <= 10 for o in self.telephone_orders):
            raise InvalidInputError(
                f"telephone_orders must be 1 to 10 (Butterworth orders), got {self.telephone_orders}"
            )
        lo, hi = self.telephone_low_cut_hz
        if not 50.0 <= lo <= hi <= 1000.0:
            raise InvalidInputError(
                "telephone_low_cut_hz must be (low, high) with 50 <= low <= high <= 1000 Hz,"
                f" got {self.telephone_low_cut_hz}"
            )
        (a, b), (c, d) = self.band_low_hz, self.band_high_hz
        if not 20.0 <= a <= b < c <= d <= 7900.0:
            raise InvalidInputError(
                "band_low_hz and band_high_hz must be (low, high) ranges with"
                f" 20 <= low edges < high edges <= 7900 Hz, got {self.band_low_hz} and"
                f" {self.band_high_hz}"
            )
        probabilities = (
            "p_no_speech",
            "p_synthetic",
            "p_melody",
            "p_music_gate",
            "p_events",
            "p_telephone",
            "p_band_limit",
        )
        if self.music_share is not None:
            probabilities += ("music_share",)
        for name in probabilities:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1], got {value}")

    @property
    def example_samples(self) -> int:
        return int(round(self.example_s * SR / HOP)) * HOP


class Mixer:
    """Draws one labelled mixture from speech clips and background clips.

    ``speech`` and ``noise`` are ClipSet-like: ``.clips`` (list of dicts with "source"),
    ``.clip(i)`` -> float32 audio, and for speech ``.clip_labels(i)`` -> frame labels.
    """

    def __init__(self, speech, noise, cfg: MixConfig | None = None, rirs: np.ndarray | None = None):
        self.speech, self.noise, self.cfg, self.rirs = speech, noise, cfg or MixConfig(), rirs
        groups: dict[str, list[int]] = defaultdict(list)
        for i, c in enumerate(speech.clips):
            if speech.clip_labels(i).any():  # a clip with no labelled speech teaches nothing
                groups[c["source"]].append(i)
        self.real = [v for k, v in groups.items() if not _synthetic(k)]
        self.synth = [v for k, v in groups.items() if _synthetic(k)]
        self.real_p, self.synth_p = (self._source_shares(p) for p in (self.real, self.synth))
        if not self.real and not self.synth:
            raise ValueError("no speech clips to mix")
        # Backgrounds: uniform over kind (music, ambient, sfx), then source, then clip.
        # By clip count, 300 short weapon sounds would drown the 18 long music tracks, and
        # music is what VADs most often mistake for speech.
        kinds: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, c in enumerate(noise.clips if noise is not None else []):
            kinds[c.get("kind", "noise")][c["source"]].append(i)
        self.noise_pools = [list(by_source.values()) for by_source in kinds.values()]
        self.music_pool = list(kinds).index("music") if "music" in kinds else None

    def _pick_kind(self, rng: np.random.Generator) -> list[list[int]]:
        share, music = self.cfg.music_share, self.music_pool
        if share is None or music is None or len(self.noise_pools) == 1:
            return self.noise_pools[rng.integers(len(self.noise_pools))]
        if rng.random() < share:
            return self.noise_pools[music]
        others = [p for k, p in enumerate(self.noise_pools) if k != music]
        return others[rng.integers(len(others))]

    def _source_shares(self, pools: list[list[int]]) -> np.ndarray | None:
        """Each source's share of draws under ``cfg.speech_weighting`` (None: uniform)."""
        if self.cfg.speech_weighting == "uniform" or not pools:
            return None
        samples = [sum(self.speech.clip(i).size for i in pool) for pool in pools]
        w = np.sqrt(np.array(samples, float))
        return w / w.sum()

    def _pick_speech(self, rng: np.random.Generator) -> int:
        # A source, then uniform over its clips: short clips give many onsets/offsets.
        # Uniform over sources (the default) lets small real sources (the scarce wideband
        # ones) get as many draws as big ones.
        synth = (rng.random() < self.cfg.p_synthetic and self.synth) or not self.real
        pools, shares = (self.synth, self.synth_p) if synth else (self.real, self.real_p)
        k = rng.integers(len(pools)) if shares is None else rng.choice(len(pools), p=shares)
        pool = pools[k]
        return pool[rng.integers(len(pool))]

    def _speech_track(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.cfg
        s = np.zeros(n, np.float32)
        y = np.zeros(n // HOP, np.float32)
        if rng.random() < cfg.p_no_speech:
            return s, y
        frame = int(rng.integers(0, int(1.5 * SR / HOP)))
        while frame < y.size:
            i = self._pick_speech(rng)
            clip, lab = self.speech.clip(i), self.speech.clip_labels(i).astype(np.float32)
            if clip.size > n and rng.random() < 0.5:  # a random window of a long clip
                start = (
                    int(rng.integers(0, lab.size - y.size // 2)) if lab.size > y.size // 2 else 0
                )
                clip, lab = clip[start * HOP :], lab[start:]
            active = np.repeat(lab, HOP)[: clip.size] > 0
            level = augment.rms(clip[active]) if active.any() else augment.rms(clip)
            g = 10 ** (rng.uniform(-cfg.utterance_gain_db, cfg.utterance_gain_db) / 20) / level
            k = min(lab.size, y.size - frame)
            seg = clip[: k * HOP]
            s[frame * HOP : frame * HOP + seg.size] += g * seg
            y[frame : frame + k] = np.maximum(y[frame : frame + k], lab[:k])
            lo, hi = cfg.short_gap_s if rng.random() < 0.5 else cfg.long_gap_s
            frame += k + int(rng.uniform(lo, hi) * SR / HOP)
        if self.rirs is not None and rng.random() < cfg.p_reverb:
            s = augment.reverberate(s, self.rirs[rng.integers(len(self.rirs))])
        return s, y

    def _recorded(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if not self.noise_pools:
            return augment.generated_noise(rng, n)
        sources = self._pick_kind(rng)
        music = self.music_pool is not None and sources is self.noise_pools[self.music_pool]
        # Draw only when enabled, so the dev protocol's random stream stays as it was.
        if not music and self.cfg.p_events and rng.random() < self.cfg.p_events:
            x = augment.sound_events(rng, lambda: self._clip_of(rng, sources), n)
            return (x / augment.rms(x)).astype(np.float32)
        x = self._clip_of(rng, sources)
        # Draw only when enabled, so the dev protocol's random stream stays as it was.
        speed = (
            rng.uniform(*self.cfg.speed)
            if self.cfg.p_speed and rng.random() < self.cfg.p_speed
            else 1.0
        )
        need = int(np.ceil(n * speed))
        if x.size < need:
            x = np.tile(x, need // max(x.size, 1) + 1)
        start = int(rng.integers(0, x.size - need + 1))
        x = x[start : start + need]
        if speed != 1.0:
            x = augment.change_speed(x, n)
        # Draw only when enabled, so the dev protocol's random stream stays as it was.
        if music and self.cfg.p_music_gate and rng.random() < self.cfg.p_music_gate:
            x = augment.rhythmic_gate(rng, x)
        return (x / augment.rms(x)).astype(np.float32) if augment.rms(x) > 1e-5 else x

    def _clip_of(self, rng: np.random.Generator, sources: list[list[int]]) -> np.ndarray:
        """One clip of one kind: a source of it, then a clip of that source."""
        clips = sources[rng.integers(len(sources))]
        return self.noise.clip(clips[rng.integers(len(clips))])

    def _generated(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Draw only when enabled, so the dev protocol's random stream stays as it was.
        if self.cfg.p_melody and rng.random() < self.cfg.p_melody:
            return augment.melody(rng, n)
        return augment.generated_noise(rng, n)

    def _background(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg = self.cfg
        if rng.random() < cfg.p_silent_background:
            return rng.standard_normal(n).astype(np.float32) * (0.0 if rng.random() < 0.5 else 1e-3)
        draw = self._generated if rng.random() < cfg.p_generated_noise else self._recorded
        b = draw(rng, n)
        if rng.random() < cfg.p_two_backgrounds:
            b = b + 10 ** (rng.uniform(-15, 0) / 20) * self._recorded(rng, n)
        return b

    def example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One mixture: (example_samples,) float32 in [-1, 1] and (example_samples / hop,)
        labels in {0, 1}, or also ``labels.IGNORE`` with ``buried_snr_db`` set."""
        cfg, n = self.cfg, self.cfg.example_samples
        s, y = self._speech_track(rng, n)
        b = self._background(rng, n)
        if y.any():
            snr = rng.uniform(40, 60) if rng.random() < cfg.p_clean else rng.uniform(*cfg.snr_db)
            speech_rms = augment.rms(s[np.repeat(y, HOP) > 0])
            b = b * (speech_rms / 10 ** (snr / 20))
            x = s + b
            if cfg.buried_snr_db is not None:
                y = mark_buried(y, s, b, cfg.buried_snr_db)
        else:
            x = b
        # Draw only when enabled, so the dev protocol's random stream stays as it was.
        if cfg.p_band_limit and rng.random() < cfg.p_band_limit:
            x = augment.band_limit(rng, x, cfg.band_low_hz, cfg.band_high_hz)
        if rng.random() < cfg.p_telephone:
            x = augment.telephone(rng, x, cfg.telephone_orders, cfg.telephone_low_cut_hz)
        if rng.random() < cfg.p_eq:
            x = augment.random_eq(rng, x)
        if rng.random() < cfg.p_clip:
            x = augment.clip(rng, x)
        level = augment.rms(x)
        if level > 1e-7:
            x = x * (10 ** ((-20 + rng.uniform(*cfg.gain_db)) / 20) / level)
        if rng.random() < cfg.p_dc:
            x = x + rng.uniform(-0.05, 0.05)
        if rng.random() < cfg.p_dropout:
            a = int(rng.integers(0, y.size))
            b_ = min(y.size, a + int(rng.integers(5, 60)))
            x[a * HOP : b_ * HOP] = 0.0
            y[a:b_] = 0.0
        return np.clip(x, -1.0, 1.0).astype(np.float32), y


class ShareMixer:
    """Each example from ``first`` with probability ``share``, else from ``second``: a
    fine-tune on users' data that keeps seeing the bundled recipe's mixtures. Same
    ``example(rng)`` contract as ``Mixer``; one draw of ``rng`` picks the side, so an
    example stays a pure function of the batch's seed."""

    def __init__(self, first, second, share: float) -> None:
        if not 0.0 < share <= 1.0:
            raise InvalidInputError(f"share must be in (0, 1], got {share}")
        self.first, self.second, self.share = first, second, share

    def example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return (self.first if rng.random() < self.share else self.second).example(rng)


def _synthetic(source: str) -> bool:
    return any(e in source for e in SYNTHETIC_ENGINES)


class MixtureBatches(IterableDataset):
    """Endless batches; batch ``k`` is drawn from ``default_rng([seed, k])``.

    Worker ``w`` of ``W`` makes batches ``start + w, start + w + W, ...``; the DataLoader
    returns them round-robin, i.e. in order of ``k``.
    """

    def __init__(self, mixer: Mixer, batch_size: int, seed: int, start: int = 0) -> None:
        self.mixer, self.batch_size, self.seed, self.start = mixer, batch_size, seed, start

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch k: (batch_size, example_samples) audio and (batch_size, frames) labels."""
        rng = np.random.default_rng([self.seed, k])
        xs, ys = zip(*(self.mixer.example(rng) for _ in range(self.batch_size)), strict=True)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    def __iter__(self):
        info = get_worker_info()
        w, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        k = self.start + w
        while True:
            yield self.batch(k)
            k += nw


def batch_loader(mixer: Mixer, batch_size: int, seed: int, start: int, workers: int) -> DataLoader:
    ds = MixtureBatches(mixer, batch_size, seed, start)
    return DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def fixed_set(mixer: Mixer, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed evaluation set of ``count`` mixtures (the dev split's mixer, its own seed)."""
    (x, y), *_ = fixed_blocks(mixer, count, seed, block=max(count, 1))
    return x, y


def fixed_blocks(mixer: Mixer, count: int, seed: int, block: int = 400):
    """``fixed_set(mixer, count, seed)`` in blocks of at most ``block`` examples, so a large
    set need not be in memory at once; the first ``n`` examples are ``fixed_set``'s ``n``."""
    rng = np.random.default_rng([seed, 10**6])
    for start in range(0, count, block):
        n = min(block, count - start)
        xs, ys = zip(*(mixer.example(rng) for _ in range(n)), strict=True)
        yield np.stack(xs), np.stack(ys)
