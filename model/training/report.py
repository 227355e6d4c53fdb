"""The end of a training run, in words: ``report.md`` in the run folder and the same lines
in the log. What data it used and what it skipped, the dev metrics per epoch from epoch 0
(the starting model, before any step), what calibration did, and the general reference
set before and after (``reference.py``), with a warning when that got worse.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger("vadnet")


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def _num(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def log_skipped(skipped: list[dict]) -> None:
    """The files a run could not use, listed once more where a user looks: at the end."""
    if not skipped:
        return
    logger.warning(
        "%s file(s) were skipped and not used:\n%s",
        len(skipped),
        "\n".join(f"  {s['path']}: {s['reason']}" for s in skipped),
    )


def calibration_lines(cal: dict, before: dict, after: dict) -> list[str]:
    """What calibration did (``train.calibrate``'s dict), and the dev metrics at 0.5
    ``before`` and ``after`` it, for the log and the report."""
    cap = cal["max_false_alarm"]
    among = f" among those with at most {_pct(cap)} false alarms on speech-free dev audio"
    return [
        f"calibration: over {cal['examples']:,} dev mixtures, the threshold with the best F1"
        f"{among if cap else ''} was {cal['dev_f1_threshold_before']:.3f}; it is now 0.5"
        f" (logit shift {cal['logit_shift']:+.2f})",
        f"dev at the new 0.5: F1 {_num(after['f1'])}, miss {_pct(after['miss_rate'])},"
        f" false alarms {_pct(after['false_alarm_rate'])} (on speech-free examples"
        f" {_pct(cal['speech_free_false_alarm'])}); before calibration, at 0.5: F1"
        f" {_num(before['f1'])}, miss {_pct(before['miss_rate'])}, false alarms"
        f" {_pct(before['false_alarm_rate'])}",
    ]


def _epoch_rows(history: list[dict]) -> list[str]:
    rows = [
        "| epoch | train loss | dev loss | AUC | F1 | miss | false alarms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for h in history:
        d = h["dev"]
        name = "0 (start)" if h["epoch"] == 0 else str(h["epoch"])
        rows.append(
            f"| {name} | {_num(h['train_loss'])} | {_num(h['dev_loss'])} | {_num(d['auc'])}"
            f" | {_num(d['f1'])} | {_pct(d['miss_rate'])} | {_pct(d['false_alarm_rate'])} |"
        )
    return rows


def _reference_rows(ref: dict) -> list[str]:
    rows = [
        f"{ref['mixtures']} mixtures ({ref['seconds'] / 60:.1f} min) of the bundled sources'"
        " dev split, each model at its own 0.5:",
        "",
        "| model | AUC | F1 | miss | false alarms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in (("start", ref["start"]), ("final (vadnet.pt)", ref["final"])):
        rows.append(
            f"| {name} | {_num(m['auc'])} | {_num(m['f1'])} | {_pct(m['miss_rate'])}"
            f" | {_pct(m['false_alarm_rate'])} |"
        )
    a, b, se = ref["start"], ref["final"], ref["paired_errors"]

    def change(key: str, scale: float, fmt: str) -> str:
        return f"{scale * (b[key] - a[key]):+{fmt}} ± {2 * scale * se[key]:{fmt}}"

    rows.append(
        f"| change ± 2 paired SE | {change('auc', 1, '.3f')} | | {change('miss_rate', 100, '.1f')}"
        f" | {change('false_alarm_rate', 100, '.1f')} |"
    )
    margins = ref["margins"]
    rows += [
        "",
        f"A warning is given when a change is worse than both its 2 SE and a margin (AUC"
        f" -{margins['auc']}, miss +{100 * margins['miss_rate']:.0f} points, false alarms"
        f" +{100 * margins['false_alarm_rate']:.0f} point); a smaller change may be the luck of"
        " a few mixtures.",
    ]
    return rows


def reference_warning(worse: list[str]) -> str:
    return (
        "the final model is worse than the starting one on the general reference set: "
        + "; ".join(worse)
        + ". It may now miss speech or call noise speech on audio unlike your data: mix in"
        " more of the bundled sources (a lower --user-share), or train fewer epochs or at"
        " a lower --lr"
    )


def finish_report(path: Path, summary: dict) -> None:
    """Write ``report.md`` and log its gist. ``summary``: out, data (lines), dev_examples,
    skipped, history, calibration, dev_before_calibration, dev (after it), reference (or
    None), warnings."""
    lines = [f"# Training run {summary['out']}", "", "## Data", ""]
    lines += [f"- training mixtures: {note}" for note in summary["data"]]
    lines += [f"- dev set: {summary['dev_examples']} mixtures of the dev split", ""]
    skipped = summary["skipped"]
    lines += [f"Skipped files: {len(skipped)}" + (":" if skipped else "."), ""]
    lines += [f"- `{s['path']}`: {s['reason']}" for s in skipped]
    lines += ["", "## Dev set per epoch (epoch 0: the starting model)", ""]
    lines += _epoch_rows(summary["history"])
    lines += ["", "## Calibration", ""]
    calibration = calibration_lines(
        summary["calibration"], summary["dev_before_calibration"], summary["dev"]
    )
    lines += [f"- {line}" for line in calibration]
    lines += ["", "## General reference set", ""]
    ref = summary["reference"]
    lines += _reference_rows(ref) if ref else ["not scored: the reference set is missing"]
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in summary["warnings"]] or ["none"]
    path.write_text("\n".join(lines) + "\n")

    for line in calibration:
        logger.info("%s", line)
    if ref:
        a, b = ref["start"], ref["final"]
        logger.info(
            "general reference set (start -> final): AUC %.3f -> %.3f, F1 %.3f -> %.3f,"
            " miss %.1f%% -> %.1f%%, false alarms %.1f%% -> %.1f%%",
            a["auc"], b["auc"], a["f1"], b["f1"], 100 * a["miss_rate"], 100 * b["miss_rate"],
            100 * a["false_alarm_rate"], 100 * b["false_alarm_rate"],
        )  # fmt: skip
    for w in summary["warnings"]:
        logger.warning("%s", w)
    log_skipped(skipped)
    logger.info("report: %s", path)
