"""Ray job entry point: the detector benchmark (synthesise, train, score, report).

    ray job submit --working-dir . -- python -m jobs.benchmark \
        --config configs/benchmark/magnetic_tile.yaml
"""

import sys

from cai_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
