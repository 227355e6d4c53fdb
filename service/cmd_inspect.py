"""``vadnet inspect --out filters.png``: what filterbank A learned.

Left, A's 64 filters (``model.A.filters.weight``, (64, 1, 256): 16 ms each) drawn as small
waveforms in a grid, like the classic picture of a conv net's first-layer filters; right,
their magnitude responses as an image, one row per filter, sorted by peak frequency.
Both use the same order (by peak frequency), so a grid cell and an image row match.
"""

from __future__ import annotations

import argparse
import math
import sys

from .cmd_detect import add_model_argument, one_line_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    add_model_argument(parser)
    parser.add_argument("--out", required=True, metavar="PNG", help="image to write")


def filter_responses(weights, sample_rate: int, n_fft: int = 1024):
    """(C, K) filter taps -> (freqs_hz (n_fft/2+1,), magnitude dB (C, n_fft/2+1), order (C,))
    where ``order`` sorts the filters by the frequency of their peak response."""
    import numpy as np

    mag = np.abs(np.fft.rfft(weights, n=n_fft, axis=1))
    db = 20 * np.log10(mag / max(mag.max(), 1e-12) + 1e-6)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    order = np.argsort(freqs[np.argmax(mag, axis=1)], kind="stable")
    return freqs, db, order


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import numpy as np

    from vadnet.model.checkpoint import load_model
    from vadnet.model.errors import InvalidInputError

    model = load_model(args.model)
    w = model.A.filters.weight.detach().cpu().numpy()[:, 0, :]  # (C, K)
    rate = model.sample_rate
    freqs, db, order = filter_responses(w, rate)
    c, k = w.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)

    fig = plt.figure(figsize=(16, 8))
    grid = fig.add_gridspec(rows, 2 * cols, wspace=0.15, hspace=0.15)
    # conv1d is a correlation: tap i meets the i-th sample of the window, so a filter
    # drawn left to right is the pattern it responds to most
    t_ms = 1000 * np.arange(k) / rate
    for i, f in enumerate(order):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.plot(t_ms, w[f], lw=0.6, color="k")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.text(0.25, 0.95, f"A's {c} filters ({1000 * k / rate:g} ms), by peak frequency",
             ha="center")  # fmt: skip
    ax = fig.add_subplot(grid[:, cols + 1 :])
    im = ax.imshow(
        db[order],
        aspect="auto",
        origin="lower",
        extent=(freqs[0] / 1000, freqs[-1] / 1000, -0.5, c - 0.5),
        vmin=-40,
        vmax=0,
        cmap="magma",
    )
    ax.set_xlabel("frequency (kHz)")
    ax.set_ylabel("filter (sorted by peak frequency)")
    ax.set_title("magnitude response (dB re the strongest)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    try:
        fig.savefig(args.out, dpi=90)
    except OSError as e:
        raise InvalidInputError(f"cannot write {args.out}: {e.strerror or e}") from e
    finally:
        plt.close(fig)
    sys.stdout.write(f"wrote {args.out}\n")
    return 0
