"""Coverage-guided fuzzing (atheris, libFuzzer) of what a client can send us.

    python bench/fuzz.py --seconds 600            # every harness, 600 s each
    python bench/fuzz.py --target detect --seconds 60

Harnesses (each runs in its own process; ``make test`` runs each for a few seconds
through tests/test_fuzz.py):

- ``container``: bytes -> ``load_audio_bytes`` (libsndfile, the header checks, the
  block decoder). Allowed: InvalidInputError / ResourceExhaustedError. Checked: 1-D
  finite float32 output of the length the resampling rule gives.
- ``raw``: encoding, rate and bytes -> ``decode_audio``; the streaming resampler in
  random chunks must equal the whole-signal resampler, bit for bit.
- ``config``: a StreamingConfig from fuzzed fields (any rate, encoding and segmenter
  knobs, NaN/Inf included) through the servicer's own checks (``encoding_name``,
  ``Resampler``, ``segmenter_options``), then a StreamingSegmenter fed random
  probabilities in random chunks must give the offline ``segment_probs`` segments.
- ``detect``: a DetectRequest (file, raw or neither; segmenter knobs) sent to a real
  server on loopback; every answer must be OK or INVALID_ARGUMENT / RESOURCE_EXHAUSTED,
  never INTERNAL or UNKNOWN, and an OK answer must be consistent.

Seeds come from tests/data. A finding leaves its input in ``--artifacts`` (replay it
with ``python bench/fuzz.py --target T --replay FILE``). docs/service.md has the
figures of the long run.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
TARGETS = ("container", "raw", "config", "detect")
ENCODINGS = ("LINEAR16", "FLOAT32", "MULAW", "ALAW", "linear16", "PCM", "")
# Rates the fuzzer picks from besides arbitrary ones: the edges of the valid range.
RATES = (0, 1, 7999, 8000, 11025, 16000, 22050, 44100, 48000, 48001, 2**31 - 1)
LIMIT_S = 30.0  # the harnesses' Detect limit: long enough to cross block edges, fast


def _setup_atheris() -> object:
    import atheris

    with atheris.instrument_imports(include=["vadnet"]):
        import vadnet.model.audio  # noqa: F401
        import vadnet.model.segmenter  # noqa: F401
        import vadnet.service.servicer  # noqa: F401
    return atheris


# --- harnesses ---------------------------------------------------------------------------
def container_one(data: bytes) -> None:
    import numpy as np

    from vadnet.model.audio import load_audio_bytes, resampled_length
    from vadnet.model.errors import InvalidInputError, ResourceExhaustedError

    try:
        audio = load_audio_bytes(data, LIMIT_S)
    except (InvalidInputError, ResourceExhaustedError):
        return
    x = audio.samples
    assert x.dtype == np.float32 and x.ndim == 1, (x.dtype, x.shape)
    assert np.all(np.isfinite(x))
    assert x.size == resampled_length(audio.num_input_samples, audio.input_rate_hz)
    assert 0 < audio.duration_s <= LIMIT_S


def raw_one(data: bytes) -> None:
    import atheris
    import numpy as np

    from vadnet.model.audio import Resampler, decode_audio, decode_pcm
    from vadnet.model.errors import InvalidInputError, ResourceExhaustedError

    fdp = atheris.FuzzedDataProvider(data)
    encoding = fdp.PickValueInList(list(ENCODINGS))
    rate = fdp.PickValueInList(list(RATES)) if fdp.ConsumeBool() else fdp.ConsumeInt(4)
    cuts = sorted(fdp.ConsumeIntListInRange(4, 0, 1 << 16))
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        audio = decode_audio(payload, encoding, rate, LIMIT_S)
    except (InvalidInputError, ResourceExhaustedError):
        return
    y = audio.samples
    # The decoded samples lie in [-1, 1]; resampled ones may overshoot a hair (Gibbs).
    x = decode_pcm(payload, encoding, rate)
    assert x.dtype == np.float32 and np.all(np.abs(x) <= 1.0)
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    # Streamed in random chunks, the resampler gives exactly the whole-signal output.
    r = Resampler(rate)
    bounds = [0, *(c % (x.size + 1) for c in cuts), x.size]
    bounds.sort()
    parts = [r(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    parts.append(r(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(parts)
    assert np.array_equal(streamed, y), (streamed.size, y.size)


def _fuzzed_segmenter(fdp, msg) -> None:
    """Fill a SegmenterConfig with fuzzed values, NaN/Inf and out-of-range ones included."""
    floats = (float("nan"), float("inf"), -float("inf"), 0.0, 1.0, -1.0, 1e300, 5e-324)
    for name in ("threshold", "neg_threshold", "max_speech_duration_s"):
        if fdp.ConsumeBool():
            v = fdp.PickValueInList(list(floats)) if fdp.ConsumeBool() else fdp.ConsumeFloat()
            setattr(msg, name, v)
    for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
        if fdp.ConsumeBool():
            setattr(msg, name, fdp.ConsumeIntInRange(0, 2**32 - 1))


def config_one(data: bytes) -> None:
    import atheris
    import numpy as np

    from vadnet.model.audio import MODEL_RATE_HZ, Resampler
    from vadnet.model.errors import InvalidInputError
    from vadnet.model.segmenter import StreamingSegmenter, segment_probs
    from vadnet.service.servicer import encoding_name, segmenter_options
    from vadnet.v1 import vad_pb2 as pb

    fdp = atheris.FuzzedDataProvider(data)
    cfg = pb.StreamingConfig(
        sample_rate_hz=fdp.PickValueInList(list(RATES[:-1]))
        if fdp.ConsumeBool()
        else fdp.ConsumeIntInRange(0, 2**32 - 1),
        encoding=fdp.ConsumeIntInRange(-2, 6),
        return_probabilities=fdp.ConsumeBool(),
    )
    _fuzzed_segmenter(fdp, cfg.segmenter)
    hop_s = 256 / MODEL_RATE_HZ
    try:  # what StreamingDetect checks when the config arrives
        encoding_name(cfg.encoding)
        Resampler(int(cfg.sample_rate_hz))
        opts = segmenter_options(cfg.segmenter)
        seg = StreamingSegmenter(opts, hop_s=hop_s, input_rate_hz=int(cfg.sample_rate_hz))
    except InvalidInputError:
        return
    n = fdp.ConsumeIntInRange(0, 3000)
    probs = np.array(fdp.ConsumeProbabilityList(n), np.float32)
    if probs.size < n:
        probs = np.concatenate([probs, np.zeros(n - probs.size, np.float32)])
    rate = int(cfg.sample_rate_hz)
    num_samples = round(n * hop_s * rate)
    ref = segment_probs(probs, opts, hop_s, rate, num_samples)
    pos = 0
    while pos < n:
        step = 1 + (int(probs[pos] * 1e6) % 97)  # chunking derived from the data
        seg.push(probs[pos : pos + step])
        pos += step
    seg.finish(num_samples)
    got = seg.segments
    assert [(s.start_sample, s.end_sample) for s in got] == [
        (s.start_sample, s.end_sample) for s in ref
    ], (got, ref)
    for s in got:
        assert 0 <= s.start_sample < s.end_sample <= num_samples, s
        assert math.isfinite(s.start_s) and math.isfinite(s.end_s)


class _DetectRig:
    """A real server on loopback and a gRPC client, in one event loop."""

    def __init__(self) -> None:
        import grpc

        from vadnet.service.server import create_server
        from vadnet.v1 import vad_pb2_grpc as pb_grpc

        self.loop = asyncio.new_event_loop()
        cfg = {
            "host": "127.0.0.1",
            "port": 0,
            "metrics_port": -1,
            "max_detect_audio_s": LIMIT_S,
            "max_message_bytes": 1 << 20,
        }
        asyncio.set_event_loop(self.loop)
        self.server, port = self.loop.run_until_complete(create_server(cfg))

        async def connect() -> grpc.aio.Channel:  # a channel belongs to the running loop
            return grpc.aio.insecure_channel(f"127.0.0.1:{port}")

        self.channel = self.loop.run_until_complete(connect())
        self.stub = pb_grpc.VoiceActivityStub(self.channel)
        # libFuzzer ends a timed run with exit(0); joining the server's gRPC, model and
        # worker threads at exit can hang, and there is nothing to clean up: leave at once
        # (a finding exits through _Exit with its own code, before atexit).
        atexit.register(os._exit, 0)


_RIG: _DetectRig | None = None
_SEEDS: list[bytes] = []


def detect_one(data: bytes) -> None:
    import atheris
    import grpc

    from vadnet.v1 import vad_pb2 as pb

    global _RIG
    if _RIG is None:
        _RIG = _DetectRig()
        _SEEDS.extend(p.read_bytes() for p in sorted(DATA.glob("*.*")) if p.suffix != ".csv")
    fdp = atheris.FuzzedDataProvider(data)
    req = pb.DetectRequest(return_probabilities=fdp.ConsumeBool())
    _fuzzed_segmenter(fdp, req.segmenter)
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:  # a real file, mutated at a few places
        seed = bytearray(fdp.PickValueInList(_SEEDS))
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            if seed:
                seed[fdp.ConsumeIntInRange(0, len(seed) - 1)] = fdp.ConsumeIntInRange(0, 255)
        req.file = bytes(seed[: fdp.ConsumeIntInRange(0, len(seed))])
    elif kind == 1:
        req.file = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1 << 16))
    elif kind == 2:
        req.raw.sample_rate_hz = fdp.PickValueInList(list(RATES[:-1]))
        req.raw.encoding = fdp.ConsumeIntInRange(-1, 5)
        req.raw.data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1 << 16))
    ok_codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    try:
        resp = _RIG.loop.run_until_complete(_RIG.stub.Detect(req, timeout=60))
    except grpc.aio.AioRpcError as e:
        assert e.code() in ok_codes, (e.code(), e.details())
        assert e.details(), "an error without a message"
        return
    assert 0 < resp.audio_s <= LIMIT_S + 1e-9, resp.audio_s
    if req.return_probabilities:
        assert len(resp.probabilities) == resp.frames
    ends = [(s.start_s, s.end_s) for s in resp.segments]
    assert all(0 <= a < b <= resp.audio_s + 1e-6 for a, b in ends), ends
    assert ends == sorted(ends)


HARNESSES = {"container": container_one, "raw": raw_one, "config": config_one, "detect": detect_one}


# --- driver ------------------------------------------------------------------------------
def _seed_corpus(target: str, folder: Path) -> None:
    """Seeds: the test recordings (and their first 4 KB) for the decoders; a few bytes
    of structure for the others (libFuzzer grows from there)."""
    if target == "container":
        for p in DATA.glob("*.*"):
            if p.suffix != ".csv":
                data = p.read_bytes()
                (folder / p.name).write_bytes(data)
                (folder / f"head4k_{p.name}").write_bytes(data[:4096])
    else:
        for i, seed in enumerate((b"\x00" * 64, bytes(range(256)), b"\xff" * 64)):
            (folder / f"seed{i}").write_bytes(seed)


def run_child(target: str, seconds: float, artifacts: Path, replay: str | None) -> int:
    """In the fuzzing process: libFuzzer owns it until the time is up (or a finding)."""
    atheris = _setup_atheris()
    fn = HARNESSES[target]
    if replay:
        fn(Path(replay).read_bytes())
        print(f"{target}: {replay} passes")
        return 0
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"vadnet-fuzz-{target}-") as corpus:
        _seed_corpus(target, Path(corpus))
        argv = [
            sys.argv[0],
            corpus,
            f"-max_total_time={max(1, int(seconds))}",
            "-rss_limit_mb=3072",
            "-timeout=30",
            "-max_len=262144",
            f"-artifact_prefix={artifacts}/{target}-",
            "-print_final_stats=1",
        ]
        atheris.Setup(argv, fn)
        atheris.Fuzz()
    return 0


def run_target(target: str, seconds: float, artifacts: Path) -> dict:
    """Fuzz one harness in a child process; returns its figures."""
    cmd = [sys.executable, __file__, "--child", "--target", target, "--seconds", str(seconds)]
    cmd += ["--artifacts", str(artifacts)]
    env = {**os.environ, "VADNET_LOG_LEVEL": "ERROR"}
    # The log goes to a file, not a pipe: the detect harness's worker processes would
    # hold a pipe open after the fuzzer exits. Its own session, so they can be reaped.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)
        try:
            proc.wait(timeout=seconds + 300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        log = out.read()
    runs = re.search(r"Done (\d+) runs in (\d+) second", log)
    cov = re.findall(r"cov: (\d+)", log)
    crash = re.search(r"Test unit written to (\S+)", log)
    return {
        "target": target,
        "returncode": proc.returncode,
        "executions": int(runs.group(1)) if runs else None,
        "seconds": int(runs.group(2)) if runs else None,
        "coverage": int(cov[-1]) if cov else None,
        "finding": crash.group(1) if crash else None,
        "log_tail": "" if proc.returncode == 0 else log[-3000:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGETS, action="append", help="default: all")
    ap.add_argument("--seconds", type=float, default=60.0, help="per harness")
    ap.add_argument("--artifacts", default="fuzz-artifacts", help="where findings go")
    ap.add_argument("--replay", help="run one input through --target and exit")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    targets = args.target or list(TARGETS)
    if args.child or args.replay:
        return run_child(targets[0], args.seconds, Path(args.artifacts).resolve(), args.replay)
    failed = 0
    for target in targets:
        r = run_target(target, args.seconds, Path(args.artifacts).resolve())
        print(
            f"{r['target']}: {r['executions']} executions in {r['seconds']} s,"
            f" coverage {r['coverage']}, finding: {r['finding'] or 'none'}"
        )
        if r["returncode"] != 0:
            failed += 1
            sys.stderr.write(r["log_tail"] + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
