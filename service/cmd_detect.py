"""``vadnet detect FILE``: offline speech segments of an audio file.

load_audio -> the offline forward over the whole signal (model/inference.py: exact, 60 s
slices) -> segment_probs -> format_segments. ``vadnet stream --format`` prints through the same
formatter, so the two outputs can be diffed.

This module also holds the small argument helpers that the other offline commands
(eval, export, inspect) share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NoReturn

SEGMENTER_FLAGS = (
    ("threshold", float, "P(speech) at or above which a frame is speech (default 0.5)"),
    ("neg_threshold", float, "P(speech) below which speech may end (default threshold - 0.15)"),
    ("min_speech_duration_ms", int, "drop shorter segments (default 250)"),
    ("min_silence_duration_ms", int, "silence that ends a segment (default 100)"),
    ("speech_pad_ms", int, "pad each segment by this much (default 30)"),
    ("max_speech_duration_s", float, "split longer segments (default: no limit)"),
)


# --- shared helpers ----------------------------------------------------------------------
def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argument errors one stderr line (no usage dump), like every other vadnet error."""

    def error(message: str) -> NoReturn:
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", metavar="CKPT", default=None, help="checkpoint (default: the bundled model)"
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    # One thread by default: a file is ~2,000x real time on one core already, and a
    # pipeline usually runs one detect per core; torch would otherwise take every core.
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads for inference (default %(default)s)",
    )


def load_model_for(args: argparse.Namespace):
    """The model ``--model`` names (bundled by default), with ``--threads`` applied."""
    import torch

    from vadnet.model.checkpoint import load_model
    from vadnet.model.errors import InvalidInputError

    if args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    return load_model(args.model)


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("segmenter (Silero VAD's knobs)")
    for name, kind, help_ in SEGMENTER_FLAGS:
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=help_)


def segmenter_options_from_args(args: argparse.Namespace):
    """The SegmenterOptions the flags ask for (unset flags keep the defaults)."""
    from vadnet.model.segmenter import SegmenterOptions

    return SegmenterOptions.from_dict({name: getattr(args, name) for name, _, _ in SEGMENTER_FLAGS})


# --- detect ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.add_argument("file", help="audio file (wav/flac/ogg/mp3...), or raw bytes with --raw-*")
    parser.add_argument(
        "--format", choices=("text", "json", "rttm"), default="text", help="output (default text)"
    )
    parser.add_argument(
        "--probs",
        action="store_true",
        help='print {"hop_s", "probs", "cpu_s", "threads"} as one JSON object instead of segments (cpu_s: CPU time of inference alone)',
    )
    parser.add_argument("--plot", metavar="PNG", help="draw waveform, P(speech) and segments")
    add_model_argument(parser)
    add_threads_argument(parser)
    add_segmenter_arguments(parser)
    raw = parser.add_argument_group("headerless input")
    raw.add_argument(
        "--raw-encoding",
        type=str.upper,
        choices=("LINEAR16", "FLOAT32", "MULAW", "ALAW"),
        help="FILE is raw samples in this encoding",
    )
    raw.add_argument("--raw-rate", type=int, metavar="HZ", help="sample rate of raw FILE")


def _load(args: argparse.Namespace):
    from vadnet.model.audio import decode_audio, load_audio
    from vadnet.model.errors import InvalidInputError

    if (args.raw_encoding is None) != (args.raw_rate is None):
        raise InvalidInputError("--raw-encoding and --raw-rate go together: give both or neither")
    if args.raw_encoding is None:
        return load_audio(args.file)
    path = Path(args.file)
    if not path.is_file():
        raise InvalidInputError(f"audio file not found: {path}")
    return decode_audio(path.read_bytes(), args.raw_encoding, args.raw_rate)


def run(args: argparse.Namespace) -> int:
    from vadnet.model.formats import format_segments
    from vadnet.model.segmenter import segment_probs

    # Cheap checks first: a bad knob or file fails before torch is imported.
    options = segmenter_options_from_args(args)
    audio = _load(args)

    from vadnet.model.inference import runner_for

    model = load_model_for(args)
    runner = runner_for(model)  # outside the timing: cpu_s counts inference only
    hop_s = model.hop_samples / model.sample_rate
    t0 = time.process_time()
    probs = runner.probs(audio.samples)
    cpu_s = time.process_time() - t0
    segments = segment_probs(probs, options, hop_s, audio.input_rate_hz, audio.num_input_samples)
    if args.plot:
        plot_detection(args.plot, audio, probs, hop_s, segments, options.threshold)
    if args.probs:
        payload = {
            "hop_s": hop_s,
            "probs": [float(p) for p in probs],
            "cpu_s": cpu_s,
            "threads": args.threads,
        }
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        sys.stdout.write(format_segments(segments, args.format, file_id=Path(args.file).stem))
    return 0


def plot_detection(out, audio, probs, hop_s: float, segments, threshold: float) -> None:
    """Waveform over P(speech), with the segments shaded on both; written to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    x = audio.samples
    t = np.arange(x.size) / 16000.0
    fig, (ax_w, ax_p) = plt.subplots(2, 1, sharex=True, figsize=(12, 5), height_ratios=[2, 1])
    ax_w.plot(t, x, lw=0.4, color="0.3")
    ax_w.set_ylabel("amplitude")
    ax_w.set_title(f"vadnet detect: {len(segments)} segment(s)")
    ax_p.step(np.arange(probs.size) * hop_s, probs, where="post", color="C0", lw=1)
    ax_p.axhline(threshold, color="C3", ls="--", lw=0.8, label=f"threshold {threshold:g}")
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel("P(speech)")
    ax_p.set_xlabel("time (s)")
    ax_p.legend(loc="upper right", fontsize=8)
    for s in segments:
        for ax in (ax_w, ax_p):
            ax.axvspan(s.start_s, s.end_s, color="C2", alpha=0.2, lw=0)
    ax_p.set_xlim(0, max(audio.duration_s, probs.size * hop_s))
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        from vadnet.model.errors import InvalidInputError

        raise InvalidInputError(f"cannot write plot {out}: {e.strerror or e}") from e
    finally:
        plt.close(fig)
