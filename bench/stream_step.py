"""What one streaming step costs, per model: the server's inner loop without the server.

    python bench/stream_step.py --model runs/v11.pt --model model/weights/vadnet.pt \\
        --model runs/v28/vadnet.pt

For each model, ``--streams`` streams in one ``StreamBank`` each get a ``--chunk-ms``
chunk of noise per ``advance`` call (one batch, as the server's batcher makes them), on
one thread. The models take turns, ``--rounds`` times, and the table gives the median CPU
microseconds per chunk (``time.process_time``) and each model's ratio to the first one.
The machine is shared: compare the ratios, not the absolute figures.

Why: the state a stream keeps grows with the context B sees, and what each call does with
that state decides whether long context is affordable in the server (model/streaming.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import model_paths  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="checkpoint (repeat); default bundled")
    ap.add_argument("--streams", type=int, default=100, help="streams per advance call")
    ap.add_argument("--chunk-ms", type=int, default=100, help="audio per stream per call")
    ap.add_argument("--calls", type=int, default=20, help="advance calls per round")
    ap.add_argument("--rounds", type=int, default=7, help="turns each model takes")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if min(args.streams, args.chunk_ms, args.calls, args.rounds) < 1:
        ap.error("--streams, --chunk-ms, --calls and --rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from vadnet.model.checkpoint import load_model
    from vadnet.model.streaming import StreamBank

    args = parse_args(argv)
    torch.set_num_threads(1)
    paths = model_paths(args)
    chunk = args.chunk_ms * 16
    rng = np.random.default_rng(0)
    audio = list((rng.standard_normal((args.streams, chunk)) * 0.1).astype(np.float32))
    banks = []
    for path in paths:
        model = load_model(path)
        bank = StreamBank(model, "cpu", capacity=args.streams)
        banks.append((model, bank, [bank.open() for _ in range(args.streams)]))
    us = [[] for _ in paths]
    for _ in range(args.rounds):
        for k, (_, bank, slots) in enumerate(banks):
            start = time.process_time()
            for _ in range(args.calls):
                bank.advance(slots, audio)
            us[k].append(1e6 * (time.process_time() - start) / (args.calls * args.streams))
    rows = [
        {
            "model": path,
            "context_s": model.receptive_field_s,
            "state_bytes": bank.bytes_per_stream(),
            "us_per_chunk": float(np.median(u)),
        }
        for path, (model, bank, _), u in zip(paths, banks, us, strict=True)
    ]
    print(f"Command: `python bench/stream_step.py {' '.join(sys.argv[1:])}`")
    print(f"{args.streams} streams x {args.chunk_ms} ms chunks per call, 1 thread, ")
    print(f"median of {args.rounds} alternating rounds of {args.calls} calls\n")
    print("| model | context | state / stream | µs per chunk | ratio to first |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["us_per_chunk"] / rows[0]["us_per_chunk"]
        print(
            f"| {r['model']} | {r['context_s']:.2f} s | {r['state_bytes']:,} B "
            f"| {r['us_per_chunk']:.1f} | {ratio:.2f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
