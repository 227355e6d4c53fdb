"""The one ``vadnet`` command. Each subcommand lives in its own ``cmd_*.py`` module
with ``add_arguments(parser)`` and ``run(args) -> int``; modules load lazily so that
``vadnet health`` does not pay for importing torch.

Every error a user can cause is a :class:`VadnetError`; it becomes one readable line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from typing import NoReturn

from vadnet.model.errors import VadnetError

logger = logging.getLogger("vadnet")

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("vadnet.service.cmd_detect", "find speech segments in an audio file"),
    "eval": ("vadnet.service.cmd_eval", "score the model on a labelled manifest"),
    "inspect": ("vadnet.service.cmd_inspect", "plot what filterbank A learned"),
    "export": ("vadnet.service.cmd_export", "export to TorchScript or ONNX"),
    "train": ("vadnet.service.cmd_train", "train or fine-tune the model"),
    "serve": ("vadnet.service.cmd_serve", "run the gRPC streaming server"),
    "stream": ("vadnet.service.cmd_stream", "stream a file to a server and print events"),
    "health": ("vadnet.service.cmd_health", "gRPC health probe of a server"),
    "loadtest": ("vadnet.service.cmd_loadtest", "load-test a server with real-time streams"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {n: v for n, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one stderr line, like every other vadnet error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="vadnet", description="Voice-activity detection.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else os.environ.get("VADNET_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except VadnetError as e:
        sys.stderr.write(f"vadnet {args.command}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vadnet detect x | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
