"""``vadnet eval MANIFEST``: frame ROC-AUC, F1, miss and false-alarm rates per file and
overall (see ``vadnet.model.training.evaluate`` for the manifest formats)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from .cmd_detect import add_model_argument, add_threads_argument, load_model_for, one_line_errors

COLUMNS = ("auc", "f1", "miss_rate", "false_alarm_rate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.add_argument("manifest", help="CSV (path,start_s,end_s) or JSON manifest")
    add_model_argument(parser)
    add_threads_argument(parser)
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="speech threshold for F1/miss/FA (0.5)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output")


def _json_safe(value):
    # NaN is not JSON: undefined metrics become null
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _text(report: dict) -> str:
    head = f"{'file':<40} {'frames':>7} " + " ".join(f"{c:>16}" for c in COLUMNS)
    lines = [f"threshold {report['threshold']:g}", head]
    rows = [(f["path"], f) for f in report["files"]] + [("OVERALL", report["overall"])]
    for name, m in rows:
        name = name if len(name) <= 40 else "..." + name[-37:]
        cells = " ".join(f"{m[c]:>16.4f}" for c in COLUMNS)
        lines.append(f"{name:<40} {m['frames']:>7} {cells}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from vadnet.model.training.evaluate import evaluate, read_manifest

    read_manifest(args.manifest)  # a bad manifest fails before torch is imported

    report = evaluate(load_model_for(args), args.manifest, args.threshold)
    if args.format == "json":
        sys.stdout.write(json.dumps(_json_safe(report), indent=2) + "\n")
    else:
        sys.stdout.write(_text(report))
    return 0
