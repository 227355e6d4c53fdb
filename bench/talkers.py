"""Clean speech of each dev talker, wideband and through the phone channel: who is missed?

The real-use scenes (``bench/realworld.py``) pool talkers, so one voice that a system misses
hides among the others. Here each dev-split talker (tuxpaint's dev languages, asterisk ru,
each game voice source) speaks alone for ``--seconds`` in a quiet room (generated noise
50 dB under the speech, the scenes' "clean"), built with the scenes' own utterance-and-pause
track, and is heard three ways: wideband, through the scenes' 300-3400 Hz 8 kHz phone
channel, and the same with G.711 mu-law. Scored like the scenes (10 ms grid, +-20 ms
collar): the share of speech frames each system calls non-speech at its default threshold.

    nice -n 10 .venv/bin/python bench/talkers.py --cache-dir cache/sources
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scenes import (  # noqa: E402
    CLEAN_SNR_DB,
    SR,
    _speech_track,
    generated_noise,
    load_pools,
    over_background,
    telephone,
)
from _scenes import to_grid as truth_to_grid  # noqa: E402
from _scoring import scored_mask, to_grid  # noqa: E402
from realworld import THRESHOLD, SileroOnnx, VadnetWhole  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS = ("wideband", "8k", "8k-mulaw")
LEVEL_DBFS = -25.0  # speech-active level before the channel, mid-range of the scenes'


def talker_track(clips: list, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One talker's utterances with pauses in a quiet room -> (audio (T,), truth (T/160,))."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    speech, truth = _speech_track(rng, clips, n)
    x, active = over_background(speech, truth, generated_noise(rng, n), CLEAN_SNR_DB)
    x = x * (10 ** (LEVEL_DBFS / 20) / (active + 1e-12))
    return np.clip(x, -1, 1).astype(np.float32), truth_to_grid(truth)


def through(x: np.ndarray, channel: str) -> np.ndarray:
    return x if channel == "wideband" else telephone(x, mulaw=channel == "8k-mulaw")


def talkers(pools) -> dict[str, list]:
    """Every dev talker's clips: tuxpaint by language, the rest by source group."""
    out: dict[str, list] = {}
    for group, clips in pools.speech.items():
        for clip in clips:
            out.setdefault(clip[3] if group == "tuxpaint" else group, []).append(clip)
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", default="cache/sources", help="a built source cache")
    ap.add_argument("--model", help="checkpoint (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=90.0, help="of speech track per talker")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "talkers.json"), help="JSON; .md beside it")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    systems = [VadnetWhole(args.model), SileroOnnx()]
    rows = []
    for name, clips in talkers(load_pools(args.cache_dir)).items():
        x, truth = talker_track(clips, args.seconds, args.seed)
        keep = scored_mask(truth)
        speech = truth[keep] > 0
        if not speech.any():
            continue
        row = {"talker": name, "speech_s": round(float(speech.sum()) / 100, 1), "miss": {}}
        for channel in CHANNELS:
            audio = through(x, channel)
            for s in systems:
                p = to_grid(s.scores(audio), s.hop, truth.size)[keep]
                row["miss"].setdefault(s.name, {})[channel] = float((p[speech] < THRESHOLD).mean())
        rows.append(row)
    names = [s.name for s in systems]
    command = "python bench/talkers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    md = "# Clean speech per dev talker: share of speech frames missed\n\n"
    md += f"Command: `{command.strip()}`\n\n"
    md += f"Each talker alone, {args.seconds:.0f} s track, 50 dB under a quiet room, "
    md += "scored on a 10 ms grid with a +-20 ms collar, threshold 0.5, one thread.\n\n"
    md += "| talker | speech s | " + " | ".join(f"{n}: {' / '.join(CHANNELS)}" for n in names)
    md += " |\n|---|---:|" + "---|" * len(names) + "\n"
    for r in rows:
        cells = [" / ".join(f"{100 * r['miss'][n][c]:.1f} %" for c in CHANNELS) for n in names]
        md += f"| {r['talker']} | {r['speech_s']} | " + " | ".join(cells) + " |\n"
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"command": command, "channels": CHANNELS, "talkers": rows}, indent=1)
    )
    out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
