"""Entry point for the synthesis job on a Ray cluster:

    ray job submit --working-dir . -- python -m jobs.synthesize --config configs/demo.yaml

Arguments are those of ``cai-ray synth``. Inside a Ray job, RAY_ADDRESS is set and the job joins
that cluster instead of starting a local one.
"""

import sys

from cai_ray.cli import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
