"""Entry point for the synthesis job on a Ray cluster:

    ray job submit --working-dir . -- python jobs/synthesize.py --config configs/demo.yaml

Arguments are those of ``cai-ray synth``. Inside a Ray job, RAY_ADDRESS is set and the job joins
that cluster instead of starting a local one.
"""

import sys
from pathlib import Path

# With --working-dir the package is uploaded next to this folder but not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cai_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]]))
