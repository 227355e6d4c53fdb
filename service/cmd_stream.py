"""``vadnet stream FILE --server HOST:PORT``: stream a file, print events as they arrive.

Events go to stdout as ``start|end <time_s> <sample>`` lines (``probs <first_frame>
<values...>`` with ``--probs``). With ``--format`` they go to stderr instead, and stdout
gets exactly what ``vadnet detect FILE --format F`` prints, so the two can be diffed.

A stream cut by a draining, dead or frozen replica resumes on another by itself (see
service/failover.py), so the output is the same; when no replica can finish it, the
command exits 2 with one line saying why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from .cmd_detect import SEGMENTER_FLAGS, add_segmenter_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .client import add_connection_arguments

    parser.add_argument("file", help="audio file (wav/flac/ogg...)")
    add_connection_arguments(parser)
    parser.add_argument("--realtime", action="store_true", help="send at real-time pace")
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length (default 20)")
    parser.add_argument("--probs", action="store_true", help="also print frame probabilities")
    parser.add_argument(
        "--format",
        choices=("text", "json", "rttm"),
        help="end with the segments as `vadnet detect --format` prints them (events to stderr)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="deadline for the whole stream, seconds"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=8.0,
        help="abandon (and retry) a call whose server answers nothing this long (frozen);"
        " give up after 3 times this without progress; default 8",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="calls in a row that may fail before giving up (resume elsewhere); default 5",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="do not resume a cut stream on another replica: fail at once",
    )
    add_segmenter_arguments(parser)  # the same knobs as `vadnet detect`


def run(args: argparse.Namespace) -> int:
    from vadnet.model.formats import format_segments
    from vadnet.v1 import vad_pb2 as pb

    from .client import RetryPolicy, VadClient, connection_from_args, segments_from_events

    out = sys.stdout
    events_out = sys.stderr if args.format else sys.stdout
    segmenter = {name: getattr(args, name) for name, _, _ in SEGMENTER_FLAGS}
    events = []
    with VadClient(**connection_from_args(args)) as client:
        try:
            for resp in client.stream(
                args.file,
                chunk_ms=args.chunk_ms,
                segmenter=segmenter,
                return_probabilities=args.probs,
                realtime=args.realtime,
                timeout=args.timeout,
                resume=args.resume,
                retry=RetryPolicy(retries=args.retries, stall_timeout_s=args.stall_timeout),
            ):
                lines = []
                for ev in resp.events:
                    kind = "start" if ev.kind == pb.SpeechEvent.SPEECH_START else "end"
                    lines.append(f"{kind}\t{ev.time_s:.3f}\t{ev.sample}\n")
                    events.append(ev)
                if args.probs and resp.probabilities.values:
                    values = " ".join(f"{v:.3f}" for v in resp.probabilities.values)
                    lines.append(f"probs\t{resp.probabilities.first_frame}\t{values}\n")
                if resp.is_final:
                    s = resp.summary
                    lines.append(
                        f"final\t{s.audio_s:.3f} s\t{s.frames} frames\t{s.segments} segments\n"
                    )
                events_out.write("".join(lines))
                events_out.flush()
        except grpc.RpcError as e:
            sys.stderr.write(f"vadnet stream: error: {e.code().name}: {e.details()}\n")
            return 2
    if args.format:
        out.write(format_segments(segments_from_events(events), args.format, Path(args.file).stem))
    return 0
