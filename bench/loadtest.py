"""Load benchmark of the gRPC service: a thin wrapper of ``vadnet loadtest``.

    python bench/loadtest.py --spawn --server-cpus 0 --client-cpus 1 \\
        --chunk-ms 100 --duration-s 20 --ramp 100:50:600

The bundled model's runs are in ``bench/results/loadtest.md``; bench/README.md says more.
"""

from __future__ import annotations

import sys

from vadnet.service.cli import main

if __name__ == "__main__":
    sys.exit(main(["loadtest", *sys.argv[1:]]))
