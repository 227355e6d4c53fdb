"""The vadnet network: a 1D conv/max-pool net over raw 16 kHz samples.

It reads like the classic "modular" picture of a conv net looking at audio::

    raw samples ──A──> |·| ──max-pool──> log ──B──B──B──B──B──B──> F ──> sigmoid
                (filterbank)   (zoom out)        (dilated convs)  (per frame)

* **A** is a group of neurons that each look at a short segment of samples (16 ms):
  a learned filterbank (:class:`FilterbankA`).
* **max-pooling** zooms out from A's 4 ms grid to the 16 ms frame grid.
* **B** is a stack of dilated 1D convs on A's pooled, log-compressed output
  (:class:`StackB`); dilations give seconds of context without recurrence (the
  bundled model: eight layers, dilations 1..128, 8 s; stage 1 trains the first five).
* **F** is a fully-connected classifier applied to every frame (:class:`ClassifierF`).

Frame convention: output frame ``i`` covers input samples ``[i * hop, (i + 1) * hop)``.
A signal of ``T`` samples gives ``ceil(T / hop)`` frames; the last, partial frame is
zero-padded. Frame ``i`` sees ``receptive_field_samples`` samples ending at
``(i + 1) * hop + lookahead`` (zeros before the start and after the end of the signal).

Every layer is *causal* at its own rate, with zero left-padding; the lookahead comes
from reading the causal net's output ``lookahead_frames`` frames late. This is what
makes streaming exact: a stream's state is each layer's last few input columns, and
the zeros a layer sees before a stream starts are the zeros the offline pass pads with.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the network. The checkpoint stores this dataclass."""

    sample_rate: int = SAMPLE_RATE  # the net only ever sees 16 kHz; inputs are resampled
    # A: 16 ms filters resolve ~60 Hz bands, enough to see pitch harmonics and formants;
    # a 4 ms stride keeps onsets sharp. 64 filters is where the dev-clip trial stopped
    # improving; on the real-use scenes 128 (v61) gained ~0.001 AUC over three seeds.
    # 32 ms filters (a_kernel 512, v66: finer bands for low voices' harmonics) missed less
    # speech through a phone line but fired more on speech-free audio (docs/experiments.md).
    a_channels: int = 64
    a_kernel: int = 256
    a_stride: int = 64
    # max-pool 4 steps of 4 ms: the frame hop is 16 ms (<= 32 ms asked for).
    pool: int = 4
    # B: kernel 3 with dilations 1..16 sees 63 frames (~1 s), enough to tell steady noise
    # from syllabic speech, at 64 channels (~70k weights). This is stage 1's net; the
    # bundled model's stage 2 grows three more layers, dilations 32, 64 and 128
    # (model/training/grow.py): with 8 s of context, at dev recall 0.75, it calls 0.23-0.34 % of
    # held-out music frames speech (three seeds), against 0.79-1.10 % with 1 s (docs/model.md).
    b_channels: int = 64
    b_kernel: int = 3
    b_dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    f_hidden: int = 64
    # 4 frames (64 ms) of lookahead: latency = 64 + 16 = 80 ms (<= 100 ms asked for).
    lookahead_frames: int = 4
    # Floor under A's pooled magnitude before the log: ~-120 dBFS, below 16-bit noise,
    # so digital silence is one finite value the net can learn.
    log_floor: float = 1e-6
    extra: dict = field(default_factory=dict)  # free-form notes (calibration, data)

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"sample_rate must be {SAMPLE_RATE}; resample inputs instead")
        if self.a_kernel < self.a_stride or self.a_kernel % self.a_stride:
            raise ValueError(
                f"a_kernel ({self.a_kernel}) must be a multiple of a_stride ({self.a_stride})"
                " so that A's causal context is a whole number of strides"
            )
        if self.pool < 1:
            raise ValueError("pool must be >= 1")
        if self.hop_samples * 1000 > 32 * self.sample_rate:
            raise ValueError(f"hop {self.hop_ms} ms > 32 ms: lower a_stride or pool")
        if min(self.a_channels, self.b_channels, self.f_hidden) < 1:
            raise ValueError("a_channels, b_channels and f_hidden must be >= 1")
        if self.b_kernel < 1 or any(d < 1 for d in self.b_dilations) or not self.b_dilations:
            raise ValueError("b_kernel and every b_dilation must be >= 1, and B needs a layer")
        if self.lookahead_frames < 0:
            raise ValueError("lookahead_frames must be >= 0")
        if self.latency_s > 0.100 + 1e-9:
            raise ValueError(
                f"algorithmic latency {self.latency_s * 1000:.0f} ms > 100 ms:"
                " lower lookahead_frames or the hop"
            )

    # Derived sizes, in samples at 16 kHz and in seconds.
    @property
    def hop_samples(self) -> int:
        return self.a_stride * self.pool

    @property
    def hop_ms(self) -> float:
        return 1000.0 * self.hop_samples / self.sample_rate

    @property
    def lookahead_samples(self) -> int:
        return self.lookahead_frames * self.hop_samples

    @property
    def latency_s(self) -> float:
        """Algorithmic latency: lookahead plus one hop."""
        return (self.lookahead_samples + self.hop_samples) / self.sample_rate

    @property
    def receptive_field_samples(self) -> int:
        a_field = self.a_kernel + (self.pool - 1) * self.a_stride
        b_field = (self.b_kernel - 1) * sum(self.b_dilations) * self.hop_samples
        return a_field + b_field

    def to_dict(self) -> dict:
        d = asdict(self)
        d["b_dilations"] = list(self.b_dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        d["b_dilations"] = tuple(d.get("b_dilations", cls.b_dilations))
        return cls(**d)


class CausalConv1d(nn.Conv1d):
    """A Conv1d that pads ``context = (kernel - 1) * dilation - (stride - 1)`` zeros on the
    left only, so output ``j`` ends at input ``(j + 1) * stride``. In streaming, those
    ``context`` columns are the layer's state."""

    @property
    def context(self) -> int:
        return (self.kernel_size[0] - 1) * self.dilation[0] - (self.stride[0] - 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, C_out, T // stride)."""
        return super().forward(F.pad(x, (self.context, 0)))

    def forward_valid(self, x: Tensor) -> Tensor:
        """(B, C_in, context + n * stride) -> (B, C_out, n): no padding, for streaming."""
        return super().forward(x)


class FilterbankA(nn.Module):
    """A: learned filters over short segments of raw samples, then |.|, max-pool and log."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        # No bias: a filterbank on raw audio has none, and DC offset must not leak in.
        self.filters = CausalConv1d(
            1, cfg.a_channels, cfg.a_kernel, stride=cfg.a_stride, bias=False
        )
        self.pool = nn.MaxPool1d(cfg.pool, cfg.pool)
        self.norm = nn.BatchNorm1d(cfg.a_channels)
        self.log_floor = cfg.log_floor

    def compress(self, a: Tensor) -> Tensor:
        """A's responses (B, C, 4 ms steps) -> log-magnitude per frame (B, C, frames)."""
        return self.norm(torch.log(self.pool(a.abs()) + self.log_floor))

    def forward(self, x: Tensor) -> Tensor:
        """(B, T) float32 at 16 kHz, T a multiple of hop -> (B, a_channels, T // hop)."""
        return self.compress(self.filters(x.unsqueeze(1)))


class LayerB(nn.Module):
    """One B layer: a dilated causal conv with a residual connection."""

    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(channels, channels, kernel, dilation=dilation)
        self.norm = nn.BatchNorm1d(channels)

    def mix(self, x: Tensor, y: Tensor) -> Tensor:
        return x + F.relu(self.norm(y))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, frames) -> (B, C, frames)."""
        return self.mix(x, self.conv(x))


class StackB(nn.Module):
    """B: dilated conv layers stacked on A's pooled output."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.inp = nn.Conv1d(cfg.a_channels, cfg.b_channels, 1)
        self.layers = nn.ModuleList(
            LayerB(cfg.b_channels, cfg.b_kernel, d) for d in cfg.b_dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, a_channels, frames) -> (B, b_channels, frames)."""
        x = self.inp(x)
        for layer in self.layers:
            x = layer(x)
        return x


class ClassifierF(nn.Module):
    """F: a fully-connected speech/non-speech classifier applied to each frame."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.hidden = nn.Conv1d(cfg.b_channels, cfg.f_hidden, 1)
        self.out = nn.Conv1d(cfg.f_hidden, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, b_channels, frames) -> logits (B, frames)."""
        return self.per_frame(x.transpose(1, 2))

    def per_frame(self, h: Tensor) -> Tensor:
        """(..., b_channels) -> logits (...): the same layers on frames whose channels are
        last, as streaming keeps them (1x1 convs are matrix products on such frames)."""
        hidden = F.relu(F.linear(h, self.hidden.weight[:, :, 0], self.hidden.bias))
        return F.linear(hidden, self.out.weight[:, :, 0], self.out.bias).squeeze(-1)


class VadNet(nn.Module):
    """A -> max-pool -> B -> F -> sigmoid: P(speech) for each 16 ms frame.

    Attributes ``hop_samples``, ``lookahead_samples`` and ``receptive_field_samples``
    (and their ``_s`` twins in seconds) come from the config stored in the checkpoint.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.A = FilterbankA(self.cfg)
        self.B = StackB(self.cfg)
        self.F = ClassifierF(self.cfg)

    # --- sizes ---------------------------------------------------------------------
    @property
    def hop_samples(self) -> int:
        return self.cfg.hop_samples

    @property
    def hop_s(self) -> float:
        return self.cfg.hop_samples / self.cfg.sample_rate

    @property
    def lookahead_samples(self) -> int:
        return self.cfg.lookahead_samples

    @property
    def lookahead_s(self) -> float:
        return self.cfg.lookahead_samples / self.cfg.sample_rate

    @property
    def receptive_field_samples(self) -> int:
        return self.cfg.receptive_field_samples

    @property
    def receptive_field_s(self) -> float:
        return self.cfg.receptive_field_samples / self.cfg.sample_rate

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Frames for a signal of ``num_samples``: ``ceil(num_samples / hop)``."""
        return math.ceil(num_samples / self.hop_samples)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- offline -------------------------------------------------------------------
    def causal_logits(self, x: Tensor) -> Tensor:
        """(B, n * hop) float32 at 16 kHz -> causal logits (B, n); frame j ends at (j+1)*hop."""
        return self.F(self.B(self.A(x)))

    def _pad_for_lookahead(self, x: Tensor) -> Tensor:
        """(B, T) -> (B, (ceil(T / hop) + lookahead_frames) * hop): zeros after the end, so
        the causal net's output read ``lookahead_frames`` late covers every frame."""
        if x.dim() != 2:
            raise ValueError(f"expected (batch, samples), got shape {tuple(x.shape)}")
        frames = self.num_frames(x.shape[1]) + self.cfg.lookahead_frames
        return F.pad(x, (0, frames * self.hop_samples - x.shape[1]))

    def frame_features(self, x: Tensor) -> Tensor:
        """(B, T) float32 at 16 kHz -> B's output (B, b_channels, ceil(T / hop)), aligned
        like ``forward``'s frames: what F classifies (diagnostics and experiments)."""
        return self.B(self.A(self._pad_for_lookahead(x)))[:, :, self.cfg.lookahead_frames :]

    def forward_logits(self, x: Tensor) -> Tensor:
        """(B, T) float32 at 16 kHz -> logits (B, ceil(T / hop)), lookahead included."""
        return self.causal_logits(self._pad_for_lookahead(x))[:, self.cfg.lookahead_frames :]

    def forward(self, x: Tensor) -> Tensor:
        """(B, T) float32 at 16 kHz -> P(speech) (B, ceil(T / hop)); frame i is
        samples [i*hop, (i+1)*hop)."""
        return torch.sigmoid(self.forward_logits(x))


def weights_key(model: nn.Module) -> tuple:
    """Changes whenever ``model``'s weights, dtype or device do: a cache of something built
    from the weights (a folded copy, a traced step) is stale when its key differs. torch
    bumps a tensor's ``_version`` on every in-place write (optimizer steps included)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return (str(tensors[0].device), tuple((t.dtype, t._version) for t in tensors))


def exact_float32_on(device: torch.device | str) -> None:
    """On CUDA, keep float32 convolutions and matrix products in float32. Why: cuDNN runs
    float32 convolutions in TF32 by default (10 mantissa bits, ~1e-3 relative), which
    would break streaming == offline (1e-5) and CUDA == CPU (1e-4). The cost is small for
    a net this size. Process-wide, as torch's switches are; a no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


@torch.no_grad()
def fold_batchnorm(model: VadNet) -> VadNet:
    """An eval-only copy of ``model`` with every BatchNorm folded into a neighbouring conv.

    In eval mode a BatchNorm is a per-channel affine map, so it merges into the weights:
    each B layer's norm into that layer's conv, and A's norm (after the log, where no conv
    precedes it) into B's 1x1 input conv. The copy computes the same function with six
    fewer ops per pass (outputs agree to float rounding, ~1e-7), which the server's
    many small batched passes feel. The copy cannot be trained. Folding is done in
    float32, then the copy takes the model's dtype and device (float16 on CUDA with --half).
    """
    dtype = next(model.parameters()).dtype
    fused = copy.deepcopy(model).eval().float()

    def scale_shift(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale

    for layer in fused.B.layers:
        scale, shift = scale_shift(layer.norm)
        conv = layer.conv
        conv.weight.mul_(scale[:, None, None])
        conv.bias.copy_(conv.bias * scale + shift)
        layer.norm = nn.Identity()
    scale, shift = scale_shift(fused.A.norm)
    inp = fused.B.inp
    inp.bias.add_((inp.weight[:, :, 0] * shift).sum(1))
    inp.weight.mul_(scale[None, :, None])
    fused.A.norm = nn.Identity()
    return fused.to(dtype)
