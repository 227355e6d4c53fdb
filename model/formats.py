"""Segment lists as text: the one printer behind ``vadnet detect`` and ``vadnet stream``,
so their outputs can be diffed.

* ``text``: one line per segment, ``start_s<TAB>end_s`` with 3 decimals.
* ``json``: a JSON list of ``{"start_s", "end_s", "start_sample", "end_sample"}``.
* ``rttm``: NIST RTTM, ``SPEAKER <file_id> 1 <start> <duration> <NA> <NA> speech <NA> <NA>``.

Every format ends with a newline unless it is empty text/RTTM (no segments, no lines).
"""

from __future__ import annotations

import json
import re

from .errors import InvalidInputError
from .segmenter import Segment

FORMATS = ("text", "json", "rttm")


def _rttm_id(file_id: str) -> str:
    # RTTM fields are whitespace-separated: a space in the id would shift every column.
    return re.sub(r"\s+", "_", file_id.strip()) or "audio"


def format_segments(segments: list[Segment], fmt: str, file_id: str = "audio") -> str:
    """Render ``segments`` in ``fmt`` (one of :data:`FORMATS`); ``file_id`` names the
    recording in RTTM."""
    if fmt == "text":
        return "".join(f"{s.start_s:.3f}\t{s.end_s:.3f}\n" for s in segments)
    if fmt == "json":
        rows = [
            {
                "start_s": round(s.start_s, 6),
                "end_s": round(s.end_s, 6),
                "start_sample": int(s.start_sample),
                "end_sample": int(s.end_sample),
            }
            for s in segments
        ]
        return json.dumps(rows) + "\n"
    if fmt == "rttm":
        fid = _rttm_id(file_id)
        return "".join(
            f"SPEAKER {fid} 1 {s.start_s:.3f} {s.end_s - s.start_s:.3f} <NA> <NA> speech <NA> <NA>\n"
            for s in segments
        )
    raise InvalidInputError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
