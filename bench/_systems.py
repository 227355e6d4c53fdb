"""The detectors compared by ``bench/compare.py``, each put on vadnet's 16 ms frame grid.

Every system maps ``(T,) float32 at 16 kHz`` to ``(ceil(T / 256),)`` scores in [0, 1],
where score ``k`` is about samples ``[256k, 256(k+1))``:

* vadnet: the offline forward ``model(x)`` is already on that grid.
* Silero VAD: chunk ``j`` covers samples ``[512j, 512(j+1))`` (it also reads the 64
  samples before, as context) and gives frames ``2j`` and ``2j+1``.
* WebRTC VAD: decision ``j`` covers ``[jL, (j+1)L)`` (``L`` = 480 samples for 30 ms);
  frame ``k`` takes the decision of the window holding its centre ``256k + 128``. Its
  scores are 0/1.

All run on one CPU thread; the caller sets ``torch.set_num_threads(1)`` and the ONNX
Runtime sessions use one intra-op and one inter-op thread.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

SR = 16_000
HOP = 256  # vadnet's frame: 16 ms


def n_frames(num_samples: int) -> int:
    """Frames of a ``num_samples`` signal on the 16 ms grid: ``ceil(num_samples / 256)``."""
    return math.ceil(num_samples / HOP)


def silero_to_grid(chunk_probs: np.ndarray, num_samples: int) -> np.ndarray:
    """Silero's ``(ceil(T / 512),)`` chunk probabilities -> ``(ceil(T / 256),)`` frame scores."""
    return np.repeat(np.asarray(chunk_probs, np.float32), 2)[: n_frames(num_samples)]


def webrtc_to_grid(decisions: np.ndarray, window: int, num_samples: int) -> np.ndarray:
    """WebRTC's ``(ceil(T / window),)`` 0/1 decisions -> ``(ceil(T / 256),)`` frame scores,
    each frame taking the window that holds its centre sample."""
    centres = np.arange(n_frames(num_samples)) * HOP + HOP // 2
    idx = np.minimum(centres // window, len(decisions) - 1)
    return np.asarray(decisions, np.float32)[idx]


class VadnetSystem:
    """vadnet's offline forward pass."""

    kind = "probability"

    def __init__(self, model, name: str = "vadnet") -> None:
        self.model = model.eval()
        self.name = name

    @torch.inference_mode()
    def scores(self, x: np.ndarray) -> np.ndarray:
        """(T,) float32 at 16 kHz -> (ceil(T / 256),) P(speech)."""
        return self.model(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()

    @torch.inference_mode()
    def scores_batch(self, x: np.ndarray) -> np.ndarray:
        """(B, T) float32 at 16 kHz -> (B, ceil(T / 256)) P(speech)."""
        return self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    def state_bytes(self) -> int | None:
        return None  # the streaming bank reports it (see compare.py)


class SileroSystem:
    """Silero VAD from the ``silero-vad`` package's bundled weights (JIT or ONNX)."""

    kind = "probability"

    def __init__(self, onnx: bool) -> None:
        from silero_vad import load_silero_vad

        with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not ours
            warnings.simplefilter("ignore", FutureWarning)
            self.model = load_silero_vad(onnx=onnx)  # ONNX: 1 intra-op + 1 inter-op thread
        self.name = "silero-onnx" if onnx else "silero-jit"

    @torch.inference_mode()
    def scores(self, x: np.ndarray) -> np.ndarray:
        """(T,) float32 at 16 kHz -> (ceil(T / 256),) P(speech); state reset per clip."""
        out = self.model.audio_forward(torch.from_numpy(np.ascontiguousarray(x))[None], SR)
        return silero_to_grid(out[0].numpy(), x.shape[0])

    @torch.inference_mode()
    def scores_batch(self, x: np.ndarray) -> np.ndarray:
        """(B, T) float32 at 16 kHz -> (B, ceil(T / 256)); Silero batches the streams."""
        out = self.model.audio_forward(torch.from_numpy(np.ascontiguousarray(x)), SR).numpy()
        return np.stack([silero_to_grid(row, x.shape[1]) for row in out])

    def state_bytes(self) -> int | None:
        """Recurrent state + context of one stream, measured on the loaded model after a
        batch-1 chunk (JIT and ONNX both keep ``_state`` (2, 1, 128) and ``_context`` (1, 64))."""
        self.model.reset_states()
        self.model(torch.zeros(1, 512), SR)
        tensors = [getattr(self.model, name) for name in ("_state", "_context")]
        return int(sum(t.numel() * t.element_size() for t in tensors))


class WebrtcSystem:
    """WebRTC VAD (``webrtcvad``) at one aggressiveness mode, 16-bit PCM at 16 kHz."""

    kind = "binary"

    def __init__(self, mode: int, frame_ms: int = 30) -> None:
        import webrtcvad

        if frame_ms not in (10, 20, 30):
            raise ValueError("WebRTC VAD takes 10, 20 or 30 ms frames")
        self.vad = webrtcvad.Vad(mode)
        self.window = SR * frame_ms // 1000
        self.name = f"webrtc-{mode}"

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(T,) float32 at 16 kHz -> (ceil(T / 256),) 0/1, zero-padding the last window."""
        n = math.ceil(x.shape[0] / self.window)
        pcm = np.zeros(n * self.window, "<i2")
        pcm[: x.shape[0]] = np.clip(np.round(x * 32767.0), -32768, 32767)
        raw, step = pcm.tobytes(), 2 * self.window
        dec = [self.vad.is_speech(raw[j * step : (j + 1) * step], SR) for j in range(n)]
        return webrtc_to_grid(np.asarray(dec, np.float32), self.window, x.shape[0])

    def scores_batch(self, x: np.ndarray) -> np.ndarray:
        return np.stack([self.scores(row) for row in x])  # no batched API

    def state_bytes(self) -> int | None:
        return None  # a C struct behind the binding; its size is not exposed to Python
