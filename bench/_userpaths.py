"""The paths users run, timed side by side with Silero VAD's on the same files (issue 15 §2).

Three pairs, each on ONE thread, in CPU seconds (``time.process_time``) per audio second:

* a file: ``vadnet.detect(path)`` against ``get_speech_timestamps(read_audio(path), model)``,
  Silero's documented use; both decode and segment the file themselves. (Silero's
  ``read_audio`` needs torchcodec beside torchaudio 2.9+, which this venv does not have;
  the files are 16 kHz mono WAV, so Silero's side reads them with soundfile into the same
  tensor, no resampling: the work read_audio would do.)
* streaming, one stream at a time: ``vadnet.VADIterator`` fed 100 ms chunks against
  Silero's ``VADIterator`` fed its 32 ms windows (the only size it accepts at 16 kHz);
* ONNX on onnxruntime: vadnet's export (``vadnet export --format onnx``) against Silero's
  ONNX model, each given whole decoded files (Silero's wrapper loops over 32 ms windows).

The files are written once per run: dev mixtures (held-out speakers and backgrounds)
joined into 20-60 s WAVs, so that per-call costs show as they would on real files.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SR = 16_000


def write_files(
    dev_audio: np.ndarray,
    folder: Path,
    count: int,
    file_s: tuple[float, float] = (20.0, 60.0),
    seed: int = 0,
) -> list[Path]:
    """``count`` WAV files of ``file_s`` seconds (16 kHz PCM16), each dev mixtures joined."""
    rng = np.random.default_rng(seed)
    clip_s = dev_audio.shape[1] / SR
    paths, nxt = [], 0
    for i in range(count):
        k = max(1, round(rng.uniform(*file_s) / clip_s))
        rows = [(nxt + j) % len(dev_audio) for j in range(k)]
        nxt += k
        path = folder / f"file{i:03d}.wav"
        sf.write(path, np.concatenate(dev_audio[rows]), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def read_audio(path: Path) -> torch.Tensor:
    """What Silero's ``read_audio`` returns for a 16 kHz mono WAV: a 1-D float32 tensor."""
    return torch.from_numpy(sf.read(path, dtype="float32")[0])


def _timed(fn, items) -> float:
    """CPU seconds of ``fn`` over ``items`` (one warm-up call first, not counted)."""
    fn(items[0])
    t0 = time.process_time()
    for it in items:
        fn(it)
    return time.process_time() - t0


def _silero(onnx: bool):
    from silero_vad import load_silero_vad

    with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not ours
        warnings.simplefilter("ignore", FutureWarning)
        return load_silero_vad(onnx=onnx)


def _vadnet_onnx(model, folder: Path):
    import onnxruntime as ort

    from vadnet.model.export import export_model

    path = export_model(model, "onnx", folder / "vadnet.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"audio": x[None]})[0]


def run(
    model,
    dev_audio: np.ndarray,
    files: int,
    chunk_ms: int = 100,
    file_s: tuple[float, float] = (20.0, 60.0),
) -> dict:
    """Time the three pairs on ``files`` files -> {"audio_s", "rows": [...], "ratios": {...}}."""
    from silero_vad import VADIterator as SileroIterator
    from silero_vad import get_speech_timestamps

    import vadnet

    with tempfile.TemporaryDirectory(prefix="vadnet-userpaths-") as tmp:
        folder = Path(tmp)
        paths = write_files(dev_audio, folder, files, file_s)
        decoded = [sf.read(p, dtype="float32")[0] for p in paths]
        audio_s = sum(x.size for x in decoded) / SR
        silero = {"onnx": _silero(onnx=True), "jit": _silero(onnx=False)}
        chunk = SR * chunk_ms // 1000

        def vadnet_stream(x: np.ndarray) -> None:
            it = vadnet.VADIterator(model=model)
            for i in range(0, x.size, chunk):
                it(x[i : i + chunk])
            it.finish()

        def silero_stream(m):
            def go(x: np.ndarray) -> None:
                it = SileroIterator(m, sampling_rate=SR)
                t = torch.from_numpy(x)
                for i in range(0, x.size - 511, 512):
                    it(t[i : i + 512])
                it.reset_states()

            return go

        cpu = {
            ("file", "vadnet.detect(path)"): _timed(lambda p: vadnet.detect(p, model=model), paths),
        }
        for name, m in silero.items():
            key = ("file", f"Silero {name}: get_speech_timestamps(read_audio(path))")
            cpu[key] = _timed(lambda p, m=m: get_speech_timestamps(read_audio(str(p)), m), paths)
        cpu[("stream", f"vadnet.VADIterator, {chunk_ms} ms chunks")] = _timed(
            vadnet_stream, decoded
        )
        for name, m in silero.items():
            key = ("stream", f"Silero {name}: VADIterator, 32 ms windows")
            cpu[key] = _timed(silero_stream(m), decoded)
        onnx_run = _vadnet_onnx(model, folder)
        cpu[("onnx", "vadnet ONNX on onnxruntime, whole file")] = _timed(onnx_run, decoded)
        sil = silero["onnx"]

        def silero_onnx(x: np.ndarray) -> None:
            sil.reset_states()
            sil.audio_forward(torch.from_numpy(x)[None], SR)

        cpu[("onnx", "Silero ONNX on onnxruntime, whole file")] = _timed(silero_onnx, decoded)

    rows = [
        {"path": path, "system": system, "cpu_s": c, "xrt": audio_s / c if c > 0 else math.nan}
        for (path, system), c in cpu.items()
    ]

    def xrt(path: str, prefix: str) -> float:
        return next(r["xrt"] for r in rows if r["path"] == path and r["system"].startswith(prefix))

    ratios = {
        "file_vadnet_over_silero_onnx": xrt("file", "vadnet") / xrt("file", "Silero onnx"),
        "file_vadnet_over_silero_jit": xrt("file", "vadnet") / xrt("file", "Silero jit"),
        "stream_vadnet_over_silero_onnx": xrt("stream", "vadnet") / xrt("stream", "Silero onnx"),
        "onnx_vadnet_over_silero_onnx": xrt("onnx", "vadnet") / xrt("onnx", "Silero ONNX"),
    }
    return {
        "files": files,
        "file_s": list(file_s),
        "audio_s": audio_s,
        "chunk_ms": chunk_ms,
        "rows": rows,
        "ratios": ratios,
    }


def markdown(res: dict) -> str:
    """The rows as a Markdown table, each with its ratio to the Silero row of the same path."""
    lines = [
        f"What users run ({res['files']} files of {res['file_s'][0]:g}-{res['file_s'][1]:g} s, {res['audio_s']:.0f} s of audio, "
        "one thread, x real time = audio s per CPU s):",
        "",
        "| path | system | x real time |",
        "|---|---|---:|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['path']} | {r['system']} | {r['xrt']:.0f} |")
    return "\n".join(lines) + "\n"
