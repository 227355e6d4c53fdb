"""``vadnet train``: build the source cache, train, fine-tune, bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vadnet.model.errors import InvalidInputError

_TRAIN_FLAGS = ("out_dir", "cache_dir", "speech_dir", "noise_dir", "manifest", "user_share", "init", "seed", "epochs",
                "steps_per_epoch", "batch_size", "lr", "workers", "dev_examples", "calibration_examples", "device",
                "calibration_max_false_alarm", "hard_negative_fraction",
                "hard_negative_weight", "far_negative_fraction", "far_negative_margin_ms", "replay_fraction", "replay_buffer", "ema_decay", "grow_b_dilations", "smoothness_weight",
                "rank_weight", "rank_negative_fraction")  # fmt: skip
MIX_FLAGS = (
    "p_no_speech",
    "p_synthetic",
    "p_melody",
    "p_music_gate",
    "music_share",
    "p_events",
    "p_telephone",
    "telephone_orders",
    "telephone_low_cut_hz",
    "p_band_limit",
    "band_low_hz",
    "band_high_hz",
    "buried_snr_db",
    "snr_db",
    "speech_weighting",
)  # MixConfig fields that have a flag
# ModelConfig fields that size a new network: (field, what it is, its default).
SIZE_FLAGS = (
    ("a_channels", "number of A's filters", 64),
    ("a_kernel", "length of A's filters in samples at 16 kHz, a multiple of 64", 256),
    ("b_channels", "width of B", 64),
    ("f_hidden", "width of F's hidden layer", 64),
)


# TrainConfig's defaults, repeated here so `vadnet --help` does not import torch and scipy;
# tests/test_train.py checks they agree.
DEFAULTS = {"out_dir": "runs/bundled", "cache_dir": "cache/sources", "user_share": 0.5, "seed": 0, "epochs": 60, "steps_per_epoch": 100,
            "batch_size": 32, "workers": 2, "dev_examples": 400, "calibration_examples": 2000, "lr": 3e-3,
            "calibration_max_false_alarm": 0.005, "hard_negative_fraction": 0.0,
            "hard_negative_weight": 1.0, "far_negative_fraction": 0.0, "far_negative_margin_ms": 250.0,
            "replay_fraction": 0.0, "replay_buffer": 256, "ema_decay": 0.0, "grow_b_dilations": (),
            "smoothness_weight": 0.0, "rank_weight": 0.0, "rank_negative_fraction": 0.01}  # fmt: skip


EPILOG = """\
fine-tuning on your data:
  vadnet train --speech-dir S --noise-dir N --out R --epochs 12
  S holds your speech (one sub-folder per speaker), N your backgrounds. Any sample rate
  soundfile reads is resampled to 16 kHz; a file that cannot be read is skipped with a
  warning and listed at the end. Half of the training mixtures are the bundled recipe's
  (from --cache, built once by `vadnet train --prepare`; --user-share sets the split).
  Epoch 0 in the log is the starting model on your dev split. At the end R/report.md
  says what calibration chose and the dev F1, miss and false alarms at the new 0.5, and
  compares the starting and final models on a general reference set shipped with
  vadnet, with a warning if the final one got worse there.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = DEFAULTS
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--prepare",
        action="store_true",
        help="decode the Debian sound packages into --cache and exit",
    )
    p.add_argument(
        "--bundle", metavar="CKPT", help="copy a trained checkpoint into the package and exit"
    )
    p.add_argument(
        "--out",
        dest="out_dir",
        default=defaults["out_dir"],
        help="run folder (default %(default)s)",
    )
    p.add_argument(
        "--cache",
        dest="cache_dir",
        default=defaults["cache_dir"],
        help="source cache (default %(default)s)",
    )
    p.add_argument("--speech-dir", help="your speech recordings to mix (sub-folders = speakers)")
    p.add_argument("--noise-dir", help="your backgrounds to mix the speech over")
    p.add_argument("--manifest", help="CSV/JSON of speech segments for a folder of your recordings")
    p.add_argument(
        "--user-share",
        type=float,
        default=defaults["user_share"],
        metavar="FRACTION",
        help="share of the training mixtures drawn from your data; the rest are the bundled"
        " recipe's mixtures of --cache, which keep general accuracy (default %(default)s;"
        " 1: your data alone; without a prepared cache your data alone, with a warning)",
    )
    p.add_argument(
        "--init",
        help="checkpoint to start from: a path, bundled or scratch (default: bundled for your data)",
    )
    for name in (
        "seed",
        "epochs",
        "steps_per_epoch",
        "batch_size",
        "workers",
        "dev_examples",
        "calibration_examples",
    ):
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=defaults[name],
            help="default %(default)s",
        )
    p.add_argument("--lr", type=float, default=defaults["lr"], help="default %(default)s")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--calibration-max-fa",
        dest="calibration_max_false_alarm",
        type=_cap,
        default=defaults["calibration_max_false_alarm"],
        help="calibrate 0.5 to the best-F1 dev threshold with at most this false-alarm rate"
        " on speech-free dev audio; 'none' for F1 alone (default %(default)s)",
    )
    p.add_argument(
        "--hard-negative-fraction",
        type=float,
        default=defaults["hard_negative_fraction"],
        help="also weigh the hardest FRACTION of non-speech frames per batch (default %(default)s: off)",
    )
    p.add_argument(
        "--hard-negative-weight",
        type=float,
        default=defaults["hard_negative_weight"],
        help="weight of that hard-negative loss (default %(default)s)",
    )
    p.add_argument(
        "--far-negative-fraction",
        type=float,
        default=defaults["far_negative_fraction"],
        metavar="FRACTION",
        help="also weigh the hardest FRACTION of the non-speech frames far from any speech"
        " (default %(default)s: off; see docs/model.md)",
    )
    p.add_argument(
        "--far-negative-margin-ms",
        type=float,
        default=defaults["far_negative_margin_ms"],
        metavar="MS",
        help="how far from speech a far negative is (default %(default)s)",
    )
    p.add_argument(
        "--smoothness-weight",
        type=float,
        default=defaults["smoothness_weight"],
        metavar="WEIGHT",
        help="penalise frame-to-frame changes of the output where the label does not change"
        " (default %(default)s: off; see TrainConfig.smoothness_weight)",
    )
    p.add_argument(
        "--rank-weight",
        type=float,
        default=defaults["rank_weight"],
        metavar="WEIGHT",
        help="rank every speech frame above the highest-scored far negatives (a low false-alarm"
        " ROC surrogate; default %(default)s: off; see TrainConfig.rank_weight)",
    )
    p.add_argument(
        "--rank-negative-fraction",
        type=float,
        default=defaults["rank_negative_fraction"],
        metavar="FRACTION",
        help="the share of far negatives --rank-weight ranks speech above (default %(default)s)",
    )
    p.add_argument(
        "--replay-fraction",
        type=float,
        default=defaults["replay_fraction"],
        metavar="FRACTION",
        help="replay this share of each batch from the kept mixtures that the model liked"
        " most far from speech (default %(default)s: off; the bundled model's second stage"
        " uses 0.25, see model/training/replay.py)",
    )
    p.add_argument(
        "--replay-buffer",
        type=int,
        default=defaults["replay_buffer"],
        metavar="MIXTURES",
        help="how many hard mixtures replay keeps (default %(default)s)",
    )
    p.add_argument(
        "--ema-decay",
        type=float,
        default=defaults["ema_decay"],
        metavar="DECAY",
        help="score and keep a moving average of the weights (default %(default)s: off;"
        " 0.995 averages about the last 200 steps, see model/training/averaging.py)",
    )
    p.add_argument(
        "--grow-b",
        dest="grow_b_dilations",
        type=int,
        nargs="+",
        metavar="DILATION",
        default=defaults["grow_b_dilations"],
        help="append B layers of these dilations to --init before training, e.g. 32 for 2 s"
        " of context (the bundled model's second stage grows 32 64 128: 8 s; see"
        " docs/model.md)",
    )
    for name, what, default in SIZE_FLAGS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            metavar="N",
            help=f"{what} for a new network (default {default}); a fine-tune (--init, or your"
            " data on the bundled model) keeps its checkpoint's",
        )
    p.add_argument(
        "--p-melody",
        type=float,
        help="share of generated backgrounds that are synthetic music (default 0; the"
        " bundled model's second stage uses 0.5, see docs/model.md)",
    )
    p.add_argument(
        "--p-music-gate",
        type=float,
        help="share of recorded music backgrounds cut by a rhythmic gate (default 0; the"
        " bundled model's second stage uses 0.3, see docs/model.md)",
    )
    p.add_argument(
        "--music-share",
        type=float,
        metavar="SHARE",
        help="share of recorded backgrounds drawn from music; the rest is split evenly over"
        " the other kinds (ambient, effects) (default 0.5: music is what VADs most often"
        " mistake for speech)",
    )
    p.add_argument(
        "--p-events",
        type=float,
        help="share of recorded effects and ambient backgrounds laid as isolated sound events"
        " with quiet gaps (a bark, a door) instead of one clip tiled end to end (default 0)",
    )
    p.add_argument(
        "--p-no-speech",
        type=float,
        help="share of training mixtures with no speech at all (default 0.5: they teach the"
        " false-alarm side; the dev set keeps 0.3)",
    )
    p.add_argument(
        "--p-synthetic",
        type=float,
        help="share of speech draws from synthetic voices when both kinds are present"
        " (default 0.25: they add languages; real speech decides quality)",
    )
    p.add_argument(
        "--p-telephone",
        type=float,
        help="share of mixtures sent through a telephone channel (default 0.2)",
    )
    p.add_argument(
        "--telephone-orders",
        type=int,
        nargs="+",
        metavar="ORDER",
        help="Butterworth orders the telephone band-pass is drawn from (default 4; higher"
        " is a steeper skirt, as on a real line)",
    )
    _hz_range(p, "--telephone-low-cut-hz", "the telephone band-pass's low edge", "200 400")
    p.add_argument(
        "--p-band-limit",
        type=float,
        help="share of mixtures put through a steep band-pass, as a handset or a small"
        " loudspeaker would (default 0; the bundled recipe: 0.25 in both stages)",
    )
    _hz_range(p, "--band-low-hz", "that band-pass's low edge", "100 450")
    _hz_range(p, "--band-high-hz", "its high edge", "3000 7000")
    p.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="range the speech-to-background ratio of noisy mixtures is drawn from, in dB"
        " (default -5 25; 15 %% of the mixtures with speech are clean regardless)",
    )
    p.add_argument(
        "--buried-snr-db",
        type=float,
        metavar="DB",
        help="leave speech frames whose local SNR is below DB out of the loss (default: off;"
        " see labels.mark_buried and docs/model.md)",
    )
    p.add_argument(
        "--speech-weighting",
        choices=("uniform", "sqrt_hours"),
        help="how speech sources share the draws: uniform (default) or in proportion to the"
        " square root of each source's hours (the bundled model's two stages use sqrt_hours,"
        " see docs/model.md)",
    )
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")


def _hz_range(p: argparse.ArgumentParser, flag: str, what: str, default: str) -> None:
    """A flag taking a (low, high) range in Hz that a filter's edge is drawn from."""
    p.add_argument(
        flag,
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help=f"range of {what} in Hz (default {default})",
    )


def _cap(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected a rate in [0, 1] or 'none', got {text!r}"
        ) from e
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1] or 'none', got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from vadnet.model.training import train

    # Training reports each epoch's dev metrics at INFO: show them unless asked for less.
    log = logging.getLogger("vadnet")
    if log.getEffectiveLevel() > logging.INFO and "VADNET_LOG_LEVEL" not in os.environ:
        log.setLevel(logging.INFO)

    if args.bundle:
        sys.stdout.write(f"bundled {args.bundle} -> {train.bundle(args.bundle)}\n")
        return 0
    if args.prepare:
        from vadnet.model.training.sources import build_cache

        sys.stdout.write(f"source cache ready: {build_cache(args.cache_dir)}\n")
        return 0
    if args.manifest and args.speech_dir:
        raise InvalidInputError("give either --manifest or --speech-dir/--noise-dir, not both")
    cfg = {k: getattr(args, k) for k in _TRAIN_FLAGS}
    cfg["resume"] = not args.no_resume
    sizes = {k: getattr(args, k) for k, _, _ in SIZE_FLAGS if getattr(args, k) is not None}
    if sizes:
        if args.init != "scratch" and (args.init or args.manifest or args.speech_dir):
            flags = ["--" + k.replace("_", "-") for k, _, _ in SIZE_FLAGS]
            raise InvalidInputError(
                f"{', '.join(flags[:-1])} and {flags[-1]} size a new network;"
                " a fine-tune keeps its checkpoint's"
            )
        cfg["model"] = sizes  # ModelConfig checks them
    # MixConfig checks the ranges.
    cfg["mix"] = {k: getattr(args, k) for k in MIX_FLAGS if getattr(args, k) is not None}
    final = train.train(cfg)
    sys.stdout.write(f"{final}\n")
    return 0
