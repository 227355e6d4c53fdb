"""Accuracy and speed of vadnet against Silero VAD and WebRTC VAD, side by side.

    .venv/bin/python bench/compare.py --cache-dir cache/sources            # the full run
    .venv/bin/python bench/compare.py --cache-dir /tmp/tiny --quick        # a smoke run
    .venv/bin/python bench/compare.py --model runs/a/vadnet.pt --model runs/b/vadnet.pt

A repeated ``--model`` scores and times each checkpoint in the same run (the first is
``vadnet``, the others ``vadnet[NAME]``, NAME their folder), since speeds from separate
runs on a shared machine cannot be compared; the user-path timings use the first only.

Every system sees the same audio (see ``bench/_data.py``): the fixed dev set training
evaluates on (speakers and sources never trained on), and dev-split music-only and
other noise-only clips. Reported per system: frame ROC-AUC and F1 at the default
threshold (0.5; WebRTC is binary, so its AUC is that of a 0/1 score) on dev, how many
ms past each labelled speech end (and before each start) a system still calls speech on
average (``metrics.edge_overhang``: a voice bot's end of turn waits for the first), the share
of frames called speech on the noise-only and music-only clips, and throughput in audio
seconds per CPU second (``time.process_time``) on ONE thread, clip by clip and in
batches; for vadnet also batched streaming (``--streams`` streams advanced together in
``--chunk-ms`` chunks through ``StreamBank``) and the per-stream state size.

Frame grid: everything is scored on vadnet's 16 ms frames; frame ``k`` is samples
``[256k, 256(k+1))`` at 16 kHz. Silero's 32 ms chunk ``j`` (samples ``[512j, 512(j+1))``)
gives frames ``2j`` and ``2j+1``; a WebRTC decision on window ``[jL, (j+1)L)`` (``L`` = 480
samples for 30 ms) goes to every frame whose centre ``256k + 128`` falls in it.

The machine is shared, so absolute speeds move from run to run; the ratios printed at
the end (all from one run) are what to report. Targets are printed as PASS/FAIL, never
asserted. Writes JSON to ``--out`` (default ``bench/results/compare.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _helpers next to this file

import _userpaths  # noqa: E402
from _data import (  # noqa: E402
    GROUP_S,
    HOP_S,
    LEVEL_DBFS,
    PIECE_S,
    ClipGroup,
    DevSet,
    load_backgrounds,
    load_dev,
)
from _systems import SileroSystem, VadnetSystem, WebrtcSystem, n_frames  # noqa: E402

SR = 16_000
QUICK = {
    "dev_examples": 4,
    "max_noise_s": 20.0,
    "max_clip_s": 10.0,
    "streams": 4,
    "batch": 4,
    "user_files": 2,
    "user_file_s": (6.0, 12.0),
}
FULL = {
    "dev_examples": 400,  # what training evaluates on: 40 min of mixtures
    "max_noise_s": GROUP_S,  # per group (music, other noise)
    "max_clip_s": PIECE_S,
    "streams": 256,
    "batch": 32,
    "user_files": 40,  # ~27 min of audio through each user path
    "user_file_s": (20.0, 60.0),  # real calls and clips, long enough that per-file costs show
}


# Checkpoint file names that say nothing: such a checkpoint is named after its folder.
STEMS = ("vadnet", "best", "last")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", default="cache/sources", help="built source cache")
    p.add_argument(
        "--model",
        action="append",
        help="vadnet checkpoint (default: the bundled one); repeat it to compare checkpoints",
    )
    p.add_argument("--dev-examples", type=int, help="dev mixtures of 6 s (default 400)")
    p.add_argument("--max-noise-s", type=float, help="seconds of music and of noise (300 each)")
    p.add_argument("--max-clip-s", type=float, help="piece length of background clips (30)")
    p.add_argument("--noise-dbfs", type=float, default=LEVEL_DBFS, help="RMS level of backgrounds")
    p.add_argument("--streams", type=int, help="vadnet streams advanced together (256)")
    p.add_argument("--chunk-ms", type=int, default=100, help="streaming chunk length")
    p.add_argument("--batch", type=int, help="clips per call in the batched offline pass (32)")
    p.add_argument("--user-files", type=int, help="files for the user-path timings (40)")
    p.add_argument("--webrtc-frame-ms", type=int, default=30, choices=(10, 20, 30))
    p.add_argument("--out", default="bench/results/compare.json", help="JSON results")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    args = p.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if min(args.dev_examples, args.streams, args.batch, args.chunk_ms, args.user_files) < 1:
        p.error("--dev-examples, --streams, --batch, --chunk-ms and --user-files must be >= 1")
    return args


def model_names(paths: list[str | None]) -> list[str]:
    """System names for the checkpoints: the first is "vadnet", the others "vadnet[NAME]"
    with NAME the checkpoint's folder (runs/v61/vadnet.pt -> v61), or its file stem when
    the file is not called vadnet.pt, best.pt or last.pt; repeats get a number."""
    names = ["vadnet"]
    for path in paths[1:]:
        p = Path(path) if path else None
        label = "bundled" if p is None else p.parent.name if p.stem in STEMS else p.stem
        name, k = f"vadnet[{label}]", 2
        while name in names:
            name, k = f"vadnet[{label}-{k}]", k + 1
        names.append(name)
    return names


def single_thread() -> None:
    """One CPU thread for torch (ONNX Runtime sessions are made single-threaded)."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already fixed by an earlier parallel call: intra-op is what runs
        pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ scoring


def fa_rate(scores: list[np.ndarray]) -> float:
    """Share of frames called speech (score >= 0.5) over background-only clips."""
    if not scores:
        return math.nan
    s = np.concatenate(scores)
    return float(np.mean(s >= 0.5))


def false_segments(scores: list[np.ndarray]) -> dict:
    """Speech segments the segmenter (default options, Silero's names and meanings) makes
    of background-only clips' frame scores: every one is a false barge-in for a voice
    bot. -> {"per_min": segments per minute of audio, "share": share of the audio's time
    inside them}. Frame rates count single frames; this counts what a user sees."""
    from vadnet.model.segmenter import segment_probs

    if not scores:
        return {"per_min": math.nan, "share": math.nan}
    seconds = sum(s.size for s in scores) * HOP_S
    segments = [seg for s in scores for seg in segment_probs(s.astype(np.float64))]
    inside = sum(seg.duration_s for seg in segments)
    return {"per_min": 60 * len(segments) / seconds, "share": inside / seconds}


def run_clips(system, clips) -> tuple[list[np.ndarray], float]:
    """Score clips one by one -> (per-clip frame scores, CPU seconds)."""
    t0 = time.process_time()
    out = [system.scores(x) for x in clips]
    return out, time.process_time() - t0


def evaluate(
    system, dev: DevSet, music: ClipGroup, noise: ClipGroup, batch: int
) -> tuple[dict, np.ndarray]:
    """Accuracy on dev, false alarms on backgrounds, single-thread throughputs.

    Returns the results and the dev scores (N, T / 256) on the 16 ms grid.
    """
    from vadnet.model.training.metrics import edge_overhang, frame_metrics

    for _ in range(2):  # warm-up: Silero's JIT optimises on its first calls
        system.scores(dev.audio[0, :SR])
    dev_scores, dev_cpu = run_clips(system, dev.audio)
    music_scores, music_cpu = run_clips(system, music.clips)
    noise_scores, noise_cpu = run_clips(system, noise.clips)
    dev_probs = np.stack(dev_scores)
    m = frame_metrics(dev_probs, dev.labels, 0.5)
    edges = edge_overhang(dev_probs, dev.labels, 0.5)
    seconds = dev.seconds + music.seconds + noise.seconds
    cpu = dev_cpu + music_cpu + noise_cpu
    out = {
        "kind": system.kind,
        "dev_auc": m["auc"],
        "dev_f1": m["f1"],
        "dev_precision": m["precision"],
        "dev_recall": m["recall"],
        "dev_miss_rate": m["miss_rate"],
        "dev_false_alarm_rate": m["false_alarm_rate"],
        # ms called speech past each labelled speech end / before each start, on average
        "dev_late_ms": 1000 * HOP_S * edges["late_frames"],
        "dev_early_ms": 1000 * HOP_S * edges["early_frames"],
        "fa_music": fa_rate(music_scores),
        "fa_noise": fa_rate(noise_scores),
        "segments_music": false_segments(music_scores),
        "segments_noise": false_segments(noise_scores),
        "audio_s": seconds,
        "cpu_s": cpu,
        "xrt_offline": seconds / cpu if cpu > 0 else math.nan,
        "state_bytes_per_stream": system.state_bytes(),
    }
    if system.kind == "probability":  # WebRTC has no batched API
        t0 = time.process_time()
        for i in range(0, len(dev.audio), batch):
            system.scores_batch(dev.audio[i : i + batch])
        cpu_b = time.process_time() - t0
        out["xrt_batched"] = dev.seconds / cpu_b if cpu_b > 0 else math.nan
    else:
        out["xrt_batched"] = None
    return out, dev_probs


def evaluate_streaming(
    model, dev: DevSet, offline: np.ndarray, streams: int, chunk_ms: int
) -> dict:
    """``streams`` dev clips advanced together through one StreamBank in ``chunk_ms`` chunks.

    Returns throughput, state size and the largest |streaming - offline| probability.
    """
    from vadnet.model.streaming import StreamBank

    rows = np.arange(streams) % len(dev.audio)
    audio = dev.audio[rows]
    chunk = SR * chunk_ms // 1000
    steps = math.ceil(audio.shape[1] / chunk)
    bank = StreamBank(model, "cpu", capacity=streams)
    warm = bank.open()  # warm-up on a stream of its own, then freed
    bank.advance([warm], [audio[0, :chunk]], [True])
    bank.close(warm)
    slots = [bank.open() for _ in range(streams)]
    got: list[list[np.ndarray]] = [[] for _ in range(streams)]
    t0 = time.process_time()
    for s in range(steps):
        part = audio[:, s * chunk : (s + 1) * chunk]
        res = bank.advance(slots, list(part), [s == steps - 1] * streams)
        for r, step in enumerate(res):
            got[r].append(step.probs)
    cpu = time.process_time() - t0
    probs = np.stack([np.concatenate(g) for g in got])
    seconds = audio.size / SR
    return {
        "streams": streams,
        "chunk_ms": chunk_ms,
        "audio_s": seconds,
        "cpu_s": cpu,
        "xrt_streaming": seconds / cpu if cpu > 0 else math.nan,
        "state_bytes_per_stream": bank.bytes_per_stream(),
        "max_abs_diff_vs_offline": float(np.max(np.abs(probs - offline[rows]))),
    }


# ------------------------------------------------------------------------------ report


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return math.nan
    return a / b


def ratios_and_targets(res: dict, stream: dict) -> tuple[dict, dict]:
    """The numbers to report from one run, and the three targets (vs the better Silero)."""
    v, onnx, jit = res["vadnet"], res["silero-onnx"], res["silero-jit"]
    silero_auc = max(onnx["dev_auc"], jit["dev_auc"])
    silero_fa = min(onnx["fa_music"], jit["fa_music"])
    ratios = {
        "xrt_vadnet_over_silero_onnx": ratio(v["xrt_offline"], onnx["xrt_offline"]),
        "xrt_batched_vadnet_over_silero_onnx": ratio(v["xrt_batched"], onnx["xrt_batched"]),
        "xrt_streaming_vadnet_over_silero_onnx": ratio(
            stream["xrt_streaming"], onnx["xrt_offline"]
        ),
        "auc_vadnet_minus_silero": v["dev_auc"] - silero_auc,
        # A ratio is undefined when Silero has no false alarm at all: the difference is not.
        "fa_music_vadnet_over_silero": ratio(v["fa_music"], silero_fa),
        "fa_music_vadnet_minus_silero": v["fa_music"] - silero_fa,
        "fa_noise_vadnet_minus_silero": v["fa_noise"] - min(onnx["fa_noise"], jit["fa_noise"]),
    }

    def verdict(ok: bool, *values: float) -> str:
        if not all(math.isfinite(x) for x in values):
            return "N/A"
        return "PASS" if ok else "FAIL"

    targets = {
        "dev ROC-AUC >= Silero's": verdict(v["dev_auc"] >= silero_auc, v["dev_auc"], silero_auc),
        "music false alarms <= Silero's": verdict(
            v["fa_music"] <= silero_fa, v["fa_music"], silero_fa
        ),
        "1-thread throughput >= 5x Silero ONNX": verdict(
            ratios["xrt_vadnet_over_silero_onnx"] >= 5.0, ratios["xrt_vadnet_over_silero_onnx"]
        ),
    }
    return ratios, targets


def checkpoint_ratios(res: dict, streaming: dict) -> dict:
    """Each further checkpoint against the first ("vadnet"), from the same run."""
    v, s = res["vadnet"], streaming["vadnet"]
    out = {}
    for name, st in streaming.items():
        if name == "vadnet":
            continue
        r = res[name]
        out[f"xrt_{name}_over_vadnet"] = ratio(r["xrt_offline"], v["xrt_offline"])
        out[f"xrt_batched_{name}_over_vadnet"] = ratio(r["xrt_batched"], v["xrt_batched"])
        out[f"xrt_streaming_{name}_over_vadnet"] = ratio(st["xrt_streaming"], s["xrt_streaming"])
        out[f"auc_{name}_minus_vadnet"] = r["dev_auc"] - v["dev_auc"]
    return out


def fmt(x, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def markdown(res: dict, streaming: dict, streams: int, chunk_ms: int, batch: int) -> str:
    head = (
        "| system | dev ROC-AUC | dev F1 @0.5 | late / early ms | FA noise | FA music "
        f"| x real time, 1 thread | x real time, batch {batch} | state / stream |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, r in res.items():
        state = r["state_bytes_per_stream"]
        if name in streaming:
            state = streaming[name]["state_bytes_per_stream"]
        rows.append(
            f"| {name}{' (binary)' if r['kind'] == 'binary' else ''} | {fmt(r['dev_auc'])} "
            f"| {fmt(r['dev_f1'])} | {fmt(r['dev_late_ms'], '.0f')} / {fmt(r['dev_early_ms'], '.0f')} "
            f"| {fmt(r['fa_noise'], '.3f')} | {fmt(r['fa_music'], '.3f')} "
            f"| {fmt(r['xrt_offline'], '.0f')} | {fmt(r['xrt_batched'], '.0f')} "
            f"| {f'{state} B' if state else 'n/a'} |"
        )
    rows += [
        f"| {name} streaming ({streams} streams x {chunk_ms} ms) | | | | | "
        f"| {fmt(st['xrt_streaming'], '.0f')} | | {st['state_bytes_per_stream']} B |"
        for name, st in streaming.items()
    ]
    segments = (
        "\nSpeech segments on background-only audio (the segmenter's defaults: threshold 0.5,"
        " min_speech_duration_ms 250, min_silence_duration_ms 100, speech_pad_ms 30):\n\n"
        "| system | music: segments / min | music: share of time | noise: segments / min "
        "| noise: share of time |\n|---|---:|---:|---:|---:|\n"
    )
    for name, r in res.items():
        m, n = r["segments_music"], r["segments_noise"]
        segments += (
            f"| {name} | {fmt(m['per_min'], '.2f')} | {fmt(m['share'], '.3f')} "
            f"| {fmt(n['per_min'], '.2f')} | {fmt(n['share'], '.3f')} |\n"
        )
    return head + "\n".join(rows) + "\n" + segments


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "onnxruntime", "silero-vad", "webrtcvad-wheels", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
    }


def finite_or_none(obj):
    """NaN/Inf -> None, so the JSON file is standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    from vadnet.model.errors import VadnetError

    try:
        return run(argv)
    except VadnetError as e:  # no cache, bad checkpoint...: one line, like the CLI
        log(f"error: {e}")
        return 2


def run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", *(sys.argv if argv is None else ["bench/compare.py", *argv])])
    single_thread()
    host = machine()
    from vadnet.model.checkpoint import bundled_path, load_model, model_version

    log(f"dev set: {args.dev_examples} mixtures from {args.cache_dir}")
    dev = load_dev(args.cache_dir, args.dev_examples)
    music, noise = load_backgrounds(
        args.cache_dir, args.max_clip_s, args.max_noise_s, args.noise_dbfs
    )
    log(
        f"dev {dev.seconds:.0f} s ({100 * dev.labels.mean():.1f}% speech frames), "
        f"music {music.seconds:.0f} s in {len(music.clips)} clips, "
        f"noise {noise.seconds:.0f} s in {len(noise.clips)} clips"
    )
    paths = args.model or [None]
    names = model_names(paths)
    models = {name: load_model(path) for name, path in zip(names, paths, strict=True)}
    model = models["vadnet"]
    systems = [
        *(VadnetSystem(m, name) for name, m in models.items()),
        SileroSystem(onnx=True),
        SileroSystem(onnx=False),
        *(WebrtcSystem(mode, args.webrtc_frame_ms) for mode in range(4)),
    ]
    res, dev_probs = {}, {}
    for system in systems:
        log(f"scoring {system.name} ...")
        res[system.name], probs = evaluate(system, dev, music, noise, args.batch)
        if system.name in models:
            dev_probs[system.name] = probs
    log(f"streaming: {args.streams} streams x {args.chunk_ms} ms chunks ...")
    streams = {
        name: evaluate_streaming(m, dev, dev_probs[name], args.streams, args.chunk_ms)
        for name, m in models.items()
    }
    stream = streams["vadnet"]
    log(f"user paths: {args.user_files} files through detect, streaming and ONNX ...")
    user = _userpaths.run(model, dev.audio, args.user_files, args.chunk_ms, args.user_file_s)
    ratios, targets = ratios_and_targets(res, stream)
    ratios.update(user["ratios"])
    ratios.update(checkpoint_ratios(res, streams))

    table = markdown(res, streams, args.streams, args.chunk_ms, args.batch)
    user_table = _userpaths.markdown(user)
    lines = [
        f"Command: `{command}`",
        *(
            f"Model{'' if name == 'vadnet' else f' {name}'}: {path or bundled_path()}"
            f" (version {model_version(path)})"
            for name, path in zip(names, paths, strict=True)
        ),
        f"Machine: {host['cpu']}, {host['cpu_count']} CPUs, load {host['loadavg_at_start'][0]:.1f}"
        " at start (shared: compare ratios, not absolute speeds)",
        f"Audio: dev {dev.seconds:.0f} s ({len(dev.audio)} x 6 s mixtures, "
        f"{100 * dev.labels.mean():.1f}% speech frames); music {music.seconds:.0f} s "
        f"({len(music.clips)} clips); other noise {noise.seconds:.0f} s ({len(noise.clips)} clips)",
        "",
        user_table,
        "Accuracy, and the bare forward pass (`model(x)` on decoded clips, no decoding or "
        "segmenting), on the same dev set:",
        "",
        table,
        "FA = share of 16 ms frames called speech on speech-free clips; x real time = audio s "
        "per CPU s (time.process_time) on one thread.",
        *(
            f"{name} streaming max |streaming - offline| = {st['max_abs_diff_vs_offline']:.2e}"
            for name, st in streams.items()
        ),
        "",
        "Ratios (one run):",
        *(f"- {k}: {fmt(v, '.3f')}" for k, v in ratios.items()),
        "",
        "Targets (vs the better of Silero JIT/ONNX; throughput vs Silero ONNX):",
        *(f"- {v}: {k}" for k, v in targets.items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "command": command,
        "model": str(paths[0] or bundled_path()),
        "model_version": model_version(paths[0]),
        "models": [
            {"name": name, "path": str(path or bundled_path()), "version": model_version(path)}
            for name, path in zip(names, paths, strict=True)
        ],
        "options": vars(args),
        "machine": host,
        "data": {
            "dev_examples": len(dev.audio),
            "dev_s": dev.seconds,
            "dev_speech_frame_share": float(dev.labels.mean()),
            "dev_frames": int(dev.labels.size),
            "music_s": music.seconds,
            "music_clips": len(music.clips),
            "noise_s": noise.seconds,
            "noise_clips": len(noise.clips),
            "noise_frames": int(sum(n_frames(c.size) for c in noise.clips)),
            "music_frames": int(sum(n_frames(c.size) for c in music.clips)),
        },
        "systems": res,
        "vadnet_streaming": stream,
        "streaming": streams,
        "user_paths": user,
        "ratios": ratios,
        "targets": targets,
        "markdown": user_table + "\n" + table,
    }
    out.write_text(json.dumps(finite_or_none(blob), indent=1) + "\n")
    # The same report as Markdown beside it, so the two can never disagree.
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
