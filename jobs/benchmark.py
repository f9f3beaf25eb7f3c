"""Ray job entry point: the detector benchmark (synthesise, train, score, report).

    ray job submit --working-dir . -- python jobs/benchmark.py \
        --config configs/benchmark/magnetic_tile.yaml
"""

import sys
from pathlib import Path

# With --working-dir the package is uploaded next to this folder but not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
