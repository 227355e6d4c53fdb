"""Exact, batched streaming inference.

A stream's state is (a) the raw samples that do not yet fill a hop, kept on the host,
and (b) each causal layer's last ``context`` input columns, kept in one slot of
preallocated tensors on the model's device. One :meth:`StreamBank.advance` call moves
many streams forward at once, each by its own amount, in one batched forward pass.

Why exact: every layer is a causal conv at its own rate (see ``network.py``). A layer's
output at a new column reads the same input columns the offline pass reads: new ones,
and older ones from the cache, which starts as the zeros the offline pass pads with.
Streams that move fewer hops than the batch's longest are right-padded; a causal layer's
valid outputs never read the padding, and each stream caches only its own valid columns.

Why B's caches are rings: a kernel-3 layer of dilation ``d`` caches ``2 d`` columns but
reads only ``2 n`` of them when a stream moves ``n`` frames (a 100 ms chunk is ~6 frames;
``d`` goes up to 128). Shifting a linear cache copies all ``2 d`` columns on every call, so
the cost per chunk grew with the context: with 4 s of it (``--grow-b 32 64``) a 100 ms
chunk cost 2.4-3.1 times what it cost with 1 s (docs/experiments.md, "Server"). A ring is
read at the ``2 n`` columns a call needs and written at the ``n`` new ones, whatever ``d``
is: 1.2 times.

End of stream: :meth:`StreamBank.advance` with ``final=True`` zero-pads the partial last
hop and feeds ``lookahead_frames`` hops of zeros, which is what the offline pass pads
on the right, so the last frames come out too.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .errors import InvalidInputError
from .network import LayerB, VadNet, exact_float32_on, fold_batchnorm, weights_key

logger = logging.getLogger("vadnet")


@dataclass
class NetState:
    """The caches of a bank of ``capacity`` streams.

    ``a``: A's raw-sample context, (capacity, a_kernel - a_stride), oldest sample first.
    ``b[i]``: B layer i's input columns as a ring, (1 + capacity * L, b_channels), where
    ``L = lengths[i]`` is the layer's context, ``(b_kernel - 1) * dilation``. Frame ``f`` of
    the stream in slot ``s`` lives in row ``1 + s * L + f % L``. Row 0 is scratch: it takes
    the writes a call drops (padding, and columns more than ``L`` frames old), so that one
    scatter serves every stream of a batch. (Row 0 and not the last, so that its index
    does not depend on the capacity, which grows after the step is traced.)
    """

    a: Tensor
    b: list[Tensor]
    lengths: list[int]

    @classmethod
    def zeros(cls, model: VadNet, n: int, device: torch.device | str = "cpu") -> NetState:
        p = next(model.parameters())
        kw = {"device": device, "dtype": p.dtype}
        a = torch.zeros(n, model.A.filters.context, **kw)
        convs = [layer.conv for layer in model.B.layers]
        b = [torch.zeros(1 + n * c.context, c.in_channels, **kw) for c in convs]
        return cls(a, b, [c.context for c in convs])

    @property
    def capacity(self) -> int:
        return self.a.shape[0]

    def tensors(self) -> list[Tensor]:
        return [self.a, *self.b]

    def per_slot(self) -> list[Tensor]:
        """Views with the slot first: ``a`` (capacity, context), each ring (capacity, L, C)."""
        n = self.capacity
        rings = [r[1:].view(n, ln, r.shape[1]) for r, ln in zip(self.b, self.lengths, strict=True)]
        return [self.a, *rings]

    def fill_(self, idx: Tensor, value: float = 0.0) -> None:
        for t in self.per_slot():
            t.index_fill_(0, idx, value)

    def copy_rows_from(self, other: NetState, rows: Sequence[int]) -> None:
        """Copy ``other``'s slots ``rows`` into this bank's first ``len(rows)`` slots."""
        if not rows:
            return
        src_idx = torch.tensor(list(rows), device=self.a.device)
        dst_idx = torch.arange(len(rows), device=self.a.device)
        for dst, src in zip(self.per_slot(), other.per_slot(), strict=True):
            dst.index_copy_(0, dst_idx, src.index_select(0, src_idx))

    def bytes_per_stream(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.per_slot())


def _keep_tail(x: Tensor, n_new: Tensor, context: int) -> Tensor:
    """Last ``context`` valid columns of ``x`` (N, context + n_max) per row, where row r
    holds ``context + n_new[r]`` valid columns."""
    steps = torch.arange(context, device=x.device)
    return torch.gather(x, 1, n_new.view(-1, 1) + steps.view(1, -1))


def _ring_conv(
    layer: LayerB,
    weight: Tensor,
    ring: Tensor,
    h: Tensor,
    slots: Tensor,
    frames_done: Tensor,
    n_hops: Tensor,
) -> Tensor:
    """B ``layer``'s dilated causal conv on a batch of streams' new columns. Older columns
    are read from ``ring``; then the new ones are written to it.

    Args:
        weight: the conv's weight as (C_out, kernel * C_in), oldest tap first.
        ring: the layer's ring (see :class:`NetState`), ``layer.conv.context`` rows a slot.
        h: (N, n_max, C_in) new input columns; row r is valid for ``n_hops[r]`` columns and
            its column t is frame ``frames_done[r] + t`` of the stream in ``slots[r]``.

    Returns:
        the conv's output (N, n_max, C_out), valid where ``h`` is.
    """
    kernel, dilation, length = layer.conv.kernel_size[0], layer.conv.dilation[0], layer.conv.context
    t = torch.arange(h.shape[1], device=h.device)
    frame = frames_done.view(-1, 1) + t.view(1, -1)  # (N, n_max)
    base = 1 + slots.view(-1, 1) * length
    taps = []
    for k in range(kernel - 1):
        back = (kernel - 1 - k) * dilation  # tap k reads the column `back` frames earlier
        old = ring.index_select(0, (base + (frame - back) % length).view(-1)).view_as(h)
        new = h.index_select(1, (t - back).clamp(min=0))
        taps.append(torch.where((t >= back).view(1, -1, 1), new, old))
    out = F.linear(torch.cat([*taps, h], dim=2), weight, layer.conv.bias)
    if length == 0:  # kernel 1: nothing to cache
        return out
    # Keep each stream's last `length` valid columns; send the rest to scratch row 0.
    n = n_hops.view(-1, 1)
    keep = (t.view(1, -1) < n) & (t.view(1, -1) >= n - length)
    rows = torch.where(keep, base + frame % length, 0)
    ring.index_copy_(0, rows.view(-1), h.reshape(-1, h.shape[2]))
    return out


class _BankStep(nn.Module):
    """Advance a batch of streams by whole hops, reading and updating the bank's caches in
    place: one module, so that it can be traced into one TorchScript graph.

    ``forward(slots (N,), x (N, n_max * hop), n_hops (N,), frames_done (N,), a, *b)
    -> causal logits (N, n_max)``: row r's new samples are valid for ``n_hops[r] * hop``,
    and its logits for ``n_hops[r]`` columns; ``frames_done[r]`` is how many hops the stream
    in ``slots[r]`` has moved before; ``a`` and ``b`` are the whole bank's caches.
    """

    def __init__(self, model: VadNet) -> None:
        super().__init__()
        if not all(isinstance(layer.norm, nn.Identity) for layer in model.B.layers):
            raise ValueError("the streaming step needs fold_batchnorm(model)")
        self.model = model
        # Each B conv's weight as one matrix, oldest tap first, to apply to gathered taps.
        for i, layer in enumerate(model.B.layers):
            w = layer.conv.weight.detach().permute(0, 2, 1).reshape(layer.conv.out_channels, -1)
            self.register_buffer(f"weight_{i}", w.contiguous())

    def forward(
        self, slots: Tensor, x: Tensor, n_hops: Tensor, frames_done: Tensor, a: Tensor, *b: Tensor
    ) -> Tensor:
        model, hop = self.model, self.model.hop_samples
        a_in = torch.cat([a.index_select(0, slots), x], dim=1)
        a.index_copy_(0, slots, _keep_tail(a_in, n_hops * hop, a.shape[1]))
        feats = model.A.compress(model.A.filters.forward_valid(a_in.unsqueeze(1)))
        # (N, n_max, C): a frame's channels together, for the gathers and matrix products
        inp = model.B.inp
        h = F.linear(feats.transpose(1, 2), inp.weight[:, :, 0], inp.bias)
        for i, (layer, ring) in enumerate(zip(model.B.layers, b, strict=True)):
            weight = self.get_buffer(f"weight_{i}")
            y = _ring_conv(layer, weight, ring, h, slots, frames_done, n_hops)
            h = layer.mix(h, y)
        return model.F.per_frame(h)


@dataclass
class StepResult:
    """New probabilities of one stream: frames ``first_frame .. first_frame + len(probs) - 1``."""

    first_frame: int
    probs: np.ndarray


@dataclass
class _Host:
    """Host-side state of one stream: samples short of a hop and counters."""

    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    samples_in: int = 0
    causal_done: int = 0
    finished: bool = False


class StreamBank:
    """Per-stream state of many streams, advanced together in batched forward passes.

    Slots are opened and closed by the caller (the server's batcher opens one per RPC).
    Methods are thread-safe, so slots can be opened on the event loop while a worker
    thread runs :meth:`advance`.

    Memory follows the number of open streams both ways: the state tensors double when
    full and halve when at most a quarter is in use (not below ``capacity``; the gap
    between the two bounds keeps a bank near one size from resizing back and forth). A
    slot is a stable id; the row it occupies in the tensors moves when the bank shrinks.
    """

    def __init__(
        self,
        model: VadNet,
        device: torch.device | str = "cpu",
        capacity: int = 64,
        trace: bool = True,
    ) -> None:
        if capacity < 1:
            raise InvalidInputError(f"capacity must be >= 1, got {capacity}")
        self.device = torch.device(device)
        # BatchNorms folded into the convs, and the step traced: shared by every bank of
        # this model (a trace costs ~65 ms and TorchScript never frees it).
        self.model, step = _prepared(model, self.device, trace)
        self._dtype = next(self.model.parameters()).dtype
        self._step = step
        self._lock = threading.Lock()
        self._min_capacity = capacity
        self._state = NetState.zeros(self.model, capacity, self.device)
        self._hosts: dict[int, _Host] = {}
        self._rows: dict[int, int] = {}  # slot id -> row of the state tensors
        self._free_rows = list(range(capacity - 1, -1, -1))
        self._free_ids: list[int] = []
        self._next_id = 0
        self._pin = self.device.type == "cuda"

    # --- slots -----------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._state.a.shape[0]

    def __len__(self) -> int:
        return len(self._hosts)

    def bytes_per_stream(self) -> int:
        """Device state per stream plus the largest host buffer (one hop less a sample)."""
        return self._state.bytes_per_stream() + 4 * (self.model.hop_samples - 1)

    def state_bytes(self) -> int:
        """Bytes the state tensors hold now, for every row, open or free."""
        return sum(t.numel() * t.element_size() for t in self._state.tensors())

    def open(self) -> int:
        """A new stream at sample 0; returns its slot."""
        with self._lock:
            if not self._free_rows:
                self._resize(2 * self.capacity)
            row = self._free_rows.pop()
            self._state.fill_(torch.tensor([row], device=self.device))
            if self._free_ids:
                slot = self._free_ids.pop()
            else:
                slot, self._next_id = self._next_id, self._next_id + 1
            self._rows[slot] = row
            self._hosts[slot] = _Host()
            return slot

    def reset(self, slot: int) -> None:
        """Start the stream in ``slot`` again at sample 0."""
        with self._lock:
            self._host(slot)
            self._state.fill_(torch.tensor([self._rows[slot]], device=self.device))
            self._hosts[slot] = _Host()

    def close(self, slot: int) -> None:
        """Free ``slot`` at once (a client that went away)."""
        with self._lock:
            if self._hosts.pop(slot, None) is None:
                return
            self._free_rows.append(self._rows.pop(slot))
            self._free_ids.append(slot)
            target = self.capacity
            while target // 2 >= self._min_capacity and len(self._hosts) <= target // 4:
                target //= 2
            if target < self.capacity:
                self._resize(target)

    def _host(self, slot: int) -> _Host:
        try:
            return self._hosts[slot]
        except KeyError as e:
            raise InvalidInputError(f"stream slot {slot} is not open") from e

    def _resize(self, capacity: int) -> None:
        """New state tensors of ``capacity`` rows; open streams move to the first rows."""
        old = self._state
        slots = sorted(self._rows, key=self._rows.__getitem__)
        self._state = NetState.zeros(self.model, capacity, self.device)
        self._state.copy_rows_from(old, [self._rows[s] for s in slots])
        self._rows = {s: r for r, s in enumerate(slots)}
        self._free_rows = list(range(capacity - 1, len(slots) - 1, -1))
        shrunk = capacity < old.capacity
        del old
        if shrunk:
            _give_back_freed_memory()
        logger.debug("stream bank resized to %s slots (%s open)", capacity, len(slots))

    # --- compute ---------------------------------------------------------------------
    def advance(
        self,
        slots: Sequence[int],
        chunks: Sequence[np.ndarray],
        final: Sequence[bool] | None = None,
    ) -> list[StepResult]:
        """Feed ``chunks[i]`` (1-D float32 at 16 kHz, any length) to stream ``slots[i]``.

        With ``final[i]`` the stream ends: its lookahead is flushed and all its remaining
        frames are returned; the slot stays open until :meth:`close` or :meth:`reset`.
        Returns one :class:`StepResult` per slot, in order.
        """
        final = final if final is not None else [False] * len(slots)
        if not (len(slots) == len(chunks) == len(final)):
            raise InvalidInputError("slots, chunks and final must have the same length")
        if len(set(slots)) != len(slots):
            raise InvalidInputError("a stream may appear only once per advance() call")
        hop, la = self.model.hop_samples, self.model.cfg.lookahead_frames
        with self._lock:
            hosts = [self._host(s) for s in slots]
            blocks: list[np.ndarray] = []
            for h, chunk, fin in zip(hosts, chunks, final, strict=True):
                if h.finished:
                    raise InvalidInputError("stream already ended; reset() it to start again")
                buf = np.concatenate([h.pending, np.asarray(chunk, np.float32).reshape(-1)])
                h.samples_in += buf.size - h.pending.size
                whole = buf.size // hop * hop
                h.pending = buf[whole:].copy()  # a view would pin the whole chunk
                if fin:
                    h.finished = True
                    target = -(-h.samples_in // hop) + la if h.samples_in else 0
                    tail = np.zeros((target - h.causal_done) * hop - whole, np.float32)
                    tail[: h.pending.size] = h.pending
                    h.pending = np.zeros(0, np.float32)
                    blocks.append(np.concatenate([buf[:whole], tail]))
                else:
                    blocks.append(buf[:whole])
            n_hops = [b.size // hop for b in blocks]
            # One sigmoid and one host copy for the whole batch, then numpy views per row
            # (copied out, so a result does not pin the batch).
            done = [h.causal_done for h in hosts]
            probs = torch.sigmoid(self._run(slots, blocks, n_hops, done)).numpy()
            out = []
            for r, (h, n) in enumerate(zip(hosts, n_hops, strict=True)):
                first = h.causal_done
                h.causal_done += n
                drop = max(0, la - first)
                row = probs[r, drop:n].copy() if n > drop else np.zeros(0, np.float32)
                out.append(StepResult(max(0, first - la), row))
            return out

    def _run(
        self,
        slots: Sequence[int],
        blocks: list[np.ndarray],
        n_hops: list[int],
        frames_done: list[int],
    ) -> Tensor:
        hop = self.model.hop_samples
        n_max = max(n_hops, default=0)
        if n_max == 0:
            return torch.zeros(len(slots), 0)
        x = np.zeros((len(slots), n_max * hop), np.float32)
        for r, b in enumerate(blocks):
            x[r, : b.size] = b
        xt = torch.from_numpy(x)
        n = torch.tensor(n_hops, dtype=torch.int64)
        idx = torch.tensor([self._rows[s] for s in slots], dtype=torch.int64)
        done = torch.tensor(frames_done, dtype=torch.int64)
        if self._pin:
            xt, n, idx, done = (t.pin_memory() for t in (xt, n, idx, done))
        xt, n, idx, done = (t.to(self.device, non_blocking=True) for t in (xt, n, idx, done))
        with torch.inference_mode():
            logits = self._step(idx, xt.to(self._dtype), n, done, *self._state.tensors())
        return logits.float().cpu()


def _traced_step(model: VadNet, device: torch.device) -> torch.nn.Module:
    """:class:`_BankStep` traced on a small batch. Why: the step is ~60 small ops on a few
    frames per stream, and a graph runs them without Python's per-op dispatch (18 % less
    time per batch of 35 streams on the CPU). Every op in it is shape-generic (sizes are
    read from tensors, not baked in), so one trace serves any batch and any chunk length;
    tests/test_streaming.py checks it against eager on other shapes."""
    step = _BankStep(model).eval()
    state = NetState.zeros(model, 3, device)
    example = (
        torch.tensor([2, 0], device=device),
        torch.zeros(2, 2 * model.hop_samples, device=device, dtype=state.a.dtype),
        torch.tensor([2, 1], device=device),
        torch.tensor([5, 0], device=device),
        *state.tensors(),
    )
    with torch.inference_mode(), warnings.catch_warnings():
        # TorchScript's tracer warns that it is deprecated in favour of torch.export, whose
        # graphs need ahead-of-time compilation to run; tracing is what runs here as is.
        warnings.simplefilter("ignore")
        return torch.jit.trace(step, example, check_trace=False)


# Per model: its folded copy and step, made once per device and weights (see StreamBank).
_PREPARED: weakref.WeakKeyDictionary[VadNet, dict] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def _prepared(model: VadNet, device: torch.device, trace: bool) -> tuple[VadNet, nn.Module]:
    """``model``'s BatchNorm-folded copy on ``device`` and its (traced) step, cached while
    the weights stay the same (:func:`network.weights_key`)."""
    weights = weights_key(model)
    with _PREPARED_LOCK:
        per_model = _PREPARED.setdefault(model, {})
        key = (str(device), trace)
        cached = per_model.get(key)
        if cached is None or cached[0] != weights:
            exact_float32_on(device)
            folded = fold_batchnorm(model).to(device).eval()
            step = _traced_step(folded, device) if trace else _BankStep(folded)
            cached = per_model[key] = (weights, folded, step)
        return cached[1], cached[2]


def _give_back_freed_memory() -> None:
    """Ask glibc to return freed heap pages to the OS. Why: state tensors under glibc's
    mmap threshold (which grows to 32 MB as large blocks are freed) live on the heap,
    and free() keeps those pages, so a bank that shrank would not shrink the process."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to ask
        pass


class StreamingVAD:
    """One stream, Silero-style: call it with chunks, ``flush()`` at the end, ``reset()``.

    >>> vad = StreamingVAD(model)
    >>> probs = np.concatenate([vad(c) for c in chunks] + [vad.flush()])
    """

    def __init__(self, model: VadNet, device: torch.device | str = "cpu") -> None:
        self.bank = StreamBank(model, device, capacity=1)
        self.slot = self.bank.open()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """(n,) float32 at 16 kHz -> probabilities of the frames it completed."""
        return self.bank.advance([self.slot], [chunk])[0].probs

    def flush(self) -> np.ndarray:
        """End the stream: the remaining frames, lookahead included."""
        return self.bank.advance([self.slot], [np.zeros(0, np.float32)], [True])[0].probs

    def reset(self) -> None:
        self.bank.reset(self.slot)
