"""``vadnet export --format torchscript|onnx --out PATH``: the offline forward
``(B, T) float32 16 kHz -> (B, ceil(T / hop))`` with dynamic batch and length."""

from __future__ import annotations

import argparse
import sys

from .cmd_detect import add_model_argument, one_line_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.add_argument("--format", choices=("torchscript", "onnx"), required=True)
    parser.add_argument("--out", required=True, metavar="PATH", help="file to write")
    add_model_argument(parser)


def run(args: argparse.Namespace) -> int:
    from vadnet.model.checkpoint import load_model
    from vadnet.model.export import export_model

    path = export_model(load_model(args.model), args.format, args.out)
    sys.stdout.write(f"wrote {path} ({args.format}, {path.stat().st_size / 1e6:.2f} MB)\n")
    return 0
