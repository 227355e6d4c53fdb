"""Export the offline forward ``(B, T) float32 at 16 kHz -> (B, ceil(T / hop))`` P(speech)
to TorchScript or ONNX, with dynamic batch and length axes.

:class:`ExportableVad` restates :meth:`VadNet.forward` with plain functional ops (explicit
left padding instead of ``CausalConv1d``'s ``super().forward``, integer shape arithmetic),
which both ``torch.jit.script`` and the ONNX exporter follow symbolically; the parity
tests hold it to the eager model within 1e-4.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .errors import InvalidInputError, ModelError
from .network import CausalConv1d, VadNet

logger = logging.getLogger("vadnet")

FORMATS = ("torchscript", "onnx")
ONNX_OPSET = 18


class _Causal(nn.Module):
    """A CausalConv1d as F.conv1d on an explicitly left-padded input (shares weights)."""

    def __init__(self, conv: CausalConv1d) -> None:
        super().__init__()
        self.weight = conv.weight
        # A's filterbank has no bias; a zero bias keeps one scriptable signature.
        self.bias = (
            conv.bias
            if conv.bias is not None
            else nn.Parameter(
                torch.zeros(conv.out_channels, dtype=conv.weight.dtype), requires_grad=False
            )
        )
        self.stride = int(conv.stride[0])
        self.dilation = int(conv.dilation[0])
        self.context = int(conv.context)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, C_out, T // stride)."""
        x = F.pad(x, [self.context, 0])
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation)


class _LayerB(nn.Module):
    def __init__(self, conv: _Causal, norm: nn.BatchNorm1d) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, frames) -> (B, C, frames)."""
        return x + F.relu(self.norm(self.conv(x)))


class ExportableVad(nn.Module):
    """VadNet's offline forward, export-friendly: (B, T) float32 at 16 kHz ->
    (B, ceil(T / hop)) P(speech). Shares the parameters of the model it wraps."""

    def __init__(self, model: VadNet) -> None:
        super().__init__()
        model = model.eval()
        cfg = model.cfg
        self.hop = int(model.hop_samples)
        self.lookahead = int(cfg.lookahead_frames)
        self.log_floor = float(cfg.log_floor)
        self.filters = _Causal(model.A.filters)
        self.pool = int(cfg.pool)
        self.a_norm = model.A.norm
        self.b_inp = model.B.inp
        self.layers = nn.ModuleList(
            _LayerB(_Causal(layer.conv), layer.norm) for layer in model.B.layers
        )
        self.f_hidden = model.F.hidden
        self.f_out = model.F.out

    def forward(self, x: Tensor) -> Tensor:
        """(B, T) float32 at 16 kHz -> (B, ceil(T / hop)) P(speech)."""
        t = x.shape[1]
        frames = (t + self.hop - 1) // self.hop
        x = F.pad(x, [0, (frames + self.lookahead) * self.hop - t])
        a = self.filters(x.unsqueeze(1)).abs()  # (B, C, pool * (frames + lookahead))
        # max-pool as reshape + amax: same values, and the exporter keeps the length symbolic
        a = a.reshape(a.shape[0], a.shape[1], -1, self.pool).amax(-1)
        h = self.a_norm(torch.log(a + self.log_floor))
        h = self.b_inp(h)
        for layer in self.layers:
            h = layer(h)
        logits = self.f_out(F.relu(self.f_hidden(h)))[:, 0, :]
        return torch.sigmoid(logits[:, self.lookahead :])


def export_torchscript(model: VadNet, path: str | Path) -> Path:
    """Write a scripted :class:`ExportableVad` (load with ``torch.jit.load``)."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        scripted = torch.jit.script(ExportableVad(model.cpu()))
        scripted.save(str(path))
    return path


def export_onnx(model: VadNet, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write an ONNX graph with input ``audio`` (batch, samples) float32 at 16 kHz and
    output ``probs`` (batch, frames)."""
    path = Path(path)
    wrapper = ExportableVad(model.cpu()).eval()
    example = torch.zeros(2, 16000 + 37)  # sizes other than 0/1, so nothing specializes
    batch = torch.export.Dim("batch", min=1, max=4096)
    # min 2 hops: the exporter then needs no case for a 1-frame output (ONNX has no
    # strides, so the graph is the same; the parity tests run 3-sample inputs through it)
    samples = torch.export.Dim("samples", min=512, max=16000 * 3600 * 4)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["audio"],
            output_names=["probs"],
            dynamic_shapes=({0: batch, 1: samples},),
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))
    return path


def export_model(model: VadNet, fmt: str, path: str | Path) -> Path:
    """Export ``model`` as ``fmt`` (one of :data:`FORMATS`) to ``path``; returns the path."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise InvalidInputError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        out = export_torchscript(model, path) if fmt == "torchscript" else export_onnx(model, path)
    except OSError as e:
        raise InvalidInputError(f"cannot write {path}: {e}") from e
    except Exception as e:  # exporter internals raise many types; the message says which
        raise ModelError(f"{fmt} export failed: {e}") from e
    logger.info("exported %s to %s", fmt, out)
    return out
