"""Which training speech do a model's false alarms on held-out music look like?

    python bench/fa_neighbours.py --cache-dir cache/sources --model model/weights/vadnet.pt

For each model: F's hidden layer (what F decides on, ``F.hidden`` after its ReLU) at

* the speech frames of up to ``--clips`` training clips per speech source (frames the
  label rule calls speech and the model calls speech too, each clip scaled to -20 dBFS);
* every held-out music frame the model calls speech (``P >= --threshold``), the frames
  ``bench/compare.py`` counts as "FA music".

Each false alarm's ``--k`` nearest speech frames (Euclidean) vote for their sources. A
source whose share of the votes is well above its share of the speech frames is what the
false alarms resemble: the first suspect for what teaches the model to call that music
speech. Not a target, a diagnosis (docs/model.md cites it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import LEVEL, add_model_arguments, compare_backgrounds, model_paths  # noqa: E402


def hidden(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) audio -> (F's hidden features (frames, f_hidden), P(speech) (frames,)),
    aligned like ``model(x)``: lookahead included."""
    with torch.inference_mode():
        b = model.frame_features(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None])
        h = F.relu(model.F.hidden(b))
        p = torch.sigmoid(model.F.out(h).squeeze(1))
    return h[0].T.numpy(), p[0].numpy()


def label(clip: dict, by: str) -> str:
    """What a bank frame votes for: its source, or with ``by="folder"`` source:folder, the
    folder holding a recorded file (a voice, unit or prompt set within the source;
    megaglest's UNIT/sounds/ counts as UNIT). Synthetic clips ("synth:ENGINE:VOICE:N")
    have no folder and vote for their engine."""
    if by == "source" or clip["path"].startswith("synth:"):
        return clip["source"]
    folders = [d for d in clip["path"].replace("::", "/").split("/")[:-1] if d != "sounds"]
    return f"{clip['source']}:{folders[-1]}"


def speech_bank(model, cache_dir: str, clips: int, by: str = "source", seed: int = 0):
    """F's hidden features at the speech frames of training clips -> (features, labels).
    ``clips`` per source (sampled uniformly within it, as the mixer does)."""
    from vadnet.model.training.sources import load_cache

    speech = load_cache(cache_dir)[0].select("train")
    by_source: dict[str, list[int]] = {}
    for i, c in enumerate(speech.clips):
        by_source.setdefault(c["source"], []).append(i)
    rng = np.random.default_rng(seed)
    feats, sources = [], []
    for _, idx in sorted(by_source.items()):
        for i in rng.choice(idx, size=min(clips, len(idx)), replace=False):
            x, labels = speech.clip(int(i)), speech.clip_labels(int(i))
            h, p = hidden(model, x * (LEVEL / (np.std(x) + 1e-9)))
            n = min(len(labels), len(h))
            keep = (labels[:n] > 0.5) & (p[:n] >= 0.5)
            feats.append(h[:n][keep])
            sources += [label(speech.clips[int(i)], by)] * int(keep.sum())
    return np.concatenate(feats), np.array(sources)


def neighbours(bank, sources, queries, k: int) -> dict:
    """Each query's ``k`` nearest bank rows vote -> {source: {"votes", "base", "ratio"}}."""
    votes: Counter = Counter()
    for lo in range(0, len(queries), 256):  # bounded memory: 256 x bank distances at once
        q = queries[lo : lo + 256]
        d = (q**2).sum(1)[:, None] - 2 * q @ bank.T + (bank**2).sum(1)[None]
        votes.update(sources[np.argpartition(d, k, axis=1)[:, :k]].ravel())
    base, total = Counter(sources), max(sum(votes.values()), 1)
    return {
        s: {
            "votes": votes[s] / total,
            "base": base[s] / len(sources),
            "ratio": (votes[s] / total) / (base[s] / len(sources)),
        }
        for s in sorted(base, key=lambda s: -votes[s])
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--clips", type=int, default=40, help="training clips per speech source")
    ap.add_argument("--k", type=int, default=10, help="neighbours per false alarm")
    ap.add_argument("--threshold", type=float, default=0.5, help="P that counts as speech")
    ap.add_argument(
        "--by", choices=("source", "folder"), default="source", help="what a neighbour votes for"
    )
    ap.add_argument("--top", type=int, default=15, help="table rows per model")
    args = ap.parse_args(argv)
    from vadnet.model.checkpoint import load_model

    torch.set_num_threads(1)
    music, _ = compare_backgrounds(args.cache_dir)
    results = {}
    for path in model_paths(args):
        model = load_model(path).eval()
        bank, sources = speech_bank(model, args.cache_dir, args.clips, args.by)
        fa = [h[p >= args.threshold] for h, p in (hidden(model, x) for x in music.clips)]
        queries = np.concatenate(fa)
        k = min(args.k, len(bank) - 1)
        results[path] = {
            "false_alarms": len(queries),
            "speech_frames": len(bank),
            "sources": neighbours(bank, sources, queries, k) if len(queries) and k > 0 else {},
        }
        r = results[path]
        sys.stdout.write(
            f"\n{path}: {r['false_alarms']} music frames called speech, "
            f"{r['speech_frames']} training speech frames\n\n"
            "| training speech | share of neighbours | share of speech frames | ratio |\n"
            "|---|---:|---:|---:|\n"
        )
        for s, v in list(r["sources"].items())[: args.top]:
            sys.stdout.write(f"| {s} | {v['votes']:.3f} | {v['base']:.3f} | {v['ratio']:.2f} |\n")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
