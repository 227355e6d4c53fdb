"""Scoring against a labelled manifest (``vadnet eval``).

Manifests list speech segments per file, with paths relative to the manifest:

* CSV: ``path,start_s,end_s`` rows, one per speech segment (an optional header row
  ``path,start_s,end_s``); a file without speech appears once with empty start/end.
* JSON: ``[{"path": "a.wav", "segments": [[0.4, 2.9], ...]}, ...]``.

Frame ``k`` (``[k * hop_s, (k + 1) * hop_s)``) is labelled speech when its midpoint lies in
a labelled segment.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..errors import InvalidInputError
from ..inference import frame_probs
from .metrics import frame_metrics

logger = logging.getLogger("vadnet")


def segments_to_labels(
    segments: list[tuple[float, float]], num_frames: int, hop_s: float = 0.016
) -> np.ndarray:
    """[(start_s, end_s), ...] -> (num_frames,) uint8, 1 where a frame's midpoint is inside
    a segment (segment ends are exclusive)."""
    mid = (np.arange(num_frames) + 0.5) * hop_s
    labels = np.zeros(num_frames, np.uint8)
    for start, end in segments:
        labels[(mid >= start) & (mid < end)] = 1
    return labels


@dataclass
class ManifestEntry:
    path: Path
    segments: list[tuple[float, float]] = field(default_factory=list)


def _segment(start: object, end: object, where: str) -> tuple[float, float]:
    try:
        s, e = float(start), float(end)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{where}: start/end must be numbers, got {start!r}, {end!r}"
        ) from err
    if not (math.isfinite(s) and math.isfinite(e) and 0 <= s < e):
        raise InvalidInputError(f"{where}: need 0 <= start_s < end_s, got {s}, {e}")
    return s, e


def _read_csv(path: Path) -> list[ManifestEntry]:
    entries: dict[str, ManifestEntry] = {}
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() == "path":
                continue
            if len(cells) != 3:
                raise InvalidInputError(
                    f"{path}:{lineno}: expected 3 columns path,start_s,end_s, got {len(cells)}"
                )
            name, start, end = cells
            entry = entries.setdefault(name, ManifestEntry(path.parent / name))
            if start or end:
                entry.segments.append(_segment(start, end, f"{path}:{lineno}"))
    return list(entries.values())


def _read_json(path: Path) -> list[ManifestEntry]:
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(items, list):
        raise InvalidInputError(f"{path}: expected a JSON list of {{path, segments}} objects")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InvalidInputError(f"{where}: expected an object with a string 'path'")
        segs = item.get("segments", [])
        if not isinstance(segs, list) or not all(
            isinstance(s, list | tuple) and len(s) == 2 for s in segs
        ):
            raise InvalidInputError(f"{where}: 'segments' must be a list of [start_s, end_s]")
        out.append(ManifestEntry(path.parent / item["path"], [_segment(*s, where) for s in segs]))
    return out


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """A CSV or JSON manifest (chosen by the ``.json`` suffix) -> entries, paths resolved
    relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"manifest not found: {path}")
    try:
        entries = _read_json(path) if path.suffix.lower() == ".json" else _read_csv(path)
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path} is not a text manifest: {e}") from e
    if not entries:
        raise InvalidInputError(f"manifest {path} lists no files")
    return entries


def evaluate(model, manifest: str | Path, threshold: float = 0.5) -> dict:
    """Score ``model`` on every file of ``manifest``.

    Returns ``{"manifest", "threshold", "files": [{"path", "duration_s", **metrics}],
    "overall": metrics}``, where ``overall`` pools the frames of all files.
    """
    if not (isinstance(threshold, int | float) and 0 < threshold < 1):
        raise InvalidInputError(f"threshold must be in (0, 1), got {threshold!r}")
    entries = read_manifest(manifest)
    hop_s = model.hop_samples / model.sample_rate
    files, all_probs, all_labels = [], [], []
    for entry in entries:
        audio = load_audio(entry.path)
        probs = frame_probs(model, audio.samples)
        labels = segments_to_labels(entry.segments, probs.size, hop_s)
        m = frame_metrics(probs, labels, threshold)
        files.append({"path": str(entry.path), "duration_s": audio.duration_s, **m})
        all_probs.append(probs)
        all_labels.append(labels)
        logger.debug("%s: AUC %.4f F1 %.4f", entry.path, m["auc"], m["f1"])
    overall = frame_metrics(np.concatenate(all_probs), np.concatenate(all_labels), threshold)
    return {"manifest": str(manifest), "threshold": threshold, "files": files, "overall": overall}
