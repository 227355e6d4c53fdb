"""Users' own recordings for retraining: plain speech/ and noise/ folders to mix, or a
folder of real recordings with a labels manifest (CSV or JSON of speech segments).

Both become in-memory clip sets shaped like the source cache's ``ClipSet`` (``clips``,
``clip(i)``, ``clip_labels(i)``), so the same mixer and training loop serve them.

One file never stops a run: any sample rate soundfile reads is resampled to 16 kHz (also
rates outside the 8-48 kHz that serving accepts, such as a 5 kHz background), and a file
that cannot be used (undecodable, empty, NaN samples) is skipped with a warning and listed
in ``MemoryClips.skipped``, which the run reports at its end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from ..audio import MAX_RATE_HZ, MIN_RATE_HZ, read_samples, resample_to_model_rate
from ..errors import InvalidInputError
from .evaluate import read_manifest, segments_to_labels
from .labels import HOP, frame_labels

logger = logging.getLogger("vadnet")

SR = 16_000
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}


@dataclass
class MemoryClips:
    """Clips held in memory; ``split`` keeps whole speakers (sub-folders) together."""

    audio: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    clips: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: files not used

    def clip(self, i: int) -> np.ndarray:
        return self.audio[i]

    def clip_labels(self, i: int) -> np.ndarray:
        return self.labels[i]

    def select(self, split: str) -> MemoryClips:
        keep = [i for i, c in enumerate(self.clips) if c["split"] == split]
        return MemoryClips(
            [self.audio[i] for i in keep],
            [self.labels[i] for i in keep],
            [self.clips[i] for i in keep],
        )

    def seconds(self) -> float:
        return sum(a.size for a in self.audio) / SR


def _audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InvalidInputError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise InvalidInputError(
            f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {folder}"
        )
    return files


def read_any_rate(path: Path) -> tuple[np.ndarray, int]:
    """A file's samples as (n,) float32 mono at 16 kHz, from any rate soundfile reads,
    and the file's own rate.

    Rates serving accepts (8-48 kHz) go through the same resampler as ``vadnet detect``;
    others (a 5 kHz background, a 96 kHz recording) through soxr directly: for training
    a 5 kHz file is still a band-limited background worth having.
    """
    x, rate = read_samples(path)
    if x.size == 0:
        raise InvalidInputError(f"{path} contains no audio samples")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{path} contains NaN/Inf samples")
    if MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        return resample_to_model_rate(x, rate), rate
    logger.debug("%s: resampling %s Hz to %s Hz", path, rate, SR)
    return soxr.resample(x, rate, SR, quality="HQ").astype(np.float32), rate


def _read_or_skip(path: Path, skipped: list[dict]) -> tuple[np.ndarray, int] | tuple[None, None]:
    """``read_any_rate``, or Nones after a warning and an entry in ``skipped``."""
    try:
        return read_any_rate(path)
    except (InvalidInputError, OSError, RuntimeError, ValueError) as e:
        # soundfile, soxr and librosa raise these for broken files; a long run goes on.
        logger.warning("skipping %s: %s", path, e)
        skipped.append({"path": str(path), "reason": str(e)})
        return None, None


def _split_of(group: str, dev_fraction: float) -> str:
    # A stable hash of the speaker/group name, so a group is always on the same side.
    h = int.from_bytes(group.encode(), "little") % 9973
    return "dev" if (h * 7919 % 9973) / 9973 < dev_fraction else "train"


def folder_clips(folder: str | Path, kind: str, dev_fraction: float = 0.1) -> MemoryClips:
    """Every audio file under ``folder``; the first sub-folder level is the speaker/group.
    Speech clips get energy labels (``labels.frame_labels``)."""
    folder = Path(folder)
    out = MemoryClips()
    for p in _audio_files(folder):
        rel = p.relative_to(folder)
        group = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        x, rate = _read_or_skip(p, out.skipped)
        if x is None:
            continue
        out.audio.append(x)
        out.labels.append(
            frame_labels(x) if kind == "speech" else np.zeros(-(-x.size // HOP), np.uint8)
        )
        out.clips.append(
            {
                "source": f"user-{kind}",
                "speaker": group,
                "split": _split_of(group, dev_fraction),
                "path": str(p),
                "rate_hz": rate,
            }
        )
    _check_any_left(out, folder)
    _ensure_both_splits(out)
    odd = sum(not MIN_RATE_HZ <= c["rate_hz"] <= MAX_RATE_HZ for c in out.clips)
    logger.info(
        "%s: %s %s files, %.1f s (%s of them resampled from rates outside %s-%s Hz), %s skipped",
        folder, len(out.clips), kind, out.seconds(), odd, MIN_RATE_HZ, MAX_RATE_HZ, len(out.skipped),
    )  # fmt: skip
    return out


def _check_any_left(clips: MemoryClips, where: str | Path) -> None:
    if not clips.clips:
        raise InvalidInputError(
            f"no usable audio in {where}: all {len(clips.skipped)} files were skipped"
            f" (first: {clips.skipped[0]['reason']})"
        )


def _ensure_both_splits(clips: MemoryClips) -> None:
    splits = {c["split"] for c in clips.clips}
    if splits == {"train"} and len(clips.clips) > 1:
        clips.clips[-1]["split"] = "dev"
    elif splits == {"dev"}:
        clips.clips[0]["split"] = "train"


def manifest_clips(path: str | Path, dev_fraction: float = 0.1) -> MemoryClips:
    """Labelled real recordings from a manifest (the format ``vadnet eval`` reads), split
    by file."""
    out = MemoryClips()
    for entry in read_manifest(path):
        p = entry.path
        x, rate = _read_or_skip(p, out.skipped)
        if x is None:
            continue
        out.audio.append(x)
        out.labels.append(segments_to_labels(entry.segments, -(-x.size // HOP), HOP / SR))
        out.clips.append(
            {
                "source": "user-labelled",
                "speaker": p.stem,
                "split": _split_of(p.name, dev_fraction),
                "path": str(p),
                "rate_hz": rate,
            }
        )
    _check_any_left(out, path)
    _ensure_both_splits(out)
    return out


class CropMixer:
    """Examples for labelled recordings: random crops, random gain, the recordings' own
    labels. Same ``example(rng)`` contract as ``data.Mixer``."""

    def __init__(self, clips: MemoryClips, example_samples: int) -> None:
        self.clips, self.n = clips, example_samples

    def example(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(rng.integers(len(self.clips.clips)))
        x, y = self.clips.clip(i), self.clips.clip_labels(i).astype(np.float32)
        frames = self.n // HOP
        out_x = np.zeros(self.n, np.float32)
        out_y = np.zeros(frames, np.float32)
        start = int(rng.integers(0, max(1, y.size - frames + 1)))
        seg = x[start * HOP : start * HOP + self.n]
        out_x[: seg.size] = seg * 10 ** (rng.uniform(-20, 10) / 20)
        k = min(frames, y.size - start)
        out_y[:k] = y[start : start + k]
        return np.clip(out_x, -1, 1), out_y
