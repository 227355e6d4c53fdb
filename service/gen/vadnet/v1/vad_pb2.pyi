from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR16: _ClassVar[AudioEncoding]
    FLOAT32: _ClassVar[AudioEncoding]
    MULAW: _ClassVar[AudioEncoding]
    ALAW: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR16: AudioEncoding
FLOAT32: AudioEncoding
MULAW: AudioEncoding
ALAW: AudioEncoding

class SegmenterConfig(_message.Message):
    __slots__ = ("threshold", "neg_threshold", "min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms", "max_speech_duration_s")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NEG_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEECH_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_SILENCE_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_PAD_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEECH_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    neg_threshold: float
    min_speech_duration_ms: int
    min_silence_duration_ms: int
    speech_pad_ms: int
    max_speech_duration_s: float
    def __init__(self, threshold: _Optional[float] = ..., neg_threshold: _Optional[float] = ..., min_speech_duration_ms: _Optional[int] = ..., min_silence_duration_ms: _Optional[int] = ..., speech_pad_ms: _Optional[int] = ..., max_speech_duration_s: _Optional[float] = ...) -> None: ...

class StreamingConfig(_message.Message):
    __slots__ = ("sample_rate_hz", "encoding", "segmenter", "return_probabilities", "resumable", "resume")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SEGMENTER_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    encoding: AudioEncoding
    segmenter: SegmenterConfig
    return_probabilities: bool
    resumable: bool
    resume: ResumePoint
    def __init__(self, sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., segmenter: _Optional[_Union[SegmenterConfig, _Mapping]] = ..., return_probabilities: _Optional[bool] = ..., resumable: _Optional[bool] = ..., resume: _Optional[_Union[ResumePoint, _Mapping]] = ...) -> None: ...

class SegmenterState(_message.Message):
    __slots__ = ("frames", "segment_start_frame", "start_decided", "silence_start_frame", "splits", "last_end_s", "pending", "open_start", "segments")
    class Silence(_message.Message):
        __slots__ = ("first_frame", "frames")
        FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
        FRAMES_FIELD_NUMBER: _ClassVar[int]
        first_frame: int
        frames: int
        def __init__(self, first_frame: _Optional[int] = ..., frames: _Optional[int] = ...) -> None: ...
    class PendingEvent(_message.Message):
        __slots__ = ("kind", "time_s")
        KIND_FIELD_NUMBER: _ClassVar[int]
        TIME_S_FIELD_NUMBER: _ClassVar[int]
        kind: SpeechEvent.Kind
        time_s: float
        def __init__(self, kind: _Optional[_Union[SpeechEvent.Kind, str]] = ..., time_s: _Optional[float] = ...) -> None: ...
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_START_FRAME_FIELD_NUMBER: _ClassVar[int]
    START_DECIDED_FIELD_NUMBER: _ClassVar[int]
    SILENCE_START_FRAME_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    LAST_END_S_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    OPEN_START_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    frames: int
    segment_start_frame: int
    start_decided: bool
    silence_start_frame: int
    splits: _containers.RepeatedCompositeFieldContainer[SegmenterState.Silence]
    last_end_s: float
    pending: _containers.RepeatedCompositeFieldContainer[SegmenterState.PendingEvent]
    open_start: SpeechEvent
    segments: int
    def __init__(self, frames: _Optional[int] = ..., segment_start_frame: _Optional[int] = ..., start_decided: _Optional[bool] = ..., silence_start_frame: _Optional[int] = ..., splits: _Optional[_Iterable[_Union[SegmenterState.Silence, _Mapping]]] = ..., last_end_s: _Optional[float] = ..., pending: _Optional[_Iterable[_Union[SegmenterState.PendingEvent, _Mapping]]] = ..., open_start: _Optional[_Union[SpeechEvent, _Mapping]] = ..., segments: _Optional[int] = ...) -> None: ...

class ResumePoint(_message.Message):
    __slots__ = ("replay_from_sample", "segmenter")
    REPLAY_FROM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTER_FIELD_NUMBER: _ClassVar[int]
    replay_from_sample: int
    segmenter: SegmenterState
    def __init__(self, replay_from_sample: _Optional[int] = ..., segmenter: _Optional[_Union[SegmenterState, _Mapping]] = ...) -> None: ...

class StreamingDetectRequest(_message.Message):
    __slots__ = ("config", "audio")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    config: StreamingConfig
    audio: bytes
    def __init__(self, config: _Optional[_Union[StreamingConfig, _Mapping]] = ..., audio: _Optional[bytes] = ...) -> None: ...

class SpeechEvent(_message.Message):
    __slots__ = ("kind", "time_s", "sample")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SpeechEvent.Kind]
        SPEECH_START: _ClassVar[SpeechEvent.Kind]
        SPEECH_END: _ClassVar[SpeechEvent.Kind]
    KIND_UNSPECIFIED: SpeechEvent.Kind
    SPEECH_START: SpeechEvent.Kind
    SPEECH_END: SpeechEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    kind: SpeechEvent.Kind
    time_s: float
    sample: int
    def __init__(self, kind: _Optional[_Union[SpeechEvent.Kind, str]] = ..., time_s: _Optional[float] = ..., sample: _Optional[int] = ...) -> None: ...

class Probabilities(_message.Message):
    __slots__ = ("first_frame", "values")
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    first_frame: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, first_frame: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("audio_s", "input_samples", "frames", "segments", "ended_by_server")
    AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    INPUT_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_SERVER_FIELD_NUMBER: _ClassVar[int]
    audio_s: float
    input_samples: int
    frames: int
    segments: int
    ended_by_server: bool
    def __init__(self, audio_s: _Optional[float] = ..., input_samples: _Optional[int] = ..., frames: _Optional[int] = ..., segments: _Optional[int] = ..., ended_by_server: _Optional[bool] = ...) -> None: ...

class StreamingDetectResponse(_message.Message):
    __slots__ = ("events", "probabilities", "input_samples_processed", "is_final", "summary", "checkpoint")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SAMPLES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[SpeechEvent]
    probabilities: Probabilities
    input_samples_processed: int
    is_final: bool
    summary: StreamSummary
    checkpoint: ResumePoint
    def __init__(self, events: _Optional[_Iterable[_Union[SpeechEvent, _Mapping]]] = ..., probabilities: _Optional[_Union[Probabilities, _Mapping]] = ..., input_samples_processed: _Optional[int] = ..., is_final: _Optional[bool] = ..., summary: _Optional[_Union[StreamSummary, _Mapping]] = ..., checkpoint: _Optional[_Union[ResumePoint, _Mapping]] = ...) -> None: ...

class RawAudio(_message.Message):
    __slots__ = ("data", "sample_rate_hz", "encoding")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sample_rate_hz: int
    encoding: AudioEncoding
    def __init__(self, data: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("file", "raw", "segmenter", "return_probabilities")
    FILE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    SEGMENTER_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    file: bytes
    raw: RawAudio
    segmenter: SegmenterConfig
    return_probabilities: bool
    def __init__(self, file: _Optional[bytes] = ..., raw: _Optional[_Union[RawAudio, _Mapping]] = ..., segmenter: _Optional[_Union[SegmenterConfig, _Mapping]] = ..., return_probabilities: _Optional[bool] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("start_s", "end_s", "start_sample", "end_sample")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    END_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    start_sample: int
    end_sample: int
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., start_sample: _Optional[int] = ..., end_sample: _Optional[int] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("segments", "probabilities", "audio_s", "frames", "input_sample_rate_hz")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_S_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    audio_s: float
    frames: int
    input_sample_rate_hz: int
    def __init__(self, segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., probabilities: _Optional[_Iterable[float]] = ..., audio_s: _Optional[float] = ..., frames: _Optional[int] = ..., input_sample_rate_hz: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("version", "sample_rate_hz", "hop_s", "hop_samples", "lookahead_s", "lookahead_frames", "latency_s", "receptive_field_s", "parameters", "device", "max_batch_size", "max_queue_delay_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    HOP_S_FIELD_NUMBER: _ClassVar[int]
    HOP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_S_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    RECEPTIVE_FIELD_S_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    version: str
    sample_rate_hz: int
    hop_s: float
    hop_samples: int
    lookahead_s: float
    lookahead_frames: int
    latency_s: float
    receptive_field_s: float
    parameters: int
    device: str
    max_batch_size: int
    max_queue_delay_ms: float
    def __init__(self, version: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., hop_s: _Optional[float] = ..., hop_samples: _Optional[int] = ..., lookahead_s: _Optional[float] = ..., lookahead_frames: _Optional[int] = ..., latency_s: _Optional[float] = ..., receptive_field_s: _Optional[float] = ..., parameters: _Optional[int] = ..., device: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ...) -> None: ...
