"""The training-data cache: every kept source decoded once to 16 kHz mono int16.

Layout of ``cache_dir`` (the training mixer reads exactly this):

* ``speech.pcm16`` int16 little-endian raw, all speech clips concatenated;
* ``speech.json`` ``{"clips": [{"offset", "length" (samples), "source", "speaker", "lang",
  "wideband", "split" ("train" | "dev"), "path" (original file and member),
  "labels_offset", "labels_length"}, ...]}``;
* ``speech_labels.u8`` uint8 frame labels (:func:`vadnet.model.training.labels.frame_labels` of each
  clip at hop 256), concatenated;
* ``noise.pcm16`` / ``noise.json``: the same clip fields without labels, plus ``"kind"``
  (``"music" | "sfx" | "ambient"``);
* ``report.json``: per-file vetting numbers and the reason of every dropped file;
* ``DONE``: written last; a directory without it is incomplete.

Levels are kept as recorded (the mixer applies random gain). What is kept, dropped and why
is in docs/data.md; the vetting rules are :func:`vet_speech`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import InvalidInputError
from .labels import HOP, frame_energy_db, frame_labels, speech_band
from .rcc import rcc_files
from .sources_catalog import SourceItem, real_items
from .sources_synth import render, synth_specs

logger = logging.getLogger("vadnet")

SAMPLE_RATE = 16_000
# Digital silence: |sample| <= 2 LSB (below -84 dBFS), i.e. dither at most.
SILENCE_LSB = 2
# Leading/trailing digital silence longer than this is cut down to KEEP_SILENCE_S:
# pauses matter, but seconds of zeros only teach the model about zeros.
MAX_EDGE_SILENCE_S = 0.5
KEEP_SILENCE_S = 0.25
MIN_CLIP_FRAMES = 4
# Vetting thresholds of speech clips (see vet_speech and docs/data.md).
MIN_DYNAMIC_DB = 25.0  # peak - floor: below this there is no pause to measure the floor
WIDEBAND_MIN_RATE = 16_000
# Which source list built a cache, written into DONE. A cache of an older list is complete
# but lacks sources: ``build_cache`` refuses to call it done (it would silently train on
# the old data), ``load_cache`` warns. Bump it whenever the catalogue or a rule changes.
CATALOG = "issue16"


# ---------------------------------------------------------------------------- decoding

_ZIPS: dict[str, zipfile.ZipFile] = {}
_BUNDLES: dict[str, dict[str, bytes]] = {}  # Qt resource bundles (gcompris), read whole once


def _read(item: SourceItem) -> tuple[np.ndarray, int]:
    """Decode one item -> ``((n,) float32 mono at its own rate, rate in Hz)``."""
    if item.synth is not None:
        return render(item.synth)
    if "::" in item.path:
        zpath, member = item.path.split("::", 1)
        if zpath.endswith(".rcc"):
            if zpath not in _BUNDLES:
                _BUNDLES[zpath] = rcc_files(zpath)
            data = io.BytesIO(_BUNDLES[zpath][member])
        else:
            if zpath not in _ZIPS:
                _ZIPS[zpath] = zipfile.ZipFile(zpath)
            data = io.BytesIO(_ZIPS[zpath].read(member))
        x, sr = sf.read(data, dtype="float32", always_2d=True)
    else:
        x, sr = sf.read(item.path, dtype="float32", always_2d=True)
    return x.mean(axis=1), int(sr)


def to_int16_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """``(n,)`` float32 at ``sr`` Hz -> ``(m,)`` int16 at 16 kHz (soxr HQ), levels unchanged."""
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def trim_edge_silence(q: np.ndarray) -> np.ndarray:
    """Cut leading/trailing digital silence longer than 0.5 s down to 0.25 s.

    ``(n,)`` int16 at 16 kHz -> ``(m,)`` int16, a view of ``q``.
    """
    loud = np.flatnonzero(np.abs(q.astype(np.int32)) > SILENCE_LSB)
    if loud.size == 0:
        return q[:0]
    max_edge = int(MAX_EDGE_SILENCE_S * SAMPLE_RATE)
    keep = int(KEEP_SILENCE_S * SAMPLE_RATE)
    start, end = int(loud[0]), int(loud[-1]) + 1
    lo = start - keep if start > max_edge else 0
    hi = end + keep if q.shape[0] - end > max_edge else q.shape[0]
    return q[lo:hi]


def band_ratios(x: np.ndarray, sr: int) -> tuple[float, float]:
    """Share of energy below 250 Hz and above 3.6 kHz of ``(n,)`` audio at ``sr`` Hz.

    Telephone/radio processing removes both; used to flag band-limited voices.
    """
    if x.size < 512:
        return float("nan"), float("nan")
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / sr)
    total = spec.sum() + 1e-20
    return float(spec[freqs < 250].sum() / total), float(spec[freqs > 3600].sum() / total)


def vet_speech(q: np.ndarray, labels: np.ndarray) -> tuple[str | None, dict]:
    """Decide whether a decoded speech clip is usable; returns ``(reason or None, numbers)``.

    ``q`` ``(n,)`` int16 at 16 kHz, ``labels`` ``(frames,)`` of :func:`frame_labels`.
    Dropped: silent clips, clips shorter than 4 frames, clips with no speech frame, and
    clips whose quietest frames are within ``MIN_DYNAMIC_DB`` of the loudest (no pause to
    measure the floor: either trimmed into the word with a noise floor, or compressed).
    """
    e = frame_energy_db(speech_band(q.astype(np.float32) / 32768.0))
    peak = float(e.max()) if e.size else -100.0
    floor = float(np.percentile(e, 10)) if e.size else -100.0
    lo_floor = float(e.min()) if e.size else -100.0
    stats = {
        "peak_db": round(peak, 1),
        "floor_db": round(floor, 1),
        "min_db": round(lo_floor, 1),
        "speech_frac": round(float(labels.mean()) if labels.size else 0.0, 3),
        "edge_speech": [int(labels[0]), int(labels[-1])] if labels.size else [0, 0],
    }
    if peak <= -80.0:
        return "silent", stats
    if e.size < MIN_CLIP_FRAMES:
        return "too short", stats
    if labels.sum() == 0:
        return "no speech frame", stats
    if peak - lo_floor < MIN_DYNAMIC_DB:
        return "no pause: quietest frame within 25 dB of the peak", stats
    return None, stats


def _process(
    item: SourceItem,
) -> tuple[SourceItem, np.ndarray, np.ndarray | None, dict, str | None]:
    """Worker: decode, resample, trim, label and vet one item."""
    try:
        x, sr = _read(item)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the build
        return item, np.zeros(0, np.int16), None, {}, f"decode failed: {e}"
    lf, hf = band_ratios(x, sr)
    q = trim_edge_silence(to_int16_16k(x, sr))
    stats = {"rate_hz": sr, "seconds": round(q.shape[0] / SAMPLE_RATE, 3)}
    stats.update({"lf_share": round(lf, 4), "hf_share": round(hf, 4)})
    if item.kind == "noise":
        if q.shape[0] < MIN_CLIP_FRAMES * HOP:
            return item, q, None, stats, "silent or too short"
        return item, q, None, stats, None
    labels = frame_labels(q.astype(np.float32) / 32768.0).astype(np.uint8)
    reason, vstats = vet_speech(q, labels)
    stats.update(vstats)
    return item, q, labels, stats, reason


def _nice() -> None:
    os.nice(10)  # the lead trains on the same two cores


# ---------------------------------------------------------------------------- building


def synth_items(n: int, seed: int) -> list[SourceItem]:
    """``n`` synthetic utterances as items (speaker = engine + voice)."""
    out = []
    for s in synth_specs(n, seed):
        out.append(
            SourceItem(
                kind="speech",
                source=s["engine"],
                path=f"synth:{s['engine']}:{s['voice']}:{s['id']}",
                speaker=f"{s['engine']}:{s['voice']}",
                lang=s["lang"],
                split=s["split"],
                synth=s,
            )
        )
    return out


class _Writer:
    """Appends clips of one kind to ``<kind>.pcm16`` (+ labels) and collects their records."""

    def __init__(self, cache_dir: Path, kind: str):
        self.kind = kind
        self.audio = open(cache_dir / f"{kind}.pcm16", "wb")  # noqa: SIM115
        self.labels = open(cache_dir / f"{kind}_labels.u8", "wb") if kind == "speech" else None  # noqa: SIM115
        self.offset = 0
        self.labels_offset = 0
        self.clips: list[dict] = []

    def add(self, item: SourceItem, q: np.ndarray, labels: np.ndarray | None, rate: int) -> None:
        rec = {
            "offset": self.offset,
            "length": int(q.shape[0]),
            "source": item.source,
            "speaker": item.speaker,
            "lang": item.lang,
            "wideband": bool(rate >= WIDEBAND_MIN_RATE),
            "split": item.split,
            "path": item.path,
        }
        self.audio.write(q.astype("<i2").tobytes())
        self.offset += int(q.shape[0])
        if self.labels is not None and labels is not None:
            rec["labels_offset"] = self.labels_offset
            rec["labels_length"] = int(labels.shape[0])
            self.labels.write(labels.astype(np.uint8).tobytes())
            self.labels_offset += int(labels.shape[0])
        else:
            rec["kind"] = item.noise_kind
        self.clips.append(rec)

    def close(self, cache_dir: Path) -> None:
        self.audio.close()
        if self.labels is not None:
            self.labels.close()
        tmp = cache_dir / f"{self.kind}.json.tmp"
        tmp.write_text(json.dumps({"clips": self.clips}, indent=0))
        tmp.replace(cache_dir / f"{self.kind}.json")


def _as_items(items: Iterable[SourceItem | dict]) -> list[SourceItem]:
    out = []
    for it in items:
        if isinstance(it, dict):
            it = SourceItem(**it)
        if it.kind not in ("speech", "noise") or it.split not in ("train", "dev"):
            raise InvalidInputError(
                f"item {it.path!r}: kind must be speech|noise and split train|dev, "
                f"got {it.kind!r}/{it.split!r}"
            )
        out.append(it)
    return out


def build_cache(
    cache_dir: str | Path,
    synth_utterances: int = 3000,
    seed: int = 0,
    workers: int = 2,
    items: Sequence[SourceItem | dict] | None = None,
) -> Path:
    """Decode every kept source once into ``cache_dir`` (layout in the module doc).

    Idempotent: returns at once if ``cache_dir/DONE`` exists. ``items`` replaces the
    installed real sources (tests pass a few files); ``synth_utterances`` synthetic
    utterances are added either way (0 for none).
    """
    cache_dir = Path(cache_dir)
    if (cache_dir / "DONE").exists():
        built = catalog_of(cache_dir)
        if built != CATALOG:
            raise InvalidInputError(
                f"{cache_dir} holds a cache of the source catalogue {built!r}, not {CATALOG!r}: "
                "build into a new directory (--cache DIR) or delete this one"
            )
        logger.info("cache %s is complete, not rebuilding", cache_dir)
        return cache_dir
    if synth_utterances < 0 or workers < 1:
        raise InvalidInputError("synth_utterances must be >= 0 and workers >= 1")
    cache_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    todo = _as_items(real_items() if items is None else items)
    todo += synth_items(synth_utterances, seed)
    logger.info("building %s from %d items with %d workers", cache_dir, len(todo), workers)
    writers = {k: _Writer(cache_dir, k) for k in ("speech", "noise")}
    report: list[dict] = []
    if workers == 1:
        results: Iterable = map(_process, todo)
        pool = None
    else:
        pool = get_context("spawn").Pool(workers, initializer=_nice)
        results = pool.imap(_process, todo, chunksize=4)
    try:
        for n, (item, q, labels, stats, reason) in enumerate(results):
            entry = {"path": item.path, "kind": item.kind, "source": item.source}
            entry.update({"speaker": item.speaker, "split": item.split, **stats})
            if item.synth is not None:
                entry["text"] = item.synth["text"]
            entry["dropped"] = reason
            report.append(entry)
            if reason is None:
                writers[item.kind].add(item, q, labels, stats["rate_hz"])
            if n % 500 == 0:
                logger.info("%d/%d items", n, len(todo))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    for w in writers.values():
        w.close(cache_dir)
    elapsed = time.monotonic() - t0
    (cache_dir / "report.json").write_text(
        json.dumps({"build_seconds": round(elapsed, 1), "items": report}, indent=0)
    )
    (cache_dir / "DONE").write_text(f"built in {elapsed:.1f} s\ncatalog {CATALOG}\n")
    logger.info("cache %s built in %.1f s", cache_dir, elapsed)
    return cache_dir


# ---------------------------------------------------------------------------- loading


def catalog_of(cache_dir: str | Path) -> str:
    """The source catalogue a complete cache was built from ("before-issue16" if unnamed)."""
    for line in (Path(cache_dir) / "DONE").read_text().splitlines():
        if line.startswith("catalog "):
            return line.split(" ", 1)[1].strip()
    return "before-issue16"


@dataclass
class ClipSet:
    """A read-only view over the clips of one kind (speech or noise)."""

    audio: np.memmap  # int16, shared between worker processes through the page cache
    clips: list[dict]
    labels: np.memmap | None = None  # uint8 frame labels (speech only)

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` -> ``(length,)`` float32 in [-1, 1] at 16 kHz."""
        c = self.clips[i]
        return self.audio[c["offset"] : c["offset"] + c["length"]].astype(np.float32) / 32768.0

    def clip_labels(self, i: int) -> np.ndarray:
        """Frame labels of clip ``i`` -> ``(ceil(length / 256),)`` float32 in {0, 1}."""
        if self.labels is None:
            raise InvalidInputError("noise clips have no labels: use the speech ClipSet")
        c = self.clips[i]
        lo = c["labels_offset"]
        return self.labels[lo : lo + c["labels_length"]].astype(np.float32)

    def select(self, split: str) -> ClipSet:
        """Only the clips of ``split`` ("train" or "dev"), sharing the same memory maps."""
        if split not in ("train", "dev"):
            raise InvalidInputError(f"split must be 'train' or 'dev', got {split!r}")
        return ClipSet(self.audio, [c for c in self.clips if c["split"] == split], self.labels)

    def seconds(self) -> float:
        """Total duration of the clips in seconds."""
        return sum(c["length"] for c in self.clips) / SAMPLE_RATE


def _memmap(path: Path, dtype: str) -> np.memmap:
    if path.stat().st_size == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=dtype)  # type: ignore[return-value]
    return np.memmap(path, dtype=dtype, mode="r")


def load_cache(cache_dir: str | Path) -> tuple[ClipSet, ClipSet]:
    """Open a built cache -> ``(speech, noise)`` ClipSets over read-only memory maps."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / "DONE").exists():
        raise InvalidInputError(f"{cache_dir} is not a complete cache (no DONE): run build_cache")
    if catalog_of(cache_dir) != CATALOG:
        logger.warning(
            "cache %s was built from the source catalogue %r, not %r: it lacks the newer "
            "sources (rebuild with `vadnet train --prepare --cache NEW_DIR`)",
            cache_dir,
            catalog_of(cache_dir),
            CATALOG,
        )
    speech = ClipSet(
        _memmap(cache_dir / "speech.pcm16", "<i2"),
        json.loads((cache_dir / "speech.json").read_text())["clips"],
        _memmap(cache_dir / "speech_labels.u8", "u1"),
    )
    noise = ClipSet(
        _memmap(cache_dir / "noise.pcm16", "<i2"),
        json.loads((cache_dir / "noise.json").read_text())["clips"],
    )
    return speech, noise
