"""Request fields that need checking before use: segmenter knobs and audio encodings.

Shared by the servicer (streams) and the Detect worker process (which parses Detect
requests itself, service/detect_worker.py).
"""

from __future__ import annotations

from vadnet.model.errors import InvalidInputError
from vadnet.model.segmenter import SegmenterOptions
from vadnet.v1 import vad_pb2 as pb

_SEGMENTER_FIELDS = (
    "threshold",
    "neg_threshold",
    "min_speech_duration_ms",
    "min_silence_duration_ms",
    "speech_pad_ms",
    "max_speech_duration_s",
)


def segmenter_options(msg: pb.SegmenterConfig) -> SegmenterOptions:
    """The options set in ``msg``; unset fields keep SegmenterOptions' defaults."""
    opts = SegmenterOptions.from_dict(
        {name: getattr(msg, name) for name in _SEGMENTER_FIELDS if msg.HasField(name)}
    )
    opts.validate()
    return opts


def encoding_name(value: int) -> str:
    if value == pb.AUDIO_ENCODING_UNSPECIFIED or value not in pb.AudioEncoding.values():
        raise InvalidInputError(
            f"encoding {value} is not supported: set encoding to LINEAR16, FLOAT32, MULAW or ALAW"
        )
    return pb.AudioEncoding.Name(value)
