"""Regenerate the Python code of ``protos/vadnet/v1/vad.proto`` into ``service/gen``.

Run ``python -m vadnet.service.protogen`` (or ``make protos``) after editing the .proto.
``tests/test_proto_sync.py`` generates into a temporary folder and compares, so the
committed code cannot drift from the .proto.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from vadnet.model.errors import VadnetError

logger = logging.getLogger("vadnet")

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
PROTO = "vadnet/v1/vad.proto"
OUT_DIR = REPO / "service" / "gen"
GENERATED = ("vad_pb2.py", "vad_pb2.pyi", "vad_pb2_grpc.py")


def generate(out_dir: Path = OUT_DIR, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile ``proto_root/vadnet/v1/vad.proto`` into ``out_dir/vadnet/v1``; returns the files."""
    from grpc_tools import protoc  # dev dependency: not needed to serve

    well_known = str(resources.files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_root / PROTO),
    ]
    if protoc.main(argv) != 0:
        raise VadnetError(f"protoc failed on {proto_root / PROTO}")
    pkg = out_dir / "vadnet" / "v1"
    return [pkg / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="output root (default: service/gen)"
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
