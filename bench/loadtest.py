"""Load benchmark of the gRPC service: a thin wrapper of ``vadnet loadtest``.

    python bench/loadtest.py --spawn --server-cpus 0 --client-cpus 1 \\
        --chunk-ms 100 --duration-s 20 --ramp 100:50:600

See ``docs/service.md`` ("Benchmark") for the table and how it was made.
"""

from __future__ import annotations

import sys

from vadnet.service.cli import main

if __name__ == "__main__":
    sys.exit(main(["loadtest", *sys.argv[1:]]))
